// Fused CPU selective scan (Mamba S6): forward and backward, float32 and float64. The dispatcher:
// input checks, allocation, threading, choice of the instruction-set variant, and the Python bindings.
//
// Python entry points (see mmvssm/ops/cpu_backend.py, which prepares the layout):
//   fwd(u, delta, A, B, C, D?, z?, delta_bias?, softplus, save_checkpoints) -> [out, last_state, ckpt]
//   bwd(u, delta, A, B, C, D?, z?, delta_bias?, softplus, ckpt, dout, dlast?)
//       -> [du, ddelta, dA, dB, dC, dD?, dz?, ddelta_bias?]
//   isa() / available_isas() / set_isa(name): which instruction-set variant runs.
//   exp_throughput(seconds): exps per thread-CPU-second of the running variant's vectorised exp.
//
// Portability: the kernel (selective_scan_cpu_kernel.h, written with ATen's at::vec::Vectorized) is
// compiled once per instruction set, like ATen's CPU_CAPABILITY kernels: `default` (ATen's generic
// vectors, the build's baseline ISA), `avx2` (AVX2+FMA, 8 float lanes) and `avx512` (16 lanes), each
// in its own translation unit. The best variant the running CPU supports (cpuid) is picked on first
// use, so one build runs on any x86-64 CPU and uses its widest vectors. MMVSSM_CPU_ISA=avx2 (or
// default/avx512/auto) forces a variant, for measurement; an unsupported request is an error, never a
// silent fallback. On other architectures only `default` is built.
// Parallelism: at::parallel_for (torch's intra-op pool, so torch.set_num_threads applies) over
// (batch, channel) rows in the forward and over (batch, group, channel block) tasks in the backward;
// every reduction has a fixed order, so results are bitwise independent of the thread count.

#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <ctime>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include "selective_scan_cpu.h"

namespace {

using mmvssm_scan::Kernels;
using mmvssm_scan::Params;

// ---- ISA variants -----------------------------------------------------------------------------------
std::vector<const Kernels*> supported_variants() {
  std::vector<const Kernels*> v{&mmvssm_scan::kernels_default};
#ifdef MMVSSM_SCAN_X86
  __builtin_cpu_init();
  const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                    __builtin_cpu_supports("f16c");
  if (avx2) v.push_back(&mmvssm_scan::kernels_avx2);
  if (avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
      __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq"))
    v.push_back(&mmvssm_scan::kernels_avx512);
#endif
  return v;
}

std::vector<std::string> available_isas() {
  std::vector<std::string> names;
  for (const Kernels* v : supported_variants()) names.emplace_back(v->name);
  return names;
}

const Kernels* find_variant(const std::string& name, const char* origin) {
  const auto variants = supported_variants();
  if (name == "auto" || name.empty()) return variants.back();
  for (const Kernels* v : variants) {
    if (name == v->name) return v;
  }
  TORCH_CHECK(false, "selective_scan_cpu: ISA variant '", name, "' (", origin,
              ") is not supported on this CPU; available: ", c10::Join(", ", available_isas()),
              " (or 'auto' for the best)");
  return nullptr;
}

const Kernels* g_variant = nullptr;

const Kernels* variant() {
  if (g_variant == nullptr) {
    const char* env = std::getenv("MMVSSM_CPU_ISA");
    g_variant = find_variant(env ? env : "auto", "from MMVSSM_CPU_ISA; unset it or pick another");
  }
  return g_variant;
}

int chunk_length(int64_t N) {
  // Recompute buffers are ~3 * chunk * N elements per thread; keep them within L2.
  if (N <= 64) return 64;
  return static_cast<int>(std::max<int64_t>(8, 4096 / N));
}

void check_tensor(const at::Tensor& t, const char* name, at::ScalarType dtype,
                  std::initializer_list<int64_t> shape) {
  TORCH_CHECK(t.device().is_cpu(), "selective_scan_cpu: `", name, "` must be a CPU tensor");
  TORCH_CHECK(t.scalar_type() == dtype, "selective_scan_cpu: `", name, "` has dtype ",
              t.scalar_type(), ", expected ", dtype);
  TORCH_CHECK(t.sizes().equals(shape), "selective_scan_cpu: `", name, "` has shape ", t.sizes(),
              ", expected ", at::IntArrayRef(shape));
  TORCH_CHECK(t.is_contiguous(), "selective_scan_cpu: `", name, "` must be contiguous");
}

struct Shapes {
  int64_t batch, dim, L, N, G;
  at::ScalarType dtype;
};

Shapes check_inputs(const at::Tensor& u, const at::Tensor& delta, const at::Tensor& A,
                    const at::Tensor& B, const at::Tensor& C, const c10::optional<at::Tensor>& D,
                    const c10::optional<at::Tensor>& z, const c10::optional<at::Tensor>& bias) {
  TORCH_CHECK(u.dim() == 3, "selective_scan_cpu: `u` must be (batch, dim, L)");
  TORCH_CHECK(A.dim() == 2, "selective_scan_cpu: `A` must be (dim, N)");
  TORCH_CHECK(B.dim() == 4, "selective_scan_cpu: `B` must be (batch, groups, L, N)");
  const auto dtype = u.scalar_type();
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kDouble,
              "selective_scan_cpu: the kernel computes in float32 or float64, got ", dtype);
  Shapes s{u.size(0), u.size(1), u.size(2), A.size(1), B.size(1), dtype};
  TORCH_CHECK(s.N <= mmvssm_scan::kMaxState, "selective_scan_cpu: the kernel holds at most ",
              mmvssm_scan::kMaxState, " states per channel, got N = ", s.N,
              "; use backend='chunked' for larger states");
  TORCH_CHECK(s.G > 0 && s.dim % s.G == 0, "selective_scan_cpu: groups must divide dim");
  check_tensor(u, "u", dtype, {s.batch, s.dim, s.L});
  check_tensor(delta, "delta", dtype, {s.batch, s.dim, s.L});
  check_tensor(A, "A", dtype, {s.dim, s.N});
  check_tensor(B, "B", dtype, {s.batch, s.G, s.L, s.N});
  check_tensor(C, "C", dtype, {s.batch, s.G, s.L, s.N});
  if (D) check_tensor(*D, "D", dtype, {s.dim});
  if (z) check_tensor(*z, "z", dtype, {s.batch, s.dim, s.L});
  if (bias) check_tensor(*bias, "delta_bias", dtype, {s.dim});
  return s;
}

template <typename T>
Params<T> make_params(const Shapes& s, const at::Tensor& u, const at::Tensor& delta,
                      const at::Tensor& A, const at::Tensor& B, const at::Tensor& C,
                      const c10::optional<at::Tensor>& D, const c10::optional<at::Tensor>& z,
                      const c10::optional<at::Tensor>& bias, bool softplus) {
  Params<T> p;
  p.batch = s.batch;
  p.dim = s.dim;
  p.L = s.L;
  p.N = s.N;
  p.G = s.G;
  p.dim_g = s.dim / s.G;
  p.chunk = chunk_length(s.N);
  p.nchunks = (s.L + p.chunk - 1) / p.chunk;
  p.softplus = softplus;
  p.u = u.data_ptr<T>();
  p.delta = delta.data_ptr<T>();
  p.A = A.data_ptr<T>();
  p.B = B.data_ptr<T>();
  p.C = C.data_ptr<T>();
  p.D = D ? D->data_ptr<T>() : nullptr;
  p.z = z ? z->data_ptr<T>() : nullptr;
  p.bias = bias ? bias->data_ptr<T>() : nullptr;
  return p;
}

template <typename T>
void run_fwd(const Params<T>& p);
template <>
void run_fwd<float>(const Params<float>& p) {
  auto fn = variant()->fwd_f;
  at::parallel_for(0, p.batch * p.dim, 1, [&](int64_t b, int64_t e) { fn(p, b, e); });
}
template <>
void run_fwd<double>(const Params<double>& p) {
  auto fn = variant()->fwd_d;
  at::parallel_for(0, p.batch * p.dim, 1, [&](int64_t b, int64_t e) { fn(p, b, e); });
}

template <typename T>
void run_bwd(const Params<T>& p);
template <>
void run_bwd<float>(const Params<float>& p) {
  auto fn = variant()->bwd_f;
  at::parallel_for(0, p.batch * p.G * p.nblk, 1, [&](int64_t b, int64_t e) { fn(p, b, e); });
}
template <>
void run_bwd<double>(const Params<double>& p) {
  auto fn = variant()->bwd_d;
  at::parallel_for(0, p.batch * p.G * p.nblk, 1, [&](int64_t b, int64_t e) { fn(p, b, e); });
}

std::vector<at::Tensor> fwd(const at::Tensor& u, const at::Tensor& delta, const at::Tensor& A,
                            const at::Tensor& B, const at::Tensor& C,
                            const c10::optional<at::Tensor>& D, const c10::optional<at::Tensor>& z,
                            const c10::optional<at::Tensor>& bias, bool softplus,
                            bool save_checkpoints) {
  const Shapes s = check_inputs(u, delta, A, B, C, D, z, bias);
  auto out = at::empty({s.batch, s.dim, s.L}, u.options());
  auto last = at::empty({s.batch, s.dim, s.N}, u.options());
  const int ch = chunk_length(s.N);
  const int64_t nchunks = (s.L + ch - 1) / ch;
  auto ckpt = at::empty({save_checkpoints ? s.batch : 0, s.dim, nchunks, s.N}, u.options());
  AT_DISPATCH_FLOATING_TYPES(s.dtype, "selective_scan_cpu_fwd", [&] {
    auto p = make_params<scalar_t>(s, u, delta, A, B, C, D, z, bias, softplus);
    p.out = out.data_ptr<scalar_t>();
    p.last = last.data_ptr<scalar_t>();
    p.ckpt = save_checkpoints ? ckpt.data_ptr<scalar_t>() : nullptr;
    run_fwd<scalar_t>(p);
  });
  return {out, last, ckpt};
}

// The dB/dC per-block partial sums never leave a backward call, so their storage is kept per calling
// thread (grown, never shrunk: 2 * 32 * L * N elements, 16 MiB at L 4096, N 16) instead of allocated
// per call: a fresh multi-MiB allocation is mapped anew and pays a page fault per 4 KiB on first touch,
// measured at ~15 % of the backward at L 4096 (AMD EPYC, 1 thread). Tasks overwrite their block before
// accumulating, so stale contents never matter.
at::Tensor block_accumulators(int64_t numel, const at::TensorOptions& opts) {
  thread_local at::Tensor cache;
  if (!cache.defined() || cache.scalar_type() != opts.dtype().toScalarType() || cache.numel() < numel)
    cache = at::empty({numel}, opts);
  return cache.narrow(0, 0, numel);
}

template <typename T>
void sum_blocks(const T* acc, T* dst, int64_t BG, int64_t nblk, int64_t LN) {
  // dst[bg, j] = sum_k acc[bg, k, j], in the fixed order k = 0, 1, ... Tiles of j so that the partial
  // sums stay in L1 while the nblk source rows stream through contiguously (one strided load per
  // element and block would touch nblk pages per element).
  constexpr int64_t kTile = 2048;
  const int64_t ntiles = (LN + kTile - 1) / kTile;
  at::parallel_for(0, BG * ntiles, 1, [&](int64_t begin, int64_t end) {
    for (int64_t idx = begin; idx < end; ++idx) {
      const int64_t bg = idx / ntiles, j0 = (idx % ntiles) * kTile;
      const int64_t n = std::min(kTile, LN - j0);
      const T* src = acc + bg * nblk * LN + j0;
      T* out = dst + bg * LN + j0;
      for (int64_t j = 0; j < n; ++j) out[j] = src[j];
      for (int64_t k = 1; k < nblk; ++k) {
        const T* row = src + k * LN;
        for (int64_t j = 0; j < n; ++j) out[j] += row[j];
      }
    }
  });
}

template <typename T>
void sum_batch(const T* part, T* dst, int64_t batch, int64_t count) {
  for (int64_t j = 0; j < count; ++j) {
    T s = T(0);
    for (int64_t b = 0; b < batch; ++b) s += part[b * count + j];
    dst[j] = s;
  }
}

std::vector<at::Tensor> bwd(const at::Tensor& u, const at::Tensor& delta, const at::Tensor& A,
                            const at::Tensor& B, const at::Tensor& C,
                            const c10::optional<at::Tensor>& D, const c10::optional<at::Tensor>& z,
                            const c10::optional<at::Tensor>& bias, bool softplus,
                            const at::Tensor& ckpt, const at::Tensor& dout,
                            const c10::optional<at::Tensor>& dlast) {
  const Shapes s = check_inputs(u, delta, A, B, C, D, z, bias);
  const int ch = chunk_length(s.N);
  const int64_t nchunks = (s.L + ch - 1) / ch;
  check_tensor(ckpt, "checkpoints", s.dtype, {s.batch, s.dim, nchunks, s.N});
  check_tensor(dout, "dout", s.dtype, {s.batch, s.dim, s.L});
  if (dlast) check_tensor(*dlast, "dlast_state", s.dtype, {s.batch, s.dim, s.N});
  const int64_t dim_g = s.dim / s.G;
  // Channel blocks per (batch, group): fixed by the shapes (never by the thread count) so that the
  // dB/dC reduction order, and hence the result, is the same for any number of threads. About 32
  // tasks in total keeps up to ~16 threads busy; each block costs one (L, N) accumulator for dB and dC.
  const int64_t want = std::max<int64_t>(1, (32 + s.batch * s.G - 1) / std::max<int64_t>(1, s.batch * s.G));
  const int64_t nblk_req = std::min<int64_t>(std::max<int64_t>(dim_g, 1), want);
  const int64_t cb = std::max<int64_t>(1, (dim_g + nblk_req - 1) / nblk_req);
  const int64_t nblk = std::max<int64_t>(1, (dim_g + cb - 1) / cb);

  auto opts = u.options();
  auto du = at::empty_like(u);
  auto ddelta = at::empty_like(delta);
  auto dz = z ? at::empty_like(*z) : at::Tensor();
  auto dA_part = at::empty({s.batch, s.dim, s.N}, opts);
  auto dD_part = at::empty({s.batch, s.dim}, opts);
  auto dbias_part = at::empty({s.batch, s.dim}, opts);
  const int64_t acc_numel = s.batch * s.G * nblk * s.L * s.N;
  auto accumulators = block_accumulators(2 * acc_numel, opts);
  auto dB_acc = accumulators.narrow(0, 0, acc_numel);
  auto dC_acc = accumulators.narrow(0, acc_numel, acc_numel);
  auto dA = at::empty({s.dim, s.N}, opts);
  auto dB = at::empty({s.batch, s.G, s.L, s.N}, opts);
  auto dC = at::empty({s.batch, s.G, s.L, s.N}, opts);
  auto dD = at::empty({s.dim}, opts);
  auto dbias = at::empty({s.dim}, opts);
  AT_DISPATCH_FLOATING_TYPES(s.dtype, "selective_scan_cpu_bwd", [&] {
    auto p = make_params<scalar_t>(s, u, delta, A, B, C, D, z, bias, softplus);
    p.ckpt = ckpt.data_ptr<scalar_t>();
    p.nblk = nblk;
    p.cb = cb;
    p.dout = dout.data_ptr<scalar_t>();
    p.dlast = dlast ? dlast->data_ptr<scalar_t>() : nullptr;
    p.du = du.data_ptr<scalar_t>();
    p.ddelta = ddelta.data_ptr<scalar_t>();
    p.dz = z ? dz.data_ptr<scalar_t>() : nullptr;
    p.dA_part = dA_part.data_ptr<scalar_t>();
    p.dD_part = dD_part.data_ptr<scalar_t>();
    p.dbias_part = dbias_part.data_ptr<scalar_t>();
    p.dB_acc = dB_acc.data_ptr<scalar_t>();
    p.dC_acc = dC_acc.data_ptr<scalar_t>();
    if (s.dim > 0 && s.batch > 0) run_bwd<scalar_t>(p);
    else {
      dA_part.zero_();
      dD_part.zero_();
      dbias_part.zero_();
      dB_acc.zero_();
      dC_acc.zero_();
    }
    sum_blocks<scalar_t>(p.dB_acc, dB.data_ptr<scalar_t>(), s.batch * s.G, nblk, s.L * s.N);
    sum_blocks<scalar_t>(p.dC_acc, dC.data_ptr<scalar_t>(), s.batch * s.G, nblk, s.L * s.N);
    sum_batch<scalar_t>(p.dA_part, dA.data_ptr<scalar_t>(), s.batch, s.dim * s.N);
    sum_batch<scalar_t>(p.dD_part, dD.data_ptr<scalar_t>(), s.batch, s.dim);
    sum_batch<scalar_t>(p.dbias_part, dbias.data_ptr<scalar_t>(), s.batch, s.dim);
  });
  return {du, ddelta, dA, dB, dC, D ? dD : at::Tensor(), z ? dz : at::Tensor(),
          bias ? dbias : at::Tensor()};
}

std::string isa() { return variant()->name; }

std::string set_isa(const std::string& name) {
  const std::string previous = isa();
  g_variant = find_variant(name, "passed to set_isa");
  return previous;
}

double thread_seconds() {
  // CPU time of the calling thread: on a shared machine the wall clock would count other tenants.
#ifdef CLOCK_THREAD_CPUTIME_ID
  timespec ts;
  if (clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts) == 0) return ts.tv_sec + 1e-9 * ts.tv_nsec;
#endif
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

double exp_throughput(double seconds) {
  // Single-thread throughput (exps per second of thread CPU time) of the running variant's vectorised
  // exp: the kernel's own function, in registers, 8 independent chains. A scan of N states does one
  // exp per state and step, so this bounds its speed per thread.
  const Kernels* k = variant();
  const int64_t per_iter = 8 * static_cast<int64_t>(k->float_lanes);
  float check = k->exp_loop(1000);  // warm-up (and frequency ramp)
  int64_t iters = 1000;
  for (;;) {
    const double start = thread_seconds();
    check += k->exp_loop(iters);  // consumed below, so no exp can be optimised away
    const double dt = thread_seconds() - start;
    TORCH_CHECK(std::isfinite(check), "selective_scan_cpu: the exp micro-benchmark diverged");
    if (dt >= seconds || iters > (int64_t(1) << 40)) return static_cast<double>(iters * per_iter) / dt;
    iters *= dt > 0 ? std::max<int64_t>(2, static_cast<int64_t>(seconds / dt * 1.2)) : 10;
  }
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "Fused CPU selective scan (Mamba S6) forward/backward kernels for mmvssm";
  m.def("fwd", &fwd, "selective scan forward", py::arg("u"), py::arg("delta"), py::arg("A"),
        py::arg("B"), py::arg("C"), py::arg("D"), py::arg("z"), py::arg("delta_bias"),
        py::arg("delta_softplus"), py::arg("save_checkpoints"));
  m.def("bwd", &bwd, "selective scan backward", py::arg("u"), py::arg("delta"), py::arg("A"),
        py::arg("B"), py::arg("C"), py::arg("D"), py::arg("z"), py::arg("delta_bias"),
        py::arg("delta_softplus"), py::arg("checkpoints"), py::arg("dout"), py::arg("dlast_state"));
  m.def("isa", &isa, "name of the instruction-set variant in use");
  m.def("available_isas", &available_isas, "variants the running CPU supports, best last");
  m.def("set_isa", &set_isa, "select a variant by name ('auto' = best); returns the previous one");
  m.def("exp_throughput", &exp_throughput,
        "exps per thread-CPU-second of the running variant's vectorised exp (one thread)",
        py::arg("seconds") = 0.2);
}
