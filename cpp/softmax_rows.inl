// Row kernels of the softmax family (and the row primitives the cross-entropy row
// kernels in cross_entropy_rows.inl build on), written once against a small vector
// policy V (V::T, V::R, V::W lanes, load/store/add/sub/mul/fmadd/max/exp/hsum/hmax/mul_nz).
// softmax_simd.inl includes this file three times: once with a scalar policy,
// once inside a `#pragma GCC target("avx2,fma")` region with the AVX2 policy and
// once inside an AVX-512 region with that policy, each time in its own namespace
// (so the sets of functions never collide). No include guard on purpose.
//
// A policy with kMaskTail (AVX-512) finishes a row's last c % W columns with one
// masked vector step (tail_mask / load_tail / store_tail / mask_zero) instead of
// the scalar loop: 16 lanes would leave up to 15 scalar exps per row (C = 1000:
// 8 of them, about as long as the row's 62 vector steps).

// Vector sums are flushed into double every kBlock elements: float lanes then
// add at most kBlock / W terms, which keeps float32 row sums accurate to ~1e-7.
constexpr int64_t kBlock = 512;

template <class V>
FASTREG_INLINE typename V::T row_max(const typename V::T* x, int64_t c) {
  using T = typename V::T;
  constexpr int64_t W = V::W;
  typename V::R m0 = V::set1(-std::numeric_limits<T>::infinity()), m1 = m0;
  int64_t j = 0;
  for (; j + 2 * W <= c; j += 2 * W) {  // two chains hide the max latency
    m0 = V::max(m0, V::load(x + j));
    m1 = V::max(m1, V::load(x + j + W));
  }
  for (; j + W <= c; j += W) m0 = V::max(m0, V::load(x + j));
  if constexpr (V::kMaskTail) {
    if (j < c) m1 = V::max(m1, V::load_tail(x + j, V::tail_mask(c - j), -std::numeric_limits<T>::infinity()));
    j = c;
  }
  T m = V::hmax(V::max(m0, m1));
  for (; j < c; ++j) m = x[j] > m ? x[j] : m;
  return m;
}

struct RowSums {
  double s = 0;     // sum_j exp(k (x_j - m))
  double dot = 0;   // sum_j u_j (x_j - m)   (kDot)
  double sumu = 0;  // sum_j u_j             (kDot && kT)
};

// u_j, the per-class coefficient of the smoothing / probability-target terms:
// (kW ? w_j : 1) * (kT ? ct * t_j + c0 : 1).
template <class V, bool kW, bool kT>
FASTREG_INLINE typename V::R coef_vec(int64_t j, const typename V::T* w, const typename V::T* t,
                                      typename V::R vct, typename V::R vc0) {
  typename V::R u = V::set1(1);
  if constexpr (kT) u = V::fmadd(V::load(t + j), vct, vc0);
  if constexpr (kW) u = kT ? V::mul(u, V::load(w + j)) : V::load(w + j);
  return u;
}

// coef_vec for the masked last columns [j, j + lanes of k); 0 in the other lanes.
template <class V, bool kW, bool kT>
FASTREG_INLINE typename V::R coef_tail(int64_t j, typename V::Mask k, const typename V::T* w,
                                       const typename V::T* t, typename V::R vct, typename V::R vc0) {
  typename V::R u = V::set1(1);
  if constexpr (kT) u = V::fmadd(V::load_tail(t + j, k, 0), vct, vc0);
  if constexpr (kW) u = kT ? V::mul(u, V::load_tail(w + j, k, 0)) : V::load_tail(w + j, k, 0);
  return V::mask_zero(k, u);
}

template <bool kW, bool kT, class T>
FASTREG_INLINE T coef_scalar(int64_t j, const T* w, const T* t, T ct, T c0) {
  T u = 1;
  if constexpr (kT) u = t[j] * ct + c0;
  if constexpr (kW) u = kT ? u * w[j] : w[j];
  return u;
}

// One sweep over a row: the sum of exp(k (x_j - m)) (k = 1 unless kScale),
// optionally storing the exps in e (may equal x) and accumulating
// sum u_j (x_j - m). Where u_j is a target probability, a zero u_j contributes
// 0 even against a -inf logit (0 * log 0 = 0, the mathematical limit).
template <class V, bool kStore, bool kDot, bool kW, bool kT, bool kScale = false>
FASTREG_INLINE RowSums row_sums(const typename V::T* x, int64_t c, typename V::T m, typename V::T k,
                                typename V::T* e, const typename V::T* w, const typename V::T* t,
                                typename V::T ct, typename V::T c0) {
  using T = typename V::T;
  using R = typename V::R;
  constexpr int64_t W = V::W;
  RowSums out;
  const R vm = V::set1(m), vk = V::set1(k), vct = V::set1(ct), vc0 = V::set1(c0);
  const int64_t cv = c - c % W;
  int64_t j = 0;
  while (j < cv) {
    const int64_t end = std::min(cv, j + kBlock);
    R as = V::zero(), ad = V::zero(), au = V::zero();
    for (; j < end; j += W) {
      const R d = V::sub(V::load(x + j), vm);
      const R ev = V::exp_shifted(kScale ? V::mul(d, vk) : d);
      if constexpr (kStore) V::store(e + j, ev);
      as = V::add(as, ev);
      if constexpr (kDot) {
        if constexpr (!kW && !kT) {
          ad = V::add(ad, d);
        } else {
          const R u = coef_vec<V, kW, kT>(j, w, t, vct, vc0);
          ad = V::add(ad, kT ? V::mul_nz(u, d) : V::mul(u, d));
          if constexpr (kT) au = V::add(au, u);
        }
      }
    }
    out.s += V::hsum(as);
    if constexpr (kDot) out.dot += V::hsum(ad);
    if constexpr (kDot && kT) out.sumu += V::hsum(au);
  }
  if constexpr (V::kMaskTail) {
    if (j < c) {  // the masked-off lanes load m: d = 0 there, and their exp is zeroed
      const auto mk = V::tail_mask(c - j);
      const R d = V::sub(V::load_tail(x + j, mk, m), vm);
      const R ev = V::mask_zero(mk, V::exp_shifted(kScale ? V::mul(d, vk) : d));
      if constexpr (kStore) V::store_tail(e + j, mk, ev);
      out.s += V::hsum(ev);
      if constexpr (kDot) {
        const R dz = V::mask_zero(mk, d);  // (m - m is NaN when m is infinite)
        if constexpr (!kW && !kT) {
          out.dot += V::hsum(dz);
        } else {
          const R u = coef_tail<V, kW, kT>(j, mk, w, t, vct, vc0);
          out.dot += V::hsum(kT ? V::mul_nz(u, dz) : V::mul(u, dz));
          if constexpr (kT) out.sumu += V::hsum(u);
        }
      }
    }
    j = c;
  }
  for (; j < c; ++j) {  // tail (fewer than W elements)
    const T d = x[j] - m;
    const T ev = exp_shifted_scalar(kScale ? d * k : d);
    if constexpr (kStore) e[j] = ev;
    out.s += ev;
    if constexpr (kDot) {
      const T u = coef_scalar<kW, kT>(j, w, t, ct, c0);
      out.dot += (kT && u == 0) ? T(0) : u * d;
      if constexpr (kT) out.sumu += u;
    }
  }
  if constexpr (kDot && !kT) out.sumu = 0;  // unused: the caller knows sum_j w_j
  return out;
}

// g_j = alpha * g_j - beta * u_j over a row whose exps are already in g.
template <class V, bool kW, bool kT>
FASTREG_INLINE void row_scale(typename V::T* g, int64_t c, typename V::T alpha, typename V::T beta,
                              const typename V::T* w, const typename V::T* t, typename V::T ct,
                              typename V::T c0) {
  using R = typename V::R;
  constexpr int64_t W = V::W;
  const R va = V::set1(alpha), vb = V::set1(beta), vct = V::set1(ct), vc0 = V::set1(c0);
  int64_t j = 0;
  for (; j + W <= c; j += W) {
    const R ev = V::load(g + j);
    if constexpr (!kW && !kT) {
      V::store(g + j, V::sub(V::mul(va, ev), vb));
    } else {
      V::store(g + j, V::sub(V::mul(va, ev), V::mul(vb, coef_vec<V, kW, kT>(j, w, t, vct, vc0))));
    }
  }
  if constexpr (V::kMaskTail) {
    if (j < c) {
      const auto mk = V::tail_mask(c - j);
      const R ev = V::load_tail(g + j, mk, 0);
      if constexpr (!kW && !kT) {
        V::store_tail(g + j, mk, V::sub(V::mul(va, ev), vb));
      } else {
        V::store_tail(g + j, mk, V::sub(V::mul(va, ev), V::mul(vb, coef_tail<V, kW, kT>(j, mk, w, t, vct, vc0))));
      }
    }
    j = c;
  }
  for (; j < c; ++j) g[j] = alpha * g[j] - beta * coef_scalar<kW, kT>(j, w, t, ct, c0);
}

// out_j = x_j - shift (log_softmax's last sweep; out may equal x).
template <class V>
FASTREG_INLINE void row_shift(const typename V::T* x, typename V::T* out, int64_t c, typename V::T shift) {
  constexpr int64_t W = V::W;
  const typename V::R vs = V::set1(shift);
  int64_t j = 0;
  for (; j + W <= c; j += W) V::store(out + j, V::sub(V::load(x + j), vs));
  if constexpr (V::kMaskTail) {
    if (j < c) {
      const auto mk = V::tail_mask(c - j);
      V::store_tail(out + j, mk, V::sub(V::load_tail(x + j, mk, 0), vs));
    }
    j = c;
  }
  for (; j < c; ++j) out[j] = x[j] - shift;
}


template <class T>
void softmax_range(const T* x, T* out, int64_t c, bool log, int64_t b, int64_t e) {
  using V = Vec<T>;
  for (int64_t i = b; i < e; ++i) {
    const T* xr = x + i * c;
    T* o = out + i * c;
    const T m = row_max<V>(xr, c);
    if (log) {
      const RowSums rs = row_sums<V, false, false, false, false>(xr, c, m, T(1), nullptr, nullptr, nullptr, T(0), T(0));
      row_shift<V>(xr, o, c, static_cast<T>(static_cast<double>(m) + std::log(rs.s)));
    } else {
      const RowSums rs = row_sums<V, true, false, false, false>(xr, c, m, T(1), o, nullptr, nullptr, T(0), T(0));
      row_scale<V, false, false>(o, c, static_cast<T>(1.0 / rs.s), T(0), nullptr, nullptr, T(0), T(0));
    }
  }
}

template <class T>
void logsumexp_range(const T* x, T* out, int64_t c, double temperature, int64_t b, int64_t e) {
  using V = Vec<T>;
  for (int64_t i = b; i < e; ++i) {
    const T* xr = x + i * c;
    const T m = row_max<V>(xr, c);
    if (std::isinf(m) || temperature == 0) {
      // All -inf (or empty) -> -inf; a +inf entry -> +inf; temperature 0 -> the max.
      // A NaN anywhere still wins (row_max may have skipped it).
      bool nan = false;
      for (int64_t j = 0; j < c; ++j) nan |= std::isnan(xr[j]);
      out[i] = nan ? std::numeric_limits<T>::quiet_NaN() : m;
      continue;
    }
    const RowSums rs = row_sums<V, false, false, false, false, true>(xr, c, m, static_cast<T>(1.0 / temperature),
                                                                      nullptr, nullptr, nullptr, T(0), T(0));
    out[i] = static_cast<T>(static_cast<double>(m) + temperature * std::log(rs.s));
  }
}

template <class T>
void vexp_range(const T* x, T* out, int64_t b, int64_t e, bool shifted) {
  using V = Vec<T>;
  int64_t j = b;
  if (shifted) {
    for (; j + V::W <= e; j += V::W) V::store(out + j, V::exp_shifted(V::load(x + j)));
    for (; j < e; ++j) out[j] = exp_shifted_scalar(x[j]);
    return;
  }
  for (; j + V::W <= e; j += V::W) V::store(out + j, V::exp(V::load(x + j)));
  for (; j < e; ++j) out[j] = exp_scalar<T>(x[j]);
}

template <class T>
void vlog1p_range(const T* x, T* out, int64_t b, int64_t e) {
  using V = Vec<T>;
  int64_t j = b;
  for (; j + V::W <= e; j += V::W) V::store(out + j, V::log1p(V::load(x + j)));
  for (; j < e; ++j) out[j] = log1p_scalar<T>(x[j]);
}
