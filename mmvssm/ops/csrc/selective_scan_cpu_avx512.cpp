// AVX-512 variant of the fused CPU scan kernel (Vectorized<float> = 16 lanes: one register holds the
// 16 states of a Mamba channel), as ATen builds its CPU_CAPABILITY=AVX512 kernels (F, BW, VL, DQ).
// The target pragma comes before every include, see selective_scan_cpu_avx2.cpp.
#if defined(__x86_64__) && defined(__GNUC__)
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")
#define CPU_CAPABILITY AVX512
#define CPU_CAPABILITY_AVX512
#define SS_KERNELS kernels_avx512
#define SS_NAME "avx512"
#include "selective_scan_cpu_kernel.h"
#endif
