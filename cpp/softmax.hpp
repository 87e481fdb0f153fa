// Numerically stable softmax family, row-wise over a contiguous [n, c] array.
// Plain C++ (no Python); rows run in parallel. The row kernels' exp and log1p over
// a whole array are vexp (vexp.hpp) and vlog1p (vlog.hpp), defined in softmax.cpp.
//
// Every row is shifted by its max m before exp (the log-sum-exp trick):
//   lse = m + log(sum_j exp(x_j - m)),   log_softmax_j = (x_j - m) - log(sum ...)
// so huge logits never overflow and log(0) is never taken.
#pragma once

#include <cstdint>

namespace fastreg {

// out[i, :] = softmax(x[i, :]) (or log_softmax when log is true). out may equal x.
// A row of NaN-containing or all -inf values gives NaN, as torch does.
template <class T>
void softmax_rows(const T* x, T* out, int64_t n, int64_t c, bool log);

// out[i] = temperature * log(sum_j exp(x[i, j] / temperature)), temperature >= 0
// (0 gives the row max, the limit). A row of all -inf gives -inf, an empty row
// (c == 0) -inf, a +inf entry +inf, a NaN entry NaN.
template <class T>
void logsumexp_rows(const T* x, T* out, int64_t n, int64_t c, double temperature);

}  // namespace fastreg
