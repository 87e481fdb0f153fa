// The fused softmax cross-entropy, row-wise over a contiguous [n, c] array, on the
// same numerically stable row kernels as the softmax family (softmax.hpp). Plain
// C++ (no Python); rows run in parallel.
#pragma once

#include <cstdint>

#include "reduction.hpp"

namespace fastreg {

// Arguments of the fused cross-entropy, with torch.nn.functional.cross_entropy's
// semantics. Exactly one of target / target_probs is set.
//
// Class-index targets y (w = weight or 1, eps = label_smoothing, ignored rows 0):
//   row_i = (1 - eps) * -w[y_i] * logp[i, y_i] + eps / c * -sum_j w[j] * logp[i, j]
//   mean  = sum_i row_i / sum_{i not ignored} w[y_i]
// Probability targets t (t' = (1 - eps) t + eps / c):
//   row_i = -sum_j w[j] * t'[i, j] * logp[i, j]   (terms with t' = 0 count 0)
//   mean  = sum_i row_i / n
template <class T>
struct XentArgs {
  const T* logits = nullptr;
  int64_t n = 0, c = 0;             // [n, c] row-major, contiguous
  const int64_t* target = nullptr;  // [n] class indices (already validated), or nullptr
  const T* target_probs = nullptr;  // [n, c] class probabilities, or nullptr
  const T* weight = nullptr;        // [c] class weights, or nullptr
  int64_t ignore_index = -100;
  double label_smoothing = 0.0;
  Reduction reduction = Reduction::mean;
  T* row_loss = nullptr;    // [n] per-row losses out, or nullptr
  T* grad = nullptr;        // [n, c] d(reduced loss)/d(logits) out, or nullptr; may equal logits (in place)
  double grad_scale = 1.0;  // multiplies the gradient (upstream grad_output)
};

// Fused forward+backward; returns the reduced loss (with Reduction::none: the sum
// of row losses, and grad is d(sum of row losses)/d(logits) * grad_scale).
// Two sweeps over each row: the max, then exp + sums (the exps are parked in grad),
// then the loss and gradient of the row while it is still in cache.
// A class index outside [0, c) that is not ignore_index throws std::out_of_range
// (a pre-pass, before anything is written); a mean over no rows (n == 0, or all
// ignored) is NaN, as in torch.
template <class T>
double softmax_cross_entropy(const XentArgs<T>& a);

}  // namespace fastreg
