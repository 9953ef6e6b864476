// Fused CPU selective scan: what the dispatcher (selective_scan_cpu.cpp) and the per-ISA kernel
// translation units (selective_scan_cpu_{default,avx2,avx512}.cpp) share. ISA-neutral on purpose: it
// holds data only, so nothing here is compiled with AVX instructions into the dispatcher.
#pragma once

#include <cstdint>

namespace mmvssm_scan {

// Layout (prepared by mmvssm/ops/cpu_backend.py; all in the compute dtype, contiguous):
//   u, delta, z, out, du, ddelta, dz: (batch, dim, L)
//   A: (dim, N); D, bias: (dim,)
//   B, C: (batch, G, L, N)   <- time-major so that the state index n is the contiguous one
//   ckpt: (batch, dim, nchunks, N): the state entering each chunk of `chunk` steps
//   dB_acc, dC_acc: (batch, G, nblk, L, N): one private accumulator per channel block
template <typename T>
struct Params {
  int64_t batch = 0, dim = 0, L = 0, N = 0, G = 1, dim_g = 0;
  int chunk = 64;
  int64_t nchunks = 0;
  bool softplus = false;
  const T *u = nullptr, *delta = nullptr, *A = nullptr, *B = nullptr, *C = nullptr;
  const T *D = nullptr, *z = nullptr, *bias = nullptr;
  T *out = nullptr, *last = nullptr, *ckpt = nullptr;
  // backward
  int64_t nblk = 1, cb = 1;
  const T *dout = nullptr, *dlast = nullptr;
  T *du = nullptr, *ddelta = nullptr, *dz = nullptr;
  T *dA_part = nullptr, *dD_part = nullptr, *dbias_part = nullptr;
  T *dB_acc = nullptr, *dC_acc = nullptr;
};

// The state vector is held in at most this many SIMD registers' worth of lanes (stack arrays in the
// kernel): N <= kMaxStateVectors * lanes. 64 vectors = N 256 even for 4-lane double vectors.
constexpr int kMaxStateVectors = 64;
constexpr int64_t kMaxState = 256;

// One instruction-set variant of the kernel. The tables are constant-initialised aggregates of
// function pointers (no dynamic initialiser, so loading the library runs no AVX code).
struct Kernels {
  const char* name;
  int float_lanes;  // at::vec::Vectorized<float>::size() in this variant
  void (*fwd_f)(const Params<float>&, int64_t, int64_t);
  void (*fwd_d)(const Params<double>&, int64_t, int64_t);
  void (*bwd_f)(const Params<float>&, int64_t, int64_t);
  void (*bwd_d)(const Params<double>&, int64_t, int64_t);
  // `iters` rounds of the kernel's vectorised float exp over 8 independent vectors (a throughput
  // micro-benchmark: 8 * float_lanes * iters exps); returns a value that depends on every exp.
  float (*exp_loop)(int64_t iters);
};

extern const Kernels kernels_default;
#if defined(__x86_64__) && defined(__GNUC__)
#define MMVSSM_SCAN_X86 1
extern const Kernels kernels_avx2;
extern const Kernels kernels_avx512;
#endif

}  // namespace mmvssm_scan
