#include "regression_loss.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <vector>

#include "simd.hpp"

namespace fastreg {
namespace {

// Elements per chunk: the unit of threading and of the fixed summation order.
constexpr int64_t kChunk = int64_t{1} << 15;
constexpr int kLanes = 8;  // independent partial sums: lets the compiler vectorise the sum

// Written without a choice between two computed expressions, and with every
// comparison made unconditionally (selects one after another, not nested): GCC
// (which assumes FP operations and comparisons may trap) would not if-convert
// `c ? expr1 : expr2` or a comparison inside a select's arm, and left the scalar and
// AVX2 builds of the piecewise losses branchy, ~8-28 ns per element on random signs
// (an AVX-512 build vectorised them with masked operations: ~16x faster than AVX2
// until this form made AVX2 as fast). A select of a computed
// value, as `d > p ? 1 : d * inv_p`, was as bad. Same values as the branchy forms,
// except smooth L1 above beta: the loss within an ulp or two of |d| - beta / 2, and
// the gradient for |d| just above beta d / beta rounded (1 - 2^-24 at worst) where
// the branchy form gave exactly 1.
template <RegressionKind K, class T>
FASTREG_INLINE void loss_grad(T d, T p, T inv_p, T& l, T& g) {
  const T ad = std::fabs(d);
  if constexpr (K == RegressionKind::squared) {
    l = T(0.5) * d * d;
    g = d;
  } else if constexpr (K == RegressionKind::l1) {
    l = ad;
    g = d;  // sign(d); 0 and NaN stay as they are
    g = d > T(0) ? T(1) : g;
    g = d < T(0) ? T(-1) : g;
  } else if constexpr (K == RegressionKind::huber) {
    const T m = ad < p ? ad : p;  // min(|d|, delta); NaN -> delta, so l stays NaN
    l = m * (ad - T(0.5) * m);    // 0.5 d^2 (exactly) below delta, delta (|d| - delta / 2) above
    g = d < -p ? -p : d;          // clamp(d, -delta, delta); NaN stays NaN
    g = g > p ? p : g;
  } else {  // smooth_l1 with beta > 0 (beta == 0 is dispatched as l1)
    const T m = ad < p ? ad : p;
    l = T(0.5) * m * m * inv_p + (ad - m);  // 0.5 d^2 / beta below beta, |d| - beta / 2 above
    const T s = d * inv_p;                  // clamp(d / beta, -1, 1), both tests on s (as the clamp of
    g = s > T(1) ? T(1) : s;                // g above, the AVX2 loop stayed scalar: why is GCC's)
    g = s < T(-1) ? T(-1) : g;
  }
}

// One chunk: element losses (optionally stored), scaled grads (optionally
// stored), and the chunk's sum in double. No __restrict: grad may alias pred.
template <RegressionKind K, bool kLoss, bool kGrad, class T>
FASTREG_INLINE double chunk(const RegressionArgs<T>& a, T gs, int64_t b, int64_t e) {
  const T p = static_cast<T>(a.param), inv_p = a.param > 0 ? static_cast<T>(1.0 / a.param) : T(0);
  double acc[kLanes] = {};
  int64_t i = b;
  for (; i + kLanes <= e; i += kLanes) {
    for (int k = 0; k < kLanes; ++k) {
      T l, g;
      loss_grad<K>(a.pred[i + k] - a.target[i + k], p, inv_p, l, g);
      if constexpr (kLoss) a.loss[i + k] = l;
      if constexpr (kGrad) a.grad[i + k] = g * gs;
      acc[k] += l;
    }
  }
  for (; i < e; ++i) {
    T l, g;
    loss_grad<K>(a.pred[i] - a.target[i], p, inv_p, l, g);
    if constexpr (kLoss) a.loss[i] = l;
    if constexpr (kGrad) a.grad[i] = g * gs;
    acc[0] += l;
  }
  double s = 0;
  for (double v : acc) s += v;
  return s;
}

template <RegressionKind K, class T>
FASTREG_INLINE double chunk_dispatch(const RegressionArgs<T>& a, T gs, int64_t b, int64_t e) {
  if (a.loss && a.grad) return chunk<K, true, true>(a, gs, b, e);
  if (a.loss) return chunk<K, true, false>(a, gs, b, e);
  if (a.grad) return chunk<K, false, true>(a, gs, b, e);
  return chunk<K, false, false>(a, gs, b, e);
}

template <class T>
FASTREG_INLINE double chunk_kind(const RegressionArgs<T>& a, T gs, int64_t b, int64_t e) {
  switch (a.kind) {
    case RegressionKind::squared:
      return chunk_dispatch<RegressionKind::squared>(a, gs, b, e);
    case RegressionKind::huber:
      return chunk_dispatch<RegressionKind::huber>(a, gs, b, e);
    case RegressionKind::smooth_l1:
      if (a.param > 0) return chunk_dispatch<RegressionKind::smooth_l1>(a, gs, b, e);
      return chunk_dispatch<RegressionKind::l1>(a, gs, b, e);  // torch: beta == 0 is l1
    case RegressionKind::l1:
      break;
  }
  return chunk_dispatch<RegressionKind::l1>(a, gs, b, e);
}

template <class T>
double chunk_scalar(const RegressionArgs<T>& a, T gs, int64_t b, int64_t e) {
  return chunk_kind(a, gs, b, e);
}

template <class T>
FASTREG_TARGET_AVX2 double chunk_avx2(const RegressionArgs<T>& a, T gs, int64_t b, int64_t e) {
  return chunk_kind(a, gs, b, e);
}

}  // namespace

template <class T>
double regression_loss(const RegressionArgs<T>& a) {
  if (a.n < 0) throw std::invalid_argument("regression_loss: n must be >= 0");
  const bool beta_ok = a.kind == RegressionKind::smooth_l1 ? a.param >= 0 : a.param > 0;
  if ((a.kind == RegressionKind::huber || a.kind == RegressionKind::smooth_l1) && (!beta_ok || !std::isfinite(a.param)))
    throw std::invalid_argument("regression_loss: delta must be > 0 (beta >= 0) and finite");
  const bool mean = a.reduction == Reduction::mean;
  const T gs = static_cast<T>(mean ? a.grad_scale / static_cast<double>(a.n) : a.grad_scale);
  const int64_t chunks = (a.n + kChunk - 1) / kChunk;
  std::vector<double> partial(static_cast<size_t>(chunks));
  // avx512 runs the AVX2 code: a 512-bit variant measured 0.99-1.08x of it (docs/build.md).
  const bool avx2 = simd_at_least(Simd::avx2);
  parallel_for(chunks, 2, [&](int64_t cb, int64_t ce) {
    for (int64_t k = cb; k < ce; ++k) {
      const int64_t b = k * kChunk, e = std::min(a.n, b + kChunk);
      partial[static_cast<size_t>(k)] = avx2 ? chunk_avx2(a, gs, b, e) : chunk_scalar(a, gs, b, e);
    }
  });
  double total = 0;
  for (double s : partial) total += s;
  return mean ? total / static_cast<double>(a.n) : total;
}

template double regression_loss<float>(const RegressionArgs<float>&);
template double regression_loss<double>(const RegressionArgs<double>&);

}  // namespace fastreg
