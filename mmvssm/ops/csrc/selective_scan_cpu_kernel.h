// Fused CPU selective scan: the forward/backward kernels, written with ATen's at::vec::Vectorized.
//
// Included once by each per-ISA translation unit (selective_scan_cpu_{default,avx2,avx512}.cpp), which
// first defines CPU_CAPABILITY / CPU_CAPABILITY_<ISA> (so Vectorized<float> is 8 or 16 lanes and lives
// in at::vec::<ISA>, like ATen's own kernels), switches the compiler's target ISA with
// `#pragma GCC target`, and names the table to define (SS_KERNELS, SS_NAME). Everything but that table
// has internal linkage, and no std:: container or out-of-line library template is instantiated here,
// so no AVX code can leak into a symbol that another variant (or the dispatcher) shares.
//
// Algorithm per (batch, channel) row. Time is cut into chunks of `chunk` steps. Per chunk, the
// per-step scalars dt = softplus(delta + bias) and dt * u are computed vectorised over time; then the
// recurrence h_t = exp(dt_t A) * h_{t-1} + dt_t u_t B_t, y_t = <C_t, h_t> runs with the N states in
// SIMD registers (N = 16: one AVX-512 vector, two AVX2 vectors) and the exp vectorised over the states,
// inline, so the state never leaves the registers. N = 1 has no state vector: there the exps are
// vectorised over time and only the scalar recurrence remains. The forward pass stores the state
// entering each chunk; the backward pass walks the chunks right to left, recomputes the chunk's states
// and decays from its checkpoint, and runs the adjoint recurrence dh_t = dy_t C_t + a_{t+1} dh_{t+1}.
// Accumulation is in the input dtype (float32 or float64); every exp argument is <= 0 for A <= 0 and
// delta >= 0 (softplus is evaluated as max(x, 0) + log1p(exp(-|x|)), the sigmoid from exp(-|x|)).

// GCC's `#pragma GCC target` (set by the including file) enables the instructions but not the feature
// macros that -m flags define and that ATen's and Sleef's headers test: define them here.
#if defined(CPU_CAPABILITY_AVX2) || defined(CPU_CAPABILITY_AVX512)
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
#endif
#if defined(CPU_CAPABILITY_AVX512)
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
#endif

#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>

#include <cstdlib>
#include <new>

#include "selective_scan_cpu.h"

namespace mmvssm_scan {
namespace {

template <typename T>
using Vec = at::vec::Vectorized<T>;

inline int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

template <typename T>
inline void zero(T* ptr, int64_t n) {
  for (int64_t i = 0; i < n; ++i) ptr[i] = T(0);
}

// A scratch buffer: aligned_alloc/free rather than std::vector, see the note at the top.
template <typename T>
struct Scratch {
  T* ptr;
  explicit Scratch(int64_t n) {
    const size_t bytes = ((static_cast<size_t>(n) * sizeof(T) + 63) / 64 + 1) * 64;
    ptr = static_cast<T*>(std::aligned_alloc(64, bytes));
    if (ptr == nullptr) throw std::bad_alloc();  // at::parallel_for rethrows it to the caller
  }
  ~Scratch() { std::free(ptr); }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
};

// ---------------------------------------------------------------------------------------------------
// Elementary functions
// ---------------------------------------------------------------------------------------------------
// float exp, inline (Sleef's Vectorized::exp is an out-of-line call, which would spill the state
// registers at every step): exp(x) = 2^k exp(r), k = round(x / ln2), r = x - k ln2 (Cody-Waite split),
// exp(r) by the Cephes expf minimax polynomial (about 1 ulp, as libm). Arguments are clamped to
// [-87.34, 88.37], where 2^k stays a normal float: below, the result is ~1.2e-38 instead of a
// subnormal or 0; above (never reached by a decay, whose argument is <= 0) it saturates at ~2.4e38.
// NaN propagates.
inline Vec<float> vexp(const Vec<float>& x_in) {
  using V = Vec<float>;
  const V x = at::vec::clamp(x_in, V(-87.3365447505f), V(88.37f));
  const V k = (x * V(1.44269504088896341f)).round();
  V r = at::vec::fmadd(k, V(-0.693359375f), x);
  r = at::vec::fmadd(k, V(2.12194440e-4f), r);
  V p = at::vec::fmadd(V(1.9875691500e-4f), r, V(1.3981999507e-3f));
  p = at::vec::fmadd(p, r, V(8.3334519073e-3f));
  p = at::vec::fmadd(p, r, V(4.1665795894e-2f));
  p = at::vec::fmadd(p, r, V(1.6666665459e-1f));
  p = at::vec::fmadd(p, r, V(5.0000001201e-1f));
  // (p r^2 + r) + 1, not p r^2 + (r + 1): rounding r + 1 first would drop r^2 / 2 for small r, a
  // bias that compounds over L steps of a decay close to 1.
  p = at::vec::fmadd(p, r * r, r) + V(1.0f);
  const auto ki = at::vec::convert_to_int_of_same_size(k);
  const auto bits = (ki + Vec<int32_t>(127)) << Vec<int32_t>(23);
  return p * at::vec::cast<float>(bits);
}

// float64 (gradcheck and tests; speed is secondary): Sleef's 1-ulp exp (std::exp in the default build).
inline Vec<double> vexp(const Vec<double>& x) { return x.exp(); }

// log1p(e) for e in [0, 1], inline (Sleef's AVX-512 log1pf, an out-of-line call, made softplus cost
// 3x what it costs with AVX2 on a Zen 4 EPYC). log(m) = 2 atanh(s), s = (m - 1) / (m + 1), with
// m = 1 + e halved above sqrt(2), so |s| <= 0.1716 and the series to s^9 is below 1e-9 relative; the
// final e / (m0 - 1) factor (Goldberg's trick) corrects the rounding of 1 + e, so tiny e stays accurate.
inline Vec<float> vlog1p_unit(const Vec<float>& e) {
  using V = Vec<float>;
  const V one(1.0f), m0 = one + e;
  const V big = m0 > V(1.41421356f);
  const V m = V::blendv(m0, m0 * V(0.5f), big);
  const V s = (m - one) / (m + one), s2 = s * s;
  V q = at::vec::fmadd(V(1.0f / 9.0f), s2, V(1.0f / 7.0f));
  q = at::vec::fmadd(q, s2, V(1.0f / 5.0f));
  q = at::vec::fmadd(q, s2, V(1.0f / 3.0f));
  q = at::vec::fmadd(q, s2, one);
  const V lg = at::vec::fmadd(V(2.0f) * s, q, V::blendv(V(0.0f), V(0.693147180559945309f), big));
  const V den = m0 - one;
  return V::blendv(lg * (e / den), e, den == V(0.0f));
}

inline Vec<double> vlog1p_unit(const Vec<double>& e) { return e.log1p(); }

template <typename T>
inline Vec<T> vsigmoid(const Vec<T>& x) {
  const Vec<T> e = vexp(Vec<T>(T(0)) - x.abs());
  const Vec<T> inv = Vec<T>(T(1)) / (Vec<T>(T(1)) + e);
  return Vec<T>::blendv(e * inv, inv, x >= Vec<T>(T(0)));
}

// softplus with torch's threshold (x > 20 -> x), stable for any x.
template <typename T>
inline Vec<T> vsoftplus(const Vec<T>& x) {
  const Vec<T> e = vexp(Vec<T>(T(0)) - x.abs());
  const Vec<T> sp = at::vec::maximum(x, Vec<T>(T(0))) + vlog1p_unit(e);
  return Vec<T>::blendv(sp, x, x > Vec<T>(T(20)));
}

template <typename T>
inline T hsum(const Vec<T>& v) {
  return at::vec::vec_reduce_all<T>([](const Vec<T>& a, const Vec<T>& b) { return a + b; }, v);
}

// Applies f(offset, count) over [0, len) in vector-sized pieces, the last one partial.
template <typename T, typename F>
inline void over_time(int len, F&& f) {
  constexpr int W = Vec<T>::size();
  for (int i = 0; i < len; i += W) f(i, len - i < W ? len - i : W);
}

// out[i] = sum of the lanes of the vector stored at acc + i * W, for i < len. A horizontal sum per
// step would cost log2(W) shuffle+add pairs on the step's critical resources; instead the per-step
// vectors are stored and W of them are reduced at once by a deinterleave2+add tree (the transposed
// sum: W - 1 pairs for W steps). acc must hold a multiple of W rows (rows past len are ignored).
template <typename T>
inline void lane_sums(const T* acc, int len, T* out) {
  constexpr int W = Vec<T>::size();
  over_time<T>(len, [&](int i, int n) {
    Vec<T> v[W];
    for (int j = 0; j < W; ++j) v[j] = Vec<T>::loadu(acc + (i + j) * W);
    for (int m = W; m > 1; m /= 2) {
      for (int j = 0; j < m / 2; ++j) {
        const auto eo = at::vec::deinterleave2(v[2 * j], v[2 * j + 1]);
        v[j] = eo.first + eo.second;
      }
    }
    v[0].store(out + i, n);
  });
}

// Rows of per-step vectors for lane_sums: CH rounded up to whole vectors of rows, zeroed once.
template <typename T>
inline int64_t lane_rows(int CH) {
  constexpr int W = Vec<T>::size();
  return static_cast<int64_t>((CH + W - 1) / W) * W * W;
}

// ---------------------------------------------------------------------------------------------------
// Per-chunk scalars, vectorised over time
// ---------------------------------------------------------------------------------------------------
// dt = softplus(delta + bias) (or delta + bias), dtu = dt * u, and when dsp is given the softplus
// derivative sigmoid(delta + bias).
template <typename T>
inline void chunk_dt(bool softplus, const T* delta, const T* u, T bias, int len, T* dt, T* dtu,
                     T* dsp) {
  over_time<T>(len, [&](int i, int n) {
    const Vec<T> x = Vec<T>::loadu(delta + i, n) + Vec<T>(bias);
    const Vec<T> d = softplus ? vsoftplus(x) : x;
    d.store(dt + i, n);
    (d * Vec<T>::loadu(u + i, n)).store(dtu + i, n);
    if (dsp != nullptr) vsigmoid(x).store(dsp + i, n);
  });
}

// out = (y + D u) * silu(z), or y + D u without z.
template <typename T>
inline void chunk_out(const T* y, const T* u, const T* z, T Dd, int len, T* out) {
  over_time<T>(len, [&](int i, int n) {
    Vec<T> o = at::vec::fmadd(Vec<T>(Dd), Vec<T>::loadu(u + i, n), Vec<T>::loadu(y + i, n));
    if (z != nullptr) {
      const Vec<T> zv = Vec<T>::loadu(z + i, n);
      o = o * zv * vsigmoid(zv);
    }
    o.store(out + i, n);
  });
}

// Channel d's pointers and scalars, shared by forward and backward.
template <typename T>
struct Row {
  const T *u, *delta, *z, *Ad, *Bg, *Cg;
  T Dd, bias;
  Row(const Params<T>& p, int64_t b, int64_t d) {
    const int64_t row = b * p.dim + d, g = d / p.dim_g;
    u = p.u + row * p.L;
    delta = p.delta + row * p.L;
    z = p.z ? p.z + row * p.L : nullptr;
    Ad = p.A + d * p.N;
    Bg = p.B + (b * p.G + g) * p.L * p.N;
    Cg = p.C + (b * p.G + g) * p.L * p.N;
    Dd = p.D ? p.D[d] : T(0);
    bias = p.bias ? p.bias[d] : T(0);
  }
};

// How the N states map onto vectors: NV > 0 is a compile-time vector count (the arrays are then
// fully unrolled into registers), NV == 0 a run-time one. FULL: N is a multiple of the lane count, so
// no load needs a mask.
template <typename T, int NV, bool FULL>
struct States {
  static constexpr int W = Vec<T>::size();
  int nv_rt, tail;
  explicit States(int64_t N)
      : nv_rt(static_cast<int>((N + W - 1) / W)), tail(static_cast<int>(N - (nv_rt - 1) * W)) {}
  int nv() const { return NV > 0 ? NV : nv_rt; }
  bool partial(int v) const { return !FULL && v == nv() - 1 && tail < W; }
  Vec<T> load(const T* p, int v) const {
    return partial(v) ? Vec<T>::loadu(p + v * W, tail) : Vec<T>::loadu(p + v * W);
  }
  void store(const Vec<T>& x, T* p, int v) const {
    if (partial(v)) x.store(p + v * W, tail);
    else x.store(p + v * W);
  }
};

// ---------------------------------------------------------------------------------------------------
// Forward, rows [row_begin, row_end) of the flattened (batch, dim)
// ---------------------------------------------------------------------------------------------------
template <typename T, int NV, bool FULL>
void fwd_rows(const Params<T>& p, int64_t row_begin, int64_t row_end) {
  const States<T, NV, FULL> st(p.N);
  const int nv = st.nv();
  const int64_t N = p.N;
  const int CH = p.chunk;
  Scratch<T> work(3 * CH + lane_rows<T>(CH));
  T* dt = work.ptr;
  T* dtu = dt + CH;
  T* y = dtu + CH;
  T* accs = y + CH;  // per-step <C_t, h_t> partial sums, one vector per step
  zero(accs, lane_rows<T>(CH));
  Vec<T> A[NV > 0 ? NV : kMaxStateVectors], h[NV > 0 ? NV : kMaxStateVectors];
  for (int64_t row = row_begin; row < row_end; ++row) {
    const Row<T> r(p, row / p.dim, row % p.dim);
    for (int v = 0; v < nv; ++v) {
      A[v] = st.load(r.Ad, v);
      h[v] = Vec<T>(T(0));
    }
    for (int64_t c = 0; c < p.nchunks; ++c) {
      const int64_t t0 = c * CH;
      const int len = static_cast<int>(min64(CH, p.L - t0));
      if (p.ckpt) {
        T* ck = p.ckpt + (row * p.nchunks + c) * N;
        for (int v = 0; v < nv; ++v) st.store(h[v], ck, v);
      }
      chunk_dt(p.softplus, r.delta + t0, r.u + t0, r.bias, len, dt, dtu, static_cast<T*>(nullptr));
      const T* Bt = r.Bg + t0 * N;
      const T* Ct = r.Cg + t0 * N;
      for (int i = 0; i < len; ++i, Bt += N, Ct += N) {
        const Vec<T> dtv(dt[i]), dtuv(dtu[i]);
        Vec<T> acc(T(0));
        for (int v = 0; v < nv; ++v) {
          h[v] = at::vec::fmadd(vexp(dtv * A[v]), h[v], dtuv * st.load(Bt, v));
          acc = at::vec::fmadd(st.load(Ct, v), h[v], acc);
        }
        acc.store(accs + i * Vec<T>::size());
      }
      lane_sums(accs, len, y);
      chunk_out(y, r.u + t0, r.z ? r.z + t0 : nullptr, r.Dd, len, p.out + row * p.L + t0);
    }
    if (p.last) {
      for (int v = 0; v < nv; ++v) st.store(h[v], p.last + row * N, v);
    }
  }
}

// N = 1: no state vector, so the exps are vectorised over time and the recurrence is scalar.
template <typename T>
void fwd_rows_n1(const Params<T>& p, int64_t row_begin, int64_t row_end) {
  const int CH = p.chunk;
  Scratch<T> work(3 * CH);
  T* dt = work.ptr;
  T* dtu = dt + CH;
  T* y = dtu + CH;
  for (int64_t row = row_begin; row < row_end; ++row) {
    const Row<T> r(p, row / p.dim, row % p.dim);
    T h = T(0);
    for (int64_t c = 0; c < p.nchunks; ++c) {
      const int64_t t0 = c * CH;
      const int len = static_cast<int>(min64(CH, p.L - t0));
      if (p.ckpt) p.ckpt[row * p.nchunks + c] = h;
      chunk_dt(p.softplus, r.delta + t0, r.u + t0, r.bias, len, dt, dtu, static_cast<T*>(nullptr));
      over_time<T>(len, [&](int i, int n) {  // dt <- a = exp(dt A)
        vexp(Vec<T>::loadu(dt + i, n) * Vec<T>(r.Ad[0])).store(dt + i, n);
      });
      const T* B = r.Bg + t0;
      const T* C = r.Cg + t0;
      for (int i = 0; i < len; ++i) {
        h = dt[i] * h + dtu[i] * B[i];
        y[i] = C[i] * h;
      }
      chunk_out(y, r.u + t0, r.z ? r.z + t0 : nullptr, r.Dd, len, p.out + row * p.L + t0);
    }
    if (p.last) p.last[row] = h;
  }
}

// ---------------------------------------------------------------------------------------------------
// Backward: tasks [task_begin, task_end) over (batch, group, channel block). A task processes the
// channels of its block one after the other and accumulates dB/dC into its private (L, N) slices, so
// the result does not depend on the number of threads.
// ---------------------------------------------------------------------------------------------------
// Per-channel backward scratch (shared by the N > 1 and N = 1 paths).
template <typename T>
struct BwdChunk {
  T *dt, *dtu, *dsp, *zs, *zg, *ypre, *dy, *s1, *s2;
  void bind(T* base, int CH) {
    T** arrays[] = {&dt, &dtu, &dsp, &zs, &zg, &ypre, &dy, &s1, &s2};
    for (int k = 0; k < kArrays; ++k) *arrays[k] = base + k * CH;
  }
  static constexpr int kArrays = 9;
  // silu'(z) pieces for the gate: out = y * silu(z) -> dy = dout * silu(z), dz = dout * y * silu'(z),
  // silu'(z) = sig(z) (1 + z (1 - sig(z))).
  void gate(const T* z, int len) {
    over_time<T>(len, [&](int i, int n) {
      const Vec<T> zv = Vec<T>::loadu(z + i, n), sg = vsigmoid(zv), one(T(1));
      (zv * sg).store(zs + i, n);
      (sg * (one + zv * (one - sg))).store(zg + i, n);
    });
  }
};

// The scalar tail of one backward step: dy after the gate, du, ddelta; returns dy.
template <typename T>
struct StepScalars {
  T dDacc = T(0), dbacc = T(0);
  T gate(const BwdChunk<T>& w, const T* dout, T* dz, int64_t t, int i) const {
    T dy = dout[t];
    if (dz != nullptr) {
      dz[t] = dy * w.ypre[i] * w.zg[i];
      dy *= w.zs[i];
    }
    return dy;
  }
  // s1 = <dh_t, B_t>, s2 = <dh_t * h_{t-1} * a_t, A>
  void finish(bool softplus, const BwdChunk<T>& w, T dy, T ut, T Dd, T s1, T s2, int i, T* du,
              T* ddelta, int64_t t) {
    dDacc += dy * ut;
    du[t] = dy * Dd + w.dt[i] * s1;
    const T ddt = ut * s1 + s2;
    const T ddl = softplus ? ddt * w.dsp[i] : ddt;
    ddelta[t] = ddl;
    dbacc += ddl;
  }
};

struct Task {
  int64_t bg, b, d_begin, d_end;
  template <typename T>
  Task(const Params<T>& p, int64_t task) {
    const int64_t blk = task % p.nblk;
    bg = task / p.nblk;  // b * G + g
    b = bg / p.G;
    const int64_t g = bg % p.G;
    d_begin = g * p.dim_g + blk * p.cb;
    d_end = min64(d_begin + p.cb, (g + 1) * p.dim_g);
  }
};

template <typename T, int NV, bool FULL>
void bwd_tasks(const Params<T>& p, int64_t task_begin, int64_t task_end) {
  const States<T, NV, FULL> st(p.N);
  constexpr int W = Vec<T>::size();
  const int nv = st.nv();
  const int NW = nv * W;  // padded state width of the a/h buffers
  const int64_t N = p.N, L = p.L;
  const int CH = p.chunk;
  Scratch<T> work(BwdChunk<T>::kArrays * CH + CH * NW + (CH + 1) * NW + 2 * lane_rows<T>(CH));
  BwdChunk<T> w;
  w.bind(work.ptr, CH);
  T* abuf = work.ptr + BwdChunk<T>::kArrays * CH;  // a_t, CH x NW
  T* hbuf = abuf + CH * NW;                         // hbuf[i] = state before step t0 + i, (CH+1) x NW
  T* acc1 = hbuf + (CH + 1) * NW;                   // per-step partial sums for lane_sums
  T* acc2 = acc1 + lane_rows<T>(CH);
  zero(acc1, 2 * lane_rows<T>(CH));
  Vec<T> A[NV > 0 ? NV : kMaxStateVectors], dh[NV > 0 ? NV : kMaxStateVectors],
      dA[NV > 0 ? NV : kMaxStateVectors];
  for (int64_t task = task_begin; task < task_end; ++task) {
    const Task tk(p, task);
    const int64_t blk = task % p.nblk;
    T* dBacc = p.dB_acc + (tk.bg * p.nblk + blk) * L * N;
    T* dCacc = p.dC_acc + (tk.bg * p.nblk + blk) * L * N;
    zero(dBacc, L * N);
    zero(dCacc, L * N);
    for (int64_t d = tk.d_begin; d < tk.d_end; ++d) {
      const Row<T> r(p, tk.b, d);
      const int64_t row = tk.b * p.dim + d;
      const T* dout = p.dout + row * L;
      T* dz = p.dz ? p.dz + row * L : nullptr;
      for (int v = 0; v < nv; ++v) {
        A[v] = st.load(r.Ad, v);
        dh[v] = p.dlast ? st.load(p.dlast + row * N, v) : Vec<T>(T(0));
        dA[v] = Vec<T>(T(0));
      }
      StepScalars<T> sc;
      for (int64_t c = p.nchunks - 1; c >= 0; --c) {
        const int64_t t0 = c * CH;
        const int len = static_cast<int>(min64(CH, L - t0));
        chunk_dt(p.softplus, r.delta + t0, r.u + t0, r.bias, len, w.dt, w.dtu, w.dsp);
        // Recompute the chunk's decays and states from its checkpoint.
        const T* ck = p.ckpt + (row * p.nchunks + c) * N;
        for (int v = 0; v < nv; ++v) st.load(ck, v).store(hbuf + v * W);
        for (int i = 0; i < len; ++i) {
          const T* Bt = r.Bg + (t0 + i) * N;
          const T* Ct = r.Cg + (t0 + i) * N;
          const Vec<T> dtv(w.dt[i]), dtuv(w.dtu[i]);
          Vec<T> acc(T(0));
          for (int v = 0; v < nv; ++v) {
            const Vec<T> a = vexp(dtv * A[v]);
            const Vec<T> hn =
                at::vec::fmadd(a, Vec<T>::loadu(hbuf + i * NW + v * W), dtuv * st.load(Bt, v));
            a.store(abuf + i * NW + v * W);
            hn.store(hbuf + (i + 1) * NW + v * W);
            if (r.z) acc = at::vec::fmadd(st.load(Ct, v), hn, acc);
          }
          if (r.z) acc.store(acc1 + i * W);
        }
        if (r.z) {
          lane_sums(acc1, len, w.ypre);
          over_time<T>(len, [&](int i, int n) {
            at::vec::fmadd(Vec<T>(r.Dd), Vec<T>::loadu(r.u + t0 + i, n), Vec<T>::loadu(w.ypre + i, n))
                .store(w.ypre + i, n);
          });
          w.gate(r.z + t0, len);
        }
        // Adjoint recurrence, right to left.
        for (int i = len - 1; i >= 0; --i) {
          const int64_t t = t0 + i;
          const T dy = sc.gate(w, dout, dz, t, i);
          w.dy[i] = dy;
          const Vec<T> dyv(dy), dtuv(w.dtu[i]), dtv(w.dt[i]);
          const T* Bt = r.Bg + t * N;
          const T* Ct = r.Cg + t * N;
          T* dBt = dBacc + t * N;
          T* dCt = dCacc + t * N;
          Vec<T> s1(T(0)), s2(T(0));
          for (int v = 0; v < nv; ++v) {
            const Vec<T> a = Vec<T>::loadu(abuf + i * NW + v * W);
            const Vec<T> hp = Vec<T>::loadu(hbuf + i * NW + v * W);
            const Vec<T> hc = Vec<T>::loadu(hbuf + (i + 1) * NW + v * W);
            const Vec<T> dhn = at::vec::fmadd(dyv, st.load(Ct, v), dh[v]);  // dL/dh_t
            st.store(at::vec::fmadd(dyv, hc, st.load(dCt, v)), dCt, v);
            st.store(at::vec::fmadd(dhn, dtuv, st.load(dBt, v)), dBt, v);
            s1 = at::vec::fmadd(dhn, st.load(Bt, v), s1);
            const Vec<T> g = dhn * hp * a;  // dL/d(dt A) = dL/da * a
            s2 = at::vec::fmadd(g, A[v], s2);
            dA[v] = at::vec::fmadd(g, dtv, dA[v]);
            dh[v] = dhn * a;
          }
          s1.store(acc1 + i * W);
          s2.store(acc2 + i * W);
        }
        lane_sums(acc1, len, w.s1);
        lane_sums(acc2, len, w.s2);
        for (int i = len - 1; i >= 0; --i) {
          sc.finish(p.softplus, w, w.dy[i], r.u[t0 + i], r.Dd, w.s1[i], w.s2[i], i, p.du + row * L,
                    p.ddelta + row * L, t0 + i);
        }
      }
      for (int v = 0; v < nv; ++v) st.store(dA[v], p.dA_part + row * N, v);
      p.dD_part[row] = sc.dDacc;
      p.dbias_part[row] = sc.dbacc;
    }
  }
}

// N = 1 backward: decays vectorised over time, scalar recurrences.
template <typename T>
void bwd_tasks_n1(const Params<T>& p, int64_t task_begin, int64_t task_end) {
  const int64_t L = p.L;
  const int CH = p.chunk;
  Scratch<T> work(BwdChunk<T>::kArrays * CH + 2 * CH + 1);
  BwdChunk<T> w;
  w.bind(work.ptr, CH);
  T* abuf = work.ptr + BwdChunk<T>::kArrays * CH;
  T* hbuf = abuf + CH;  // CH + 1
  for (int64_t task = task_begin; task < task_end; ++task) {
    const Task tk(p, task);
    const int64_t blk = task % p.nblk;
    T* dBacc = p.dB_acc + (tk.bg * p.nblk + blk) * L;
    T* dCacc = p.dC_acc + (tk.bg * p.nblk + blk) * L;
    zero(dBacc, L);
    zero(dCacc, L);
    for (int64_t d = tk.d_begin; d < tk.d_end; ++d) {
      const Row<T> r(p, tk.b, d);
      const int64_t row = tk.b * p.dim + d;
      const T* dout = p.dout + row * L;
      T* dz = p.dz ? p.dz + row * L : nullptr;
      const T A0 = r.Ad[0];
      T dh = p.dlast ? p.dlast[row] : T(0), dA = T(0);
      StepScalars<T> sc;
      for (int64_t c = p.nchunks - 1; c >= 0; --c) {
        const int64_t t0 = c * CH;
        const int len = static_cast<int>(min64(CH, L - t0));
        chunk_dt(p.softplus, r.delta + t0, r.u + t0, r.bias, len, w.dt, w.dtu, w.dsp);
        over_time<T>(len, [&](int i, int n) {
          vexp(Vec<T>::loadu(w.dt + i, n) * Vec<T>(A0)).store(abuf + i, n);
        });
        hbuf[0] = p.ckpt[row * p.nchunks + c];
        for (int i = 0; i < len; ++i) {
          hbuf[i + 1] = abuf[i] * hbuf[i] + w.dtu[i] * r.Bg[t0 + i];
          w.ypre[i] = r.Cg[t0 + i] * hbuf[i + 1] + r.Dd * r.u[t0 + i];
        }
        if (r.z) w.gate(r.z + t0, len);
        for (int i = len - 1; i >= 0; --i) {
          const int64_t t = t0 + i;
          const T dy = sc.gate(w, dout, dz, t, i);
          const T dhn = dh + dy * r.Cg[t];
          dCacc[t] += dy * hbuf[i + 1];
          dBacc[t] += dhn * w.dtu[i];
          const T g = dhn * hbuf[i] * abuf[i];
          dA += g * w.dt[i];
          dh = dhn * abuf[i];
          sc.finish(p.softplus, w, dy, r.u[t], r.Dd, dhn * r.Bg[t], g * A0, i, p.du + row * L,
                    p.ddelta + row * L, t);
        }
      }
      p.dA_part[row] = dA;
      p.dD_part[row] = sc.dDacc;
      p.dbias_part[row] = sc.dbacc;
    }
  }
}

// ---------------------------------------------------------------------------------------------------
// Entry points: pick the state layout for N once per call.
// ---------------------------------------------------------------------------------------------------
template <typename T>
void fwd_range(const Params<T>& p, int64_t begin, int64_t end) {
  constexpr int W = Vec<T>::size();
  if (p.N == 1) fwd_rows_n1<T>(p, begin, end);
  else if (p.N == W) fwd_rows<T, 1, true>(p, begin, end);
  else if (p.N == 2 * W) fwd_rows<T, 2, true>(p, begin, end);
  else if (p.N == 4 * W) fwd_rows<T, 4, true>(p, begin, end);
  else fwd_rows<T, 0, false>(p, begin, end);
}

template <typename T>
void bwd_range(const Params<T>& p, int64_t begin, int64_t end) {
  constexpr int W = Vec<T>::size();
  if (p.N == 1) bwd_tasks_n1<T>(p, begin, end);
  else if (p.N == W) bwd_tasks<T, 1, true>(p, begin, end);
  else if (p.N == 2 * W) bwd_tasks<T, 2, true>(p, begin, end);
  else if (p.N == 4 * W) bwd_tasks<T, 4, true>(p, begin, end);
  else bwd_tasks<T, 0, false>(p, begin, end);
}

float exp_loop(int64_t iters) {
  // 8 independent chains x_{k+1} = exp(x_k) - 1.5, which stay in [-1.3, -0.9]: the loop is bound by
  // exp throughput, not latency, and the compiler cannot drop any exp.
  using V = Vec<float>;
  V x[8];
  for (int j = 0; j < 8; ++j) x[j] = V(-1.0f - 0.01f * j);
  for (int64_t k = 0; k < iters; ++k) {
    for (int j = 0; j < 8; ++j) x[j] = vexp(x[j]) - V(1.5f);
  }
  V s(0.0f);
  for (int j = 0; j < 8; ++j) s = s + x[j];
  return hsum(s);
}

void fwd_float(const Params<float>& p, int64_t b, int64_t e) { fwd_range<float>(p, b, e); }
void fwd_double(const Params<double>& p, int64_t b, int64_t e) { fwd_range<double>(p, b, e); }
void bwd_float(const Params<float>& p, int64_t b, int64_t e) { bwd_range<float>(p, b, e); }
void bwd_double(const Params<double>& p, int64_t b, int64_t e) { bwd_range<double>(p, b, e); }

}  // namespace

extern const Kernels SS_KERNELS = {SS_NAME, Vec<float>::size(), fwd_float, fwd_double,
                                   bwd_float, bwd_double, exp_loop};

}  // namespace mmvssm_scan
