// Host-callable launchers of the CUDA softmax cross-entropy (cross_entropy.cu). Plain
// C++ types and raw device pointers only; the caller (fastreg._cuda's binding) has
// checked shapes, dtypes and devices.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "dtype.cuh"

namespace fastreg::cuda {

enum class XentReduction : int { none = 0, mean = 1, sum = 2 };

// One call: which pointers are set picks what is computed.
//   loss set:            the loss (reduction none: [n] row losses of `dtype`; mean/sum: one
//                        element of `dtype`), with `rows` ([n] float32 scratch) for mean/sum.
//   grad set:            d(loss)/d(logits) times the upstream scale, [n, c] of `dtype`; may
//                        equal logits (each element is read before it is overwritten).
//   lse_out set:         each row's log-sum-exp, [n] float32 (for a later gradient call).
//   lse_in set:          the rows' log-sum-exp from an earlier call: the gradient is then
//                        written in one read of the logits (the torch backward).
// `stats` ([2] float32 scratch) receives the mean's denominator and the weights' sum.
// `error` ([3] int64, -1 when clear) receives the first row whose class index is outside
// [0, c) and not ignore_index, with its label and c, unless it already holds an error; such a
// row's loss and gradient are NaN, and nothing outside the arrays is read or written.
struct XentLaunch {
  DType dtype = DType::f32;
  const void* logits = nullptr;  // [n, c] of dtype, contiguous
  int64_t n = 0, c = 0;
  const int64_t* target = nullptr;     // [n] class indices, or nullptr
  const void* target_probs = nullptr;  // [n, c] of dtype, or nullptr
  const void* weight = nullptr;        // [c] of dtype, or nullptr
  int64_t ignore_index = -100;
  float label_smoothing = 0.f;
  float lse_square_scale = 0.f;  // z-loss: adds z * lse^2 to every counted row
  XentReduction reduction = XentReduction::mean;
  void* loss = nullptr;
  float* rows = nullptr;
  float* stats = nullptr;
  void* grad = nullptr;
  float* lse_out = nullptr;
  const float* lse_in = nullptr;
  const void* grad_scale_dev = nullptr;  // upstream gradient of dtype: one value, or [n] for none
  float grad_scale = 1.f;                // multiplies the gradient too
  int64_t* error = nullptr;
};

cudaError_t cross_entropy(const XentLaunch& a, cudaStream_t stream);

// grad[n, c] *= grad_output (one value, or [n] with per_row), read on the device; rows
// whose scale is exactly 1 are neither read nor written (the usual loss.backward()).
cudaError_t cross_entropy_scale_grad(DType dtype, void* grad, int64_t n, int64_t c, const void* grad_output,
                                     bool per_row, cudaStream_t stream);

}  // namespace fastreg::cuda
