// AVX2+FMA variant of the fused CPU scan kernel (Vectorized<float> = 8 lanes), as ATen builds its
// CPU_CAPABILITY=AVX2 kernels. The target pragma comes before every include, so all code in this
// translation unit, ATen's vector headers included, is compiled for AVX2; the dispatcher calls it only
// when cpuid reports avx2, fma and f16c.
#if defined(__x86_64__) && defined(__GNUC__)
#pragma GCC target("avx2,fma,f16c")
// GCC's target pragma enables the instructions but not the feature macros that -m flags define,
// which ATen's and Sleef's headers test: define them for this translation unit.
#ifndef __AVX__
#define __AVX__ 1
#endif
#ifndef __AVX2__
#define __AVX2__ 1
#endif
#ifndef __FMA__
#define __FMA__ 1
#endif
#ifndef __F16C__
#define __F16C__ 1
#endif
#define CPU_CAPABILITY AVX2
#define CPU_CAPABILITY_AVX2
#define SS_KERNELS kernels_avx2
#define SS_NAME "avx2"
#include "selective_scan_cpu_kernel.h"
#endif
