// Fused CPU selective scan: the per-row forward/backward kernels.
//
// This header is included several times by selective_scan_cpu.cpp, each time inside a different
// `#pragma GCC target(...)` region and with a different SS_NS namespace, so that the same source is
// compiled for a portable x86-64 baseline, for AVX2+FMA and for AVX-512; the best one is chosen at run
// time. It therefore contains no include guard and nothing ISA-neutral (see selective_scan_cpu.cpp for
// Params and the launch code).
//
// Layout (prepared by the Python wrapper; all in the compute dtype, contiguous):
//   u, delta, z, out, du, ddelta, dz: (batch, dim, L)
//   A: (dim, N); D, bias: (dim,)
//   B, C: (batch, G, L, N)   <- time-major so that the state index n is the contiguous one
//   ckpt: (batch, dim, nchunks, N): the state entering each chunk of `chunk` steps
//   dB_acc, dC_acc: (batch, G, nblk, L, N): one private accumulator per channel block
//
// Algorithm per (batch, channel) row: time is cut into chunks of `chunk` steps. For each chunk we first
// compute, vectorised over (t, n), the decays a = exp(dt * A) and the inputs bu = dt * u * B into small
// buffers that stay in L1/L2, then run the recurrence h = a * h + bu with the C contraction. The forward
// pass stores only the state entering each chunk; the backward pass walks the chunks right to left,
// recomputes the chunk's states from its checkpoint and runs the adjoint recurrence
//   dh_t = dy_t C_t + a_{t+1} dh_{t+1}
// Every exponential has a non-positive argument for A <= 0, delta >= 0 (softplus is evaluated as
// max(x, 0) + log1p(exp(-|x|)) and the sigmoid from exp(-|x|)).

namespace SS_NS {

// ---------------------------------------------------------------------------------------------------
// Elementary functions. The float versions are branch-free so that loops calling them vectorise; the
// double versions use libm (float64 is for gradcheck and tests, speed is secondary there).
// ---------------------------------------------------------------------------------------------------
static inline float ss_exp(float x) {
  // exp(x) = 2^k * exp(r), k = round(x / ln2), r = x - k ln2 in [-ln2/2, ln2/2] (Cody-Waite split),
  // exp(r) by the Cephes expf minimax polynomial (about 1 ulp). Flushes to 0 below -87.3 (where the
  // true result is subnormal) and gives +inf above 88.7; NaN propagates.
  const float xc = std::min(std::max(x, -87.0f), 88.5f);
  const float kf = (xc * 1.44269504088896341f + 12582912.0f) - 12582912.0f;  // round to nearest
  float r = xc - kf * 0.693359375f;
  r = r - kf * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * (r * r) + r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(kf) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  float res = p * scale;
  res = (x < -87.3365447505f) ? 0.0f : res;
  res = (x > 88.7228391117f) ? std::numeric_limits<float>::infinity() : res;
  return res;
}

static inline float ss_log1p_unit(float e) {
  // log1p(e) for e in [0, 1], branch-free. log(m) = 2 atanh(s), s = (m - 1) / (m + 1), with m = 1 + e
  // halved when above sqrt(2), so |s| <= 0.1716 and the series to s^9 is below 1e-9 relative. The final
  // e / (m0 - 1) factor (Goldberg's trick) corrects the rounding of 1 + e, so tiny e stays accurate.
  const float m0 = 1.0f + e;
  const bool big = m0 > 1.41421356f;
  const float m = big ? m0 * 0.5f : m0;
  const float s = (m - 1.0f) / (m + 1.0f);
  const float s2 = s * s;
  float q = 1.0f / 9.0f;
  q = q * s2 + 1.0f / 7.0f;
  q = q * s2 + 1.0f / 5.0f;
  q = q * s2 + 1.0f / 3.0f;
  q = q * s2 + 1.0f;
  const float lg = 2.0f * s * q + (big ? 0.693147180559945309f : 0.0f);
  const float den = m0 - 1.0f;
  return (den == 0.0f) ? e : lg * (e / den);
}

static inline double ss_exp(double x) { return std::exp(x); }
static inline double ss_log1p_unit(double e) { return std::log1p(e); }

// softplus with torch's threshold (x > 20 -> x), stable for any x.
template <typename T>
static inline T ss_softplus(T x) {
  const T e = ss_exp(-std::abs(x));
  const T sp = std::max(x, T(0)) + ss_log1p_unit(e);
  return x > T(20) ? x : sp;
}

// sigmoid(x) from exp(-|x|) only.
template <typename T>
static inline T ss_sigmoid(T x) {
  const T e = ss_exp(-std::abs(x));
  const T inv = T(1) / (T(1) + e);
  return x >= T(0) ? inv : e * inv;
}

// Sum of v[0..NT) for a compile-time power-of-two NT, as a pairwise tree (the vectoriser turns it into
// a few extract+add steps; an `omp simd` reduction would fold the lanes one by one).
template <typename T, int NT>
static inline T tree_sum(T* v) {
  for (int w = NT / 2; w >= 1; w /= 2) {
    for (int k = 0; k < w; ++k) v[k] += v[k + w];
  }
  return v[0];
}

// ---------------------------------------------------------------------------------------------------
// Chunk preparation shared by forward and backward: dt, decays a = exp(dt A), inputs bu = dt u B.
// ---------------------------------------------------------------------------------------------------
template <typename T, int NT>
static inline void prepare_chunk(const Params<T>& p, int N, const T* u, const T* delta, const T* Ad,
                                 const T* Bg, T bias, int64_t t0, int len, T* dt, T* a, T* bu,
                                 T* dsp) {
  if (p.softplus) {
#pragma omp simd
    for (int i = 0; i < len; ++i) {
      const T x = delta[t0 + i] + bias;
      dt[i] = ss_softplus(x);
      if (dsp != nullptr) dsp[i] = ss_sigmoid(x);
    }
  } else {
#pragma omp simd
    for (int i = 0; i < len; ++i) dt[i] = delta[t0 + i] + bias;
  }
  const T* Bc = Bg + t0 * N;
  if (NT == 1) {
    const T A0 = Ad[0];
#pragma omp simd
    for (int i = 0; i < len; ++i) {
      a[i] = ss_exp(dt[i] * A0);
      bu[i] = dt[i] * u[t0 + i] * Bc[i];
    }
  } else {
    for (int i = 0; i < len; ++i) {
      const T dti = dt[i];
      const T dui = dti * u[t0 + i];
      T* ai = a + static_cast<int64_t>(i) * N;
      T* bui = bu + static_cast<int64_t>(i) * N;
      const T* Bi = Bc + static_cast<int64_t>(i) * N;
#pragma omp simd
      for (int n = 0; n < N; ++n) {
        ai[n] = ss_exp(dti * Ad[n]);
        bui[n] = dui * Bi[n];
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------------
// Forward: rows [row_begin, row_end) of the flattened (batch, dim).
// ---------------------------------------------------------------------------------------------------
template <typename T, int NT>
static void fwd_rows(const Params<T>& p, int64_t row_begin, int64_t row_end) {
  const int N = NT > 0 ? NT : static_cast<int>(p.N);
  const int64_t L = p.L;
  const int CH = p.chunk;
  std::vector<T> work(static_cast<size_t>(2 * CH * N + CH + N));
  T* a = work.data();
  T* bu = a + CH * N;
  T* dt = bu + CH * N;
  T* h = dt + CH;
  for (int64_t row = row_begin; row < row_end; ++row) {
    const int64_t b = row / p.dim, d = row % p.dim, g = d / p.dim_g;
    const T* u = p.u + row * L;
    const T* delta = p.delta + row * L;
    const T* z = p.z ? p.z + row * L : nullptr;
    const T* Ad = p.A + d * N;
    const T* Bg = p.B + (b * p.G + g) * L * N;
    const T* Cg = p.C + (b * p.G + g) * L * N;
    const T Dd = p.D ? p.D[d] : T(0);
    const T bias = p.bias ? p.bias[d] : T(0);
    T* out = p.out + row * L;
    for (int n = 0; n < N; ++n) h[n] = T(0);
    for (int64_t c = 0; c < p.nchunks; ++c) {
      const int64_t t0 = c * CH;
      const int len = static_cast<int>(std::min<int64_t>(CH, L - t0));
      if (p.ckpt) {
        T* ck = p.ckpt + (row * p.nchunks + c) * N;
        for (int n = 0; n < N; ++n) ck[n] = h[n];
      }
      prepare_chunk<T, NT>(p, N, u, delta, Ad, Bg, bias, t0, len, dt, a, bu, nullptr);
      const T* Cc = Cg + t0 * N;
      for (int i = 0; i < len; ++i) {
        const T* ai = a + static_cast<int64_t>(i) * N;
        const T* bui = bu + static_cast<int64_t>(i) * N;
        const T* Ci = Cc + static_cast<int64_t>(i) * N;
        T acc = T(0);
        if constexpr (NT > 1) {
          T prod[NT];
#pragma omp simd
          for (int n = 0; n < NT; ++n) {
            const T hn = ai[n] * h[n] + bui[n];
            h[n] = hn;
            prod[n] = Ci[n] * hn;
          }
          acc = tree_sum<T, NT>(prod);
        } else {
#pragma omp simd reduction(+ : acc)
          for (int n = 0; n < N; ++n) {
            const T hn = ai[n] * h[n] + bui[n];
            h[n] = hn;
            acc += Ci[n] * hn;
          }
        }
        out[t0 + i] = acc + Dd * u[t0 + i];
      }
      if (z) {
#pragma omp simd
        for (int i = 0; i < len; ++i) {
          const T zi = z[t0 + i];
          out[t0 + i] *= zi * ss_sigmoid(zi);
        }
      }
    }
    if (p.last) {
      T* last = p.last + row * N;
      for (int n = 0; n < N; ++n) last[n] = h[n];
    }
  }
}

// ---------------------------------------------------------------------------------------------------
// Backward: tasks [task_begin, task_end) over (batch, group, channel block). A task processes the
// channels of its block one after the other and accumulates dB/dC into its private (L, N) slices, so
// the result does not depend on the number of threads.
// ---------------------------------------------------------------------------------------------------
template <typename T, int NT>
static void bwd_tasks(const Params<T>& p, int64_t task_begin, int64_t task_end) {
  const int N = NT > 0 ? NT : static_cast<int>(p.N);
  const int64_t L = p.L;
  const int CH = p.chunk;
  std::vector<T> work(static_cast<size_t>(3 * CH * N + N + 6 * CH + 3 * N));
  T* a = work.data();
  T* bu = a + CH * N;
  T* hbuf = bu + CH * N;  // (CH + 1) * N
  T* dt = hbuf + (CH + 1) * N;
  T* dsp = dt + CH;
  T* zs = dsp + CH;
  T* zg = zs + CH;
  T* ypre = zg + CH;
  T* dh = ypre + CH;
  T* dAacc = dh + N;
  for (int64_t task = task_begin; task < task_end; ++task) {
    const int64_t blk = task % p.nblk;
    const int64_t bg = task / p.nblk;  // b * G + g
    const int64_t b = bg / p.G, g = bg % p.G;
    const int64_t d_begin = g * p.dim_g + blk * p.cb;
    const int64_t d_end = std::min<int64_t>(d_begin + p.cb, (g + 1) * p.dim_g);
    T* dBacc = p.dB_acc + (bg * p.nblk + blk) * L * N;
    T* dCacc = p.dC_acc + (bg * p.nblk + blk) * L * N;
    std::fill(dBacc, dBacc + L * N, T(0));
    std::fill(dCacc, dCacc + L * N, T(0));
    const T* Bg = p.B + bg * L * N;
    const T* Cg = p.C + bg * L * N;
    for (int64_t d = d_begin; d < d_end; ++d) {
      const int64_t row = b * p.dim + d;
      const T* u = p.u + row * L;
      const T* delta = p.delta + row * L;
      const T* z = p.z ? p.z + row * L : nullptr;
      const T* dout = p.dout + row * L;
      const T* Ad = p.A + d * N;
      const T Dd = p.D ? p.D[d] : T(0);
      const T bias = p.bias ? p.bias[d] : T(0);
      T* du = p.du + row * L;
      T* ddelta = p.ddelta + row * L;
      T* dz = p.dz ? p.dz + row * L : nullptr;
      for (int n = 0; n < N; ++n) {
        dh[n] = p.dlast ? p.dlast[row * N + n] : T(0);
        dAacc[n] = T(0);
      }
      T dDacc = T(0), dbacc = T(0);
      for (int64_t c = p.nchunks - 1; c >= 0; --c) {
        const int64_t t0 = c * CH;
        const int len = static_cast<int>(std::min<int64_t>(CH, L - t0));
        prepare_chunk<T, NT>(p, N, u, delta, Ad, Bg, bias, t0, len, dt, a, bu, dsp);
        // Recompute the chunk's states from its checkpoint: hbuf[i] = state before step t0 + i.
        const T* ck = p.ckpt + (row * p.nchunks + c) * N;
        for (int n = 0; n < N; ++n) hbuf[n] = ck[n];
        const T* Cc = Cg + t0 * N;
        for (int i = 0; i < len; ++i) {
          const T* ai = a + static_cast<int64_t>(i) * N;
          const T* bui = bu + static_cast<int64_t>(i) * N;
          T* hp = hbuf + static_cast<int64_t>(i) * N;
          T* hc = hp + N;
          if (z) {
            const T* Ci = Cc + static_cast<int64_t>(i) * N;
            T acc = T(0);
#pragma omp simd reduction(+ : acc)
            for (int n = 0; n < N; ++n) {
              const T hn = ai[n] * hp[n] + bui[n];
              hc[n] = hn;
              acc += Ci[n] * hn;
            }
            ypre[i] = acc + Dd * u[t0 + i];
          } else {
#pragma omp simd
            for (int n = 0; n < N; ++n) hc[n] = ai[n] * hp[n] + bui[n];
          }
        }
        if (z) {
          // out = y * silu(z): dy = dout * silu(z), dz = dout * y * silu'(z),
          // silu'(z) = sig(z) * (1 + z * (1 - sig(z))).
#pragma omp simd
          for (int i = 0; i < len; ++i) {
            const T zi = z[t0 + i];
            const T sg = ss_sigmoid(zi);
            zs[i] = zi * sg;
            zg[i] = sg * (T(1) + zi * (T(1) - sg));
          }
        }
        // Adjoint recurrence, right to left.
        for (int i = len - 1; i >= 0; --i) {
          const int64_t t = t0 + i;
          T dy = dout[t];
          if (z) {
            dz[t] = dy * ypre[i] * zg[i];
            dy *= zs[i];
          }
          const T ut = u[t];
          const T dti = dt[i];
          const T dtu = dti * ut;
          dDacc += dy * ut;
          const T* Ct = Cg + t * N;
          const T* Bt = Bg + t * N;
          const T* ai = a + static_cast<int64_t>(i) * N;
          const T* hp = hbuf + static_cast<int64_t>(i) * N;
          const T* hc = hp + N;
          T* dCt = dCacc + t * N;
          T* dBt = dBacc + t * N;
          T s1 = T(0), s2 = T(0);
          if constexpr (NT > 1) {
            T p1[NT], p2[NT];
#pragma omp simd
            for (int n = 0; n < NT; ++n) {
              const T dhn = dh[n] + dy * Ct[n];  // dL/dh_t
              dCt[n] += dy * hc[n];
              dBt[n] += dhn * dtu;
              p1[n] = dhn * Bt[n];
              const T w = dhn * hp[n] * ai[n];  // dL/d(dt A) = dL/da * a
              p2[n] = w * Ad[n];
              dAacc[n] += w * dti;
              dh[n] = dhn * ai[n];
            }
            s1 = tree_sum<T, NT>(p1);
            s2 = tree_sum<T, NT>(p2);
          } else {
#pragma omp simd reduction(+ : s1, s2)
            for (int n = 0; n < N; ++n) {
              const T dhn = dh[n] + dy * Ct[n];  // dL/dh_t
              dCt[n] += dy * hc[n];
              dBt[n] += dhn * dtu;
              s1 += dhn * Bt[n];
              const T w = dhn * hp[n] * ai[n];  // dL/d(dt A) = dL/da * a
              s2 += w * Ad[n];
              dAacc[n] += w * dti;
              dh[n] = dhn * ai[n];
            }
          }
          du[t] = dy * Dd + dti * s1;
          const T ddt = ut * s1 + s2;
          const T ddl = p.softplus ? ddt * dsp[i] : ddt;
          ddelta[t] = ddl;
          dbacc += ddl;
        }
      }
      T* dA = p.dA_part + row * N;
      for (int n = 0; n < N; ++n) dA[n] = dAacc[n];
      p.dD_part[row] = dDacc;
      p.dbias_part[row] = dbacc;
    }
  }
}

template <typename T>
static void fwd_range(const Params<T>& p, int64_t begin, int64_t end) {
  switch (p.N) {
    case 1: fwd_rows<T, 1>(p, begin, end); break;
    case 2: fwd_rows<T, 2>(p, begin, end); break;
    case 4: fwd_rows<T, 4>(p, begin, end); break;
    case 8: fwd_rows<T, 8>(p, begin, end); break;
    case 16: fwd_rows<T, 16>(p, begin, end); break;
    default: fwd_rows<T, 0>(p, begin, end); break;
  }
}

template <typename T>
static void bwd_range(const Params<T>& p, int64_t begin, int64_t end) {
  switch (p.N) {
    case 1: bwd_tasks<T, 1>(p, begin, end); break;
    case 2: bwd_tasks<T, 2>(p, begin, end); break;
    case 4: bwd_tasks<T, 4>(p, begin, end); break;
    case 8: bwd_tasks<T, 8>(p, begin, end); break;
    case 16: bwd_tasks<T, 16>(p, begin, end); break;
    default: bwd_tasks<T, 0>(p, begin, end); break;
  }
}

static void fwd_float(const Params<float>& p, int64_t b, int64_t e) { fwd_range<float>(p, b, e); }
static void fwd_double(const Params<double>& p, int64_t b, int64_t e) { fwd_range<double>(p, b, e); }
static void bwd_float(const Params<float>& p, int64_t b, int64_t e) { bwd_range<float>(p, b, e); }
static void bwd_double(const Params<double>& p, int64_t b, int64_t e) { bwd_range<double>(p, b, e); }

}  // namespace SS_NS
