// Element-wise regression losses and their gradients w.r.t. the prediction,
// with torch's definitions (d = pred - target):
//   squared    d^2 / 2                                   grad d        (d2l's squared_loss)
//   l1         |d|                                       grad sign(d)  (sign(0) = 0)
//   huber      d^2 / 2 if |d| < delta else delta (|d| - delta / 2)
//                                                        grad clamp(d, -delta, delta)
//   smooth_l1  d^2 / (2 beta) if |d| < beta else |d| - beta / 2
//                                                        grad clamp(d / beta, -1, 1); beta = 0 is l1
// Plain C++ (no Python); one fused pass, multi-threaded for large n.
#pragma once

#include <cstdint>

#include "reduction.hpp"

namespace fastreg {

enum class RegressionKind { squared, l1, huber, smooth_l1 };

template <class T>
struct RegressionArgs {
  RegressionKind kind = RegressionKind::squared;
  const T* pred = nullptr;    // [n]
  const T* target = nullptr;  // [n]
  int64_t n = 0;
  double param = 1.0;  // huber's delta / smooth_l1's beta (> 0, or beta >= 0)
  Reduction reduction = Reduction::mean;
  T* loss = nullptr;  // [n] element losses out, or nullptr
  T* grad = nullptr;  // [n] d(reduced loss)/d(pred) out, or nullptr; may equal pred or target
  double grad_scale = 1.0;
};

// Returns the reduced loss (mean: sum / n, NaN for n == 0; none: the sum, and
// grad is then d(sum)/d(pred)). The sum is accumulated in double, in a fixed
// order whatever the thread count.
template <class T>
double regression_loss(const RegressionArgs<T>& a);

}  // namespace fastreg
