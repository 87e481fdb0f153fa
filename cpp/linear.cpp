#include "linear.hpp"

#include <cstddef>
#include <vector>

#include "blas.hpp"

namespace fastreg {

template <class T>
void linear_forward(const T* x, const T* w, const T* b, int64_t n, int64_t in, int64_t out, T* y) {
  // Seed y with the bias, then let GEMM add x @ w^T on top (beta = 1): one
  // pass over y instead of a GEMM followed by a separate bias pass.
  if (b) {
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < out; ++j) y[i * out + j] = b[j];
  }
  gemm<T>(false, true, n, out, in, T(1), x, in, w, in, b ? T(1) : T(0), y, out);
}

template <class T>
void column_sums(const T* a, int64_t n, int64_t c, T* out, bool accumulate) {
  std::vector<double> acc(static_cast<std::size_t>(c), 0.0);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < c; ++j) acc[static_cast<std::size_t>(j)] += a[i * c + j];
  for (int64_t j = 0; j < c; ++j)
    out[j] = static_cast<T>(acc[static_cast<std::size_t>(j)] + (accumulate ? double(out[j]) : 0.0));
}

template <class T>
void linear_backward(const T* x, const T* w, const T* gy, int64_t n, int64_t in, int64_t out, T* gw, T* gb,
                     T* gx, bool accumulate) {
  const T beta = accumulate ? T(1) : T(0);
  gemm<T>(true, false, out, in, n, T(1), gy, out, x, in, beta, gw, in);  // gw = gy^T x
  if (gb) column_sums(gy, n, out, gb, accumulate);
  if (gx) gemm<T>(false, false, n, in, out, T(1), gy, out, w, in, beta, gx, in);  // gx = gy w
}

#define FASTREG_LINEAR_INSTANTIATE(T)                                                                  \
  template void linear_forward<T>(const T*, const T*, const T*, int64_t, int64_t, int64_t, T*);       \
  template void linear_backward<T>(const T*, const T*, const T*, int64_t, int64_t, int64_t, T*, T*, T*, \
                                   bool);                                                              \
  template void column_sums<T>(const T*, int64_t, int64_t, T*, bool);
FASTREG_LINEAR_INSTANTIATE(float)
FASTREG_LINEAR_INSTANTIATE(double)
#undef FASTREG_LINEAR_INSTANTIATE

}  // namespace fastreg
