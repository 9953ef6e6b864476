// Fused CPU selective scan (Mamba S6): forward and backward, float32 and float64.
//
// Python entry points (see mmvssm/ops/cpu_backend.py, which prepares the layout):
//   fwd(u, delta, A, B, C, D?, z?, delta_bias?, softplus, save_checkpoints) -> [out, last_state, ckpt]
//   bwd(u, delta, A, B, C, D?, z?, delta_bias?, softplus, ckpt, dout, dlast?)
//       -> [du, ddelta, dA, dB, dC, dD?, dz?, ddelta_bias?]
//   isa() / available_isas() / set_isa(name): which instruction-set variant runs (for tests/benchmarks).
//
// Portability: the kernel source (selective_scan_cpu_impl.h) is compiled three times, for the x86-64
// baseline, for AVX2+FMA and for AVX-512 (via #pragma GCC target), and the best variant the running CPU
// supports is picked once at load time (__builtin_cpu_supports). The extension itself is built without
// -march flags, so it runs on any x86-64 CPU; on other architectures only the baseline variant is built.
// Parallelism: at::parallel_for (torch's intra-op pool, so torch.set_num_threads applies) over
// (batch, channel) rows in the forward and over (batch, group, channel block) tasks in the backward;
// every reduction has a fixed order, so results are bitwise independent of the thread count.

#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

namespace {

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

}  // namespace

// ---- ISA variants -----------------------------------------------------------------------------------
#define SS_NS ss_base
#include "selective_scan_cpu_impl.h"
#undef SS_NS

#if defined(__x86_64__) && defined(__GNUC__)
#define SS_HAVE_X86_VARIANTS 1
#pragma GCC push_options
#pragma GCC target("avx2,fma")
#define SS_NS ss_avx2
#include "selective_scan_cpu_impl.h"
#undef SS_NS
#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target("avx512f,avx512vl,avx512bw,avx512dq,avx2,fma,prefer-vector-width=512")
#define SS_NS ss_avx512
#include "selective_scan_cpu_impl.h"
#undef SS_NS
#pragma GCC pop_options
#endif

namespace {

struct Variant {
  const char* name;
  void (*fwd_f)(const Params<float>&, int64_t, int64_t);
  void (*fwd_d)(const Params<double>&, int64_t, int64_t);
  void (*bwd_f)(const Params<float>&, int64_t, int64_t);
  void (*bwd_d)(const Params<double>&, int64_t, int64_t);
};

const Variant kBase{"baseline", ss_base::fwd_float, ss_base::fwd_double, ss_base::bwd_float,
                    ss_base::bwd_double};
#ifdef SS_HAVE_X86_VARIANTS
const Variant kAvx2{"avx2", ss_avx2::fwd_float, ss_avx2::fwd_double, ss_avx2::bwd_float,
                    ss_avx2::bwd_double};
const Variant kAvx512{"avx512", ss_avx512::fwd_float, ss_avx512::fwd_double, ss_avx512::bwd_float,
                      ss_avx512::bwd_double};
#endif

std::vector<const Variant*> supported_variants() {
  std::vector<const Variant*> v{&kBase};
#ifdef SS_HAVE_X86_VARIANTS
  __builtin_cpu_init();
  const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  if (avx2) v.push_back(&kAvx2);
  if (avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
      __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq"))
    v.push_back(&kAvx512);
#endif
  return v;
}

const Variant* g_variant = nullptr;

const Variant* variant() {
  if (g_variant == nullptr) g_variant = supported_variants().back();
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

template <typename T>
void sum_blocks(const T* acc, T* dst, int64_t BG, int64_t nblk, int64_t LN) {
  // dst[bg, j] = sum_k acc[bg, k, j], in the fixed order k = 0, 1, ...
  at::parallel_for(0, BG * LN, 4096, [&](int64_t begin, int64_t end) {
    for (int64_t idx = begin; idx < end; ++idx) {
      const int64_t bg = idx / LN, j = idx % LN;
      const T* src = acc + bg * nblk * LN + j;
      T s = T(0);
      for (int64_t k = 0; k < nblk; ++k) s += src[k * LN];
      dst[idx] = s;
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
  auto dB_acc = at::empty({s.batch, s.G, nblk, s.L, s.N}, opts);
  auto dC_acc = at::empty({s.batch, s.G, nblk, s.L, s.N}, opts);
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

std::vector<std::string> available_isas() {
  std::vector<std::string> names;
  for (const Variant* v : supported_variants()) names.emplace_back(v->name);
  return names;
}

std::string set_isa(const std::string& name) {
  const std::string previous = isa();
  for (const Variant* v : supported_variants()) {
    if (name == v->name || (name == "auto" && v == supported_variants().back())) {
      g_variant = v;
      return previous;
    }
  }
  TORCH_CHECK(false, "selective_scan_cpu: ISA variant '", name, "' is not supported on this CPU; "
              "available: ", c10::Join(", ", available_isas()), " (or 'auto')");
  return previous;
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
}
