// Row kernels of the fused softmax cross-entropy, on top of softmax_rows.inl's row
// primitives and the same vector policies: softmax_simd.inl includes this file after
// softmax_rows.inl in each policy's namespace when the includer (cross_entropy.cpp)
// names it in FASTREG_EXTRA_ROW_KERNELS. No include guard on purpose.

// Cross-entropy over rows [b, e). row_out[i] receives the row loss (double);
// r multiplies the gradient (grad_scale, divided by the mean's denominator);
// wsum is sum_j w_j (c without weights).
template <class V, bool kW, bool kProb, bool kSmooth, bool kGrad>
FASTREG_INLINE void xent_rows(const XentArgs<typename V::T>& a, int64_t b, int64_t e, double r,
                              double wsum, double* row_out) {
  using T = typename V::T;
  const int64_t c = a.c;
  const double eps = a.label_smoothing;
  const T* w = a.weight;
  for (int64_t i = b; i < e; ++i) {
    const T* x = a.logits + i * c;
    T* g = kGrad ? a.grad + i * c : nullptr;
    if constexpr (kProb) {
      const T* t = a.target_probs + i * c;
      const T ct = static_cast<T>(1.0 - eps), c0 = static_cast<T>(eps / static_cast<double>(c));
      const T m = row_max<V>(x, c);
      const RowSums rs = row_sums<V, kGrad, true, kW, true>(x, c, m, T(1), g, w, t, ct, c0);
      const double ls = std::log(rs.s);
      row_out[i] = rs.sumu * ls - rs.dot;
      if constexpr (kGrad)
        row_scale<V, kW, true>(g, c, static_cast<T>(r * rs.sumu / rs.s), static_cast<T>(r), w, t, ct, c0);
    } else {
      const int64_t y = a.target[i];
      if (y == a.ignore_index) {
        row_out[i] = 0;
        if constexpr (kGrad) std::fill(g, g + c, T(0));
        continue;
      }
      const double xy = x[y];  // read before g (possibly x itself) is overwritten
      const T m = row_max<V>(x, c);
      const RowSums rs = row_sums<V, kGrad, kSmooth, kW, false>(x, c, m, T(1), g, w, nullptr, T(0), T(0));
      const double ls = std::log(rs.s);
      const double wy = kW ? static_cast<double>(w[y]) : 1.0;
      double loss = -(1.0 - eps) * wy * ((xy - m) - ls);
      if constexpr (kSmooth) loss += eps / static_cast<double>(c) * (wsum * ls - rs.dot);
      row_out[i] = loss;
      if constexpr (kGrad) {
        // d row / d x_j = ((1-eps) w_y + eps/c sum_k w_k) p_j - eps/c w_j - (1-eps) w_y [j == y]
        const double alpha = r * ((1.0 - eps) * wy + (kSmooth ? eps / static_cast<double>(c) * wsum : 0.0)) / rs.s;
        const double beta = kSmooth ? r * eps / static_cast<double>(c) : 0.0;
        row_scale<V, kW && kSmooth, false>(g, c, static_cast<T>(alpha), static_cast<T>(beta), w, nullptr, T(0),
                                           T(0));
        g[y] -= static_cast<T>(r * (1.0 - eps) * wy);
      }
    }
  }
}

// ---- Small C: one row per lane ----------------------------------------------------
// With few classes the per-row work above is mostly overhead (horizontal max and
// sum, a scalar exp tail, a std::log, per row). Below kLaneMaxC the rows are
// instead taken W at a time, lane l holding row l: every column j is one vector
// (W x W tiles transposed in registers), so the max, the sums, the log and the
// loss are plain vertical operations and nothing is reduced across lanes. The per-row result is
// the same math as xent_rows; the sum of exps is kept as t = s - 1 (the max
// entries contribute e - 1 = 0 exactly, the others e) and the row's log is
// log1p(t), so a confident row (t tiny) keeps its small loss accurate.
constexpr int64_t kLaneMaxC = 16;

// cols[j * W + r] = p[r * c + j] for the W rows at p (row stride c), j < c:
// tiles of TW columns at 0, TW, 2TW, ..., and when TW does not divide c a last
// one at c - TW overlapping the one before (c < TW: one tile of masked loads).
// Nothing is read outside the W rows.
template <class V>
FASTREG_INLINE void rows_to_cols(const typename V::T* p, int64_t c, typename V::T* cols) {
  constexpr int64_t W = V::W, TW = V::TW;
  typename V::R tile[TW];
  if (c < TW) {
    V::load_tile_part(p, c, c, tile);
    for (int64_t k = 0; k < c; ++k) V::store(cols + k * W, tile[k]);
    return;
  }
  for (int64_t s = 0;; s += TW) {
    if (s + TW > c) s = c - TW;
    V::load_tile(p + s, c, tile);
    for (int64_t k = 0; k < TW; ++k) V::store(cols + (s + k) * W, tile[k]);
    if (s + TW == c) return;
  }
}

// The inverse: p[r * c + j] = cols[j * W + r]. Overlapping tiles store the same
// values twice; nothing is written outside the W rows.
template <class V>
FASTREG_INLINE void cols_to_rows(const typename V::T* cols, int64_t c, typename V::T* p) {
  constexpr int64_t W = V::W, TW = V::TW;
  typename V::R tile[TW];
  if (c < TW) {
    for (int64_t k = 0; k < c; ++k) tile[k] = V::load(cols + k * W);
    for (int64_t k = c; k < TW; ++k) tile[k] = V::zero();
    V::store_tile_part(p, c, c, tile);
    return;
  }
  for (int64_t s = 0;; s += TW) {
    if (s + TW > c) s = c - TW;
    for (int64_t k = 0; k < TW; ++k) tile[k] = V::load(cols + (s + k) * W);
    V::store_tile(p + s, c, tile);
    if (s + TW == c) return;
  }
}

// Two vectors side by side: a lane block of 2 V::W rows, as two independent
// dependency chains that the out-of-order core overlaps (one block's chain,
// max -> exps -> sum -> log1p -> divide -> gradient, is longer than its window).
template <class V>
struct Pair {
  using T = typename V::T;
  using H = typename V::R;
  struct R {
    H lo, hi;
  };
  static constexpr int64_t W = 2 * V::W, TW = V::TW;
  static FASTREG_INLINE R load(const T* p) { return {V::load(p), V::load(p + V::W)}; }
  static FASTREG_INLINE void store(T* p, R v) {
    V::store(p, v.lo);
    V::store(p + V::W, v.hi);
  }
  static FASTREG_INLINE R set1(T v) { return {V::set1(v), V::set1(v)}; }
  static FASTREG_INLINE R zero() { return {V::zero(), V::zero()}; }
#define FASTREG_PAIR_OP2(name) \
  static FASTREG_INLINE R name(R a, R b) { return {V::name(a.lo, b.lo), V::name(a.hi, b.hi)}; }
  FASTREG_PAIR_OP2(add)
  FASTREG_PAIR_OP2(sub)
  FASTREG_PAIR_OP2(mul)
  FASTREG_PAIR_OP2(max)
  FASTREG_PAIR_OP2(div)
  FASTREG_PAIR_OP2(mul_nz)
  FASTREG_PAIR_OP2(ge_one)
  FASTREG_PAIR_OP2(mask_nz)
#undef FASTREG_PAIR_OP2
  static FASTREG_INLINE R fmadd(R a, R b, R c) { return {V::fmadd(a.lo, b.lo, c.lo), V::fmadd(a.hi, b.hi, c.hi)}; }
  static FASTREG_INLINE R exp_shifted(R v) { return {V::exp_shifted(v.lo), V::exp_shifted(v.hi)}; }
  static FASTREG_INLINE R log1p(R v) { return {V::log1p(v.lo), V::log1p(v.hi)}; }
  static FASTREG_INLINE R select_eq(R a, R b, R v, R other) {
    return {V::select_eq(a.lo, b.lo, v.lo, other.lo), V::select_eq(a.hi, b.hi, v.hi, other.hi)};
  }
  static FASTREG_INLINE void labels(const int64_t* y, int64_t ignore, R& vy, R& valid) {
    V::labels(y, ignore, vy.lo, valid.lo);
    V::labels(y + V::W, ignore, vy.hi, valid.hi);
  }
  static FASTREG_INLINE void store_double(double* p, R v) {
    V::store_double(p, v.lo);
    V::store_double(p + V::W, v.hi);
  }
  // A tile is V's tile of the first V::W rows beside that of the next V::W.
  static FASTREG_INLINE void load_tile(const T* p, int64_t stride, R* cols) {
    H a[TW], b[TW];
    V::load_tile(p, stride, a);
    V::load_tile(p + V::W * stride, stride, b);
    for (int64_t k = 0; k < TW; ++k) cols[k] = {a[k], b[k]};
  }
  static FASTREG_INLINE void store_tile(T* p, int64_t stride, const R* cols) {
    H a[TW], b[TW];
    for (int64_t k = 0; k < TW; ++k) a[k] = cols[k].lo, b[k] = cols[k].hi;
    V::store_tile(p, stride, a);
    V::store_tile(p + V::W * stride, stride, b);
  }
  static FASTREG_INLINE void load_tile_part(const T* p, int64_t stride, int64_t width, R* cols) {
    H a[TW], b[TW];
    V::load_tile_part(p, stride, width, a);
    V::load_tile_part(p + V::W * stride, stride, width, b);
    for (int64_t k = 0; k < TW; ++k) cols[k] = {a[k], b[k]};
  }
  static FASTREG_INLINE void store_tile_part(T* p, int64_t stride, int64_t width, const R* cols) {
    H a[TW], b[TW];
    for (int64_t k = 0; k < TW; ++k) a[k] = cols[k].lo, b[k] = cols[k].hi;
    V::store_tile_part(p, stride, width, a);
    V::store_tile_part(p + V::W * stride, stride, width, b);
  }
};

// W rows starting at x (row stride c; t and g alike: g receives all W rows),
// labels y[0..W). buf holds 3 * c * W scratch values; row_out gets W losses.
// CT: the class count when known at compile time (0: a.c).
template <class V, bool kW, bool kProb, bool kSmooth, bool kGrad, int CT>
FASTREG_INLINE void xent_lane_block(const XentArgs<typename V::T>& a, const typename V::T* x, const int64_t* y,
                                    const typename V::T* t, typename V::T* g, double r, double wsum,
                                    double* row_out, typename V::T* buf) {
  using T = typename V::T;
  using R = typename V::R;
  constexpr int64_t W = V::W;
  const int64_t c = CT ? CT : a.c;
  const T* w = a.weight;
  T* xt = buf;          // [c][W]: column j of the W rows
  T* et = buf + c * W;  // [c][W]: their exps, then the gradient
  T* ut = et + c * W;   // [c][W]: u_ij (probability targets)

  // Per-lane label (as T; -1 for ignored lanes, never a column) and validity.
  // (y has W labels: the caller pads the last block with ignore_index.)
  R vy = V::set1(-1), vvalid = V::set1(1);
  if constexpr (!kProb) V::labels(y, a.ignore_index, vy, vvalid);

  rows_to_cols<V>(x, c, xt);
  if constexpr (kProb) rows_to_cols<V>(t, c, ut);
  R m = V::set1(-std::numeric_limits<T>::infinity());
  for (int64_t j = 0; j < c; ++j) m = V::max(m, V::load(xt + j * W));

  const T ct = static_cast<T>(1.0 - a.label_smoothing);
  const T c0 = static_cast<T>(a.label_smoothing / static_cast<double>(c));
  R acc = V::zero(), cnt = V::zero(), dot = V::zero(), sumu = V::zero(), xy = V::zero(), ey = V::zero();
  R wy = V::set1(1);
  for (int64_t j = 0; j < c; ++j) {
    const R xj = V::load(xt + j * W);
    const R d = V::sub(xj, m);
    const R e = V::exp_shifted(d);
    V::store(et + j * W, e);
    // acc + (cnt - 1) = s - 1; NaN entries fail the >= and reach acc.
    const R one = V::ge_one(xj, m);
    acc = V::add(acc, V::sub(e, one));
    cnt = V::add(cnt, one);
    if constexpr (kProb) {
      R u = V::fmadd(V::load(ut + j * W), V::set1(ct), V::set1(c0));
      if constexpr (kW) u = V::mul(u, V::set1(w[j]));
      V::store(ut + j * W, u);
      dot = V::add(dot, V::mul_nz(u, d));
      sumu = V::add(sumu, u);
    } else {
      if constexpr (kW) wy = V::select_eq(vy, V::set1(static_cast<T>(j)), V::set1(w[j]), wy);
      if constexpr (kSmooth) dot = V::add(dot, kW ? V::mul(V::set1(w[j]), d) : d);
    }
  }
  // Each lane's target column: x_y - m and e_y, read lane by lane from the column
  // buffers (a compare-and-blend per column and lane would cost ~3x more, and
  // the extra registers spill). Ignored lanes read column 0 and are masked below.
  if constexpr (!kProb) {
    alignas(64) T lane_x[W], lane_e[W];
    for (int64_t l = 0; l < W; ++l) {
      const int64_t col = y[l] == a.ignore_index ? 0 : y[l];
      lane_x[l] = xt[col * W + l];
      lane_e[l] = et[col * W + l];
    }
    xy = V::sub(V::load(lane_x), m);
    ey = V::load(lane_e);
  }
  const R tsum = V::add(acc, V::sub(cnt, V::set1(1)));
  const R L = V::log1p(tsum);
  R loss;
  if constexpr (kProb) {
    loss = V::sub(V::mul(sumu, L), dot);
  } else {
    // -(1 - eps) w_y (x_y - m - L) + eps / c (sum_j w_j L - sum_j w_j (x_j - m))
    loss = V::mul(V::mul(V::set1(-ct), wy), V::sub(xy, L));
    if constexpr (kSmooth) loss = V::add(loss, V::mul(V::set1(c0), V::sub(V::mul(V::set1(static_cast<T>(wsum)), L), dot)));
    loss = V::mask_nz(vvalid, loss);  // ignored rows count 0, whatever their logits
  }
  V::store_double(row_out, loss);
  if constexpr (!kGrad) return;

  const R s = V::add(V::set1(1), tsum);
  const T tr = static_cast<T>(r);
  R alpha, gy = V::zero();
  if constexpr (kProb) {
    alpha = V::div(V::mul(V::set1(tr), sumu), s);  // g_j = r (sum_k u_k p_j - u_j)
  } else {
    // g_j = alpha e_j - beta w_j - hot [j == y], as in xent_rows, with
    // alpha = (hot + K) / s. At j == y, alpha e_y - hot = (K e_y - hot (s - e_y)) / s
    // and s - e_y = (1 - e_y) + t: no cancellation when p_y is near 1 (a confident
    // row), where alpha e_y - hot would lose the gradient to rounding.
    const R hot = V::mul(V::set1(static_cast<T>(r * (1.0 - a.label_smoothing))), wy);
    const R K = V::set1(static_cast<T>(kSmooth ? r * a.label_smoothing / static_cast<double>(c) * wsum : 0.0));
    alpha = V::div(V::add(hot, K), s);
    gy = V::mul(K, ey);
    gy = V::div(V::sub(gy, V::mul(hot, V::add(V::sub(V::set1(1), ey), tsum))), s);
  }
  const T beta = static_cast<T>(r * a.label_smoothing / static_cast<double>(c));
  for (int64_t j = 0; j < c; ++j) {
    R gj;
    if constexpr (kProb) {
      gj = V::sub(V::mul(alpha, V::load(et + j * W)), V::mul(V::set1(tr), V::load(ut + j * W)));
    } else {
      gj = V::mul(alpha, V::load(et + j * W));  // the target column is overwritten below
      if constexpr (kSmooth) gj = V::sub(gj, V::set1(kW ? beta * w[j] : beta));
      gj = V::mask_nz(vvalid, gj);  // ignored rows get 0, even with NaN logits
    }
    V::store(et + j * W, gj);
  }
  if constexpr (!kProb) {  // each valid lane's target column gets gy, lane by lane
    if constexpr (kSmooth) gy = V::sub(gy, kW ? V::mul(V::set1(beta), wy) : V::set1(beta));
    alignas(64) T lane_g[W];
    V::store(lane_g, gy);
    for (int64_t l = 0; l < W; ++l)
      if (y[l] != a.ignore_index) et[y[l] * W + l] = lane_g[l];
  }
  cols_to_rows<V>(et, c, g);
}

template <class V, bool kW, bool kProb, bool kSmooth, bool kGrad, int CT>
FASTREG_INLINE void xent_lanes_of(const XentArgs<typename V::T>& a, int64_t b, int64_t e, double r, double wsum,
                                  double* row_out) {
  using T = typename V::T;
  constexpr int64_t W = V::W;
  const int64_t c = CT ? CT : a.c;
  alignas(32) T buf[3 * kLaneMaxC * W];
  int64_t i = b;
  for (; i + W <= e; i += W)
    xent_lane_block<V, kW, kProb, kSmooth, kGrad, CT>(a, a.logits + i * c, kProb ? nullptr : a.target + i,
                                                  kProb ? a.target_probs + i * c : nullptr,
                                                  kGrad ? a.grad + i * c : nullptr, r, wsum, row_out + i, buf);
  if (i == e) return;
  // Last rows: copied into W zero-padded rows (labels padded with ignore_index),
  // so the block never reads or writes past the arrays; only the real rows are
  // copied back.
  const int64_t k = e - i;
  alignas(32) T xpad[kLaneMaxC * W] = {}, tpad[kLaneMaxC * W] = {}, gpad[kLaneMaxC * W];
  alignas(32) double lpad[W];
  int64_t ypad[W];
  std::copy(a.logits + i * c, a.logits + e * c, xpad);
  if (kProb) std::copy(a.target_probs + i * c, a.target_probs + e * c, tpad);
  if (!kProb) {
    std::fill(ypad, ypad + W, a.ignore_index);
    std::copy(a.target + i, a.target + e, ypad);
  }
  xent_lane_block<V, kW, kProb, kSmooth, kGrad, CT>(a, xpad, kProb ? nullptr : ypad, tpad, gpad, r, wsum, lpad, buf);
  std::copy(lpad, lpad + k, row_out + i);
  if (kGrad) std::copy(gpad, gpad + k * c, a.grad + i * c);
}

// The plain call (class indices, no class weights, no smoothing) with vectors: one
// copy of the lane loop per class count 2..kLaneMaxC, so that its loops over the
// columns unroll (measured in docs/ops.md).
template <class V, bool kGrad, int CT = static_cast<int>(kLaneMaxC)>
FASTREG_INLINE void xent_lanes_plain(const XentArgs<typename V::T>& a, int64_t b, int64_t e, double r, double wsum,
                                     double* row_out) {
  if constexpr (CT >= 2) {
    if (a.c == CT) return xent_lanes_of<V, false, false, false, kGrad, CT>(a, b, e, r, wsum, row_out);
    return xent_lanes_plain<V, kGrad, CT - 1>(a, b, e, r, wsum, row_out);
  } else {
    return xent_lanes_of<V, false, false, false, kGrad, 0>(a, b, e, r, wsum, row_out);
  }
}

template <class V, bool kW, bool kProb, bool kSmooth, bool kGrad>
FASTREG_INLINE void xent_lanes(const XentArgs<typename V::T>& a, int64_t b, int64_t e, double r, double wsum,
                               double* row_out) {
  if constexpr (V::W > 1 && !kW && !kProb && !kSmooth)
    return xent_lanes_plain<V, kGrad>(a, b, e, r, wsum, row_out);
  else
    return xent_lanes_of<V, kW, kProb, kSmooth, kGrad, 0>(a, b, e, r, wsum, row_out);
}

// Run-time options -> template flags (one branch-free row loop per combination).
template <class T>
void xent_range(const XentArgs<T>& a, int64_t b, int64_t e, double r, double wsum, double* row_out) {
  using V = Vec<T>;
  using LaneV = std::conditional_t<(V::W > 1), Pair<V>, V>;  // scalar: one row at a time
  const bool w = a.weight != nullptr, prob = a.target_probs != nullptr;
  const bool smooth = !prob && a.label_smoothing > 0, grad = a.grad != nullptr;
  const bool lanes = a.c <= kLaneMaxC;
  // A policy without kLaneKernel (AVX-512) is never called for small C.
#define FASTREG_XENT_CASE(W_, P_, S_, G_)                                                       \
  if (w == W_ && prob == P_ && smooth == S_ && grad == G_) {                                    \
    if constexpr (V::kLaneKernel)                                                               \
      if (lanes) return xent_lanes<LaneV, W_, P_, S_, G_>(a, b, e, r, wsum, row_out);          \
    return xent_rows<V, W_, P_, S_, G_>(a, b, e, r, wsum, row_out);                             \
  }
#define FASTREG_XENT_CASES(W_, P_)        \
  FASTREG_XENT_CASE(W_, P_, false, false) \
  FASTREG_XENT_CASE(W_, P_, false, true)  \
  FASTREG_XENT_CASE(W_, P_, true, false)  \
  FASTREG_XENT_CASE(W_, P_, true, true)
  FASTREG_XENT_CASES(false, false)
  FASTREG_XENT_CASES(true, false)
  FASTREG_XENT_CASE(false, true, false, false)
  FASTREG_XENT_CASE(false, true, false, true)
  FASTREG_XENT_CASE(true, true, false, false)
  FASTREG_XENT_CASE(true, true, false, true)
#undef FASTREG_XENT_CASES
#undef FASTREG_XENT_CASE
}
