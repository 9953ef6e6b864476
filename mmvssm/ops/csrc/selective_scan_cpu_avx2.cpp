// AVX2+FMA variant of the fused CPU scan kernel (Vectorized<float> = 8 lanes), as ATen builds its
// CPU_CAPABILITY=AVX2 kernels. The target pragma comes before every include, so all code in this
// translation unit, ATen's vector headers included, is compiled for AVX2; the dispatcher calls it only
// when cpuid reports avx2, fma and f16c.
#if defined(__x86_64__) && defined(__GNUC__)
#pragma GCC target("avx2,fma,f16c")
#define CPU_CAPABILITY AVX2
#define CPU_CAPABILITY_AVX2
#define SS_KERNELS kernels_avx2
#define SS_NAME "avx2"
#include "selective_scan_cpu_kernel.h"
#endif
