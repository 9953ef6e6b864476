// Portable variant of the fused CPU scan kernel: ATen's generic Vectorized (8 float lanes, compiled
// for the build's baseline ISA). Runs on any CPU; x86-64 machines with AVX2 use the AVX2/AVX-512 units.
#define CPU_CAPABILITY DEFAULT
#define SS_KERNELS kernels_default
#define SS_NAME "default"
#include "selective_scan_cpu_kernel.h"
