// AVX-512 variant of the fused CPU scan kernel (Vectorized<float> = 16 lanes: one register holds the
// 16 states of a Mamba channel), as ATen builds its CPU_CAPABILITY=AVX512 kernels (F, BW, VL, DQ).
// The target pragma comes before every include, see selective_scan_cpu_avx2.cpp.
#if defined(__x86_64__) && defined(__GNUC__)
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")
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
#ifndef __AVX512F__
#define __AVX512F__ 1
#endif
#ifndef __AVX512BW__
#define __AVX512BW__ 1
#endif
#ifndef __AVX512VL__
#define __AVX512VL__ 1
#endif
#ifndef __AVX512DQ__
#define __AVX512DQ__ 1
#endif
#define CPU_CAPABILITY AVX512
#define CPU_CAPABILITY_AVX512
#define SS_KERNELS kernels_avx512
#define SS_NAME "avx512"
#include "selective_scan_cpu_kernel.h"
#endif
