#include "softmax.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <type_traits>

#include "runtime.hpp"
#include "simd.hpp"
#include "vexp.hpp"
#include "vlog.hpp"

namespace fastreg {
namespace {

// The vector policies and the softmax row kernels.
#include "softmax_simd.inl"

}  // namespace

template <class T>
void softmax_rows(const T* x, T* out, int64_t n, int64_t c, bool log) {
  const Simd level = row_level();
  parallel_for(n, row_grain(c), [&](int64_t b, int64_t e) {
#if FASTREG_HAVE_AVX2_KERNELS
    if (level == Simd::avx512) return avx512_rows::softmax_range<T>(x, out, c, log, b, e);
    if (level == Simd::avx2) return avx2_rows::softmax_range<T>(x, out, c, log, b, e);
#endif
    (void)level;
    scalar_rows::softmax_range<T>(x, out, c, log, b, e);
  });
}

template <class T>
void logsumexp_rows(const T* x, T* out, int64_t n, int64_t c, double temperature) {
  if (!(temperature >= 0) || std::isinf(temperature))
    throw std::invalid_argument("logsumexp: temperature must be a finite number >= 0");
  const Simd level = row_level();
  parallel_for(n, row_grain(c), [&](int64_t b, int64_t e) {
#if FASTREG_HAVE_AVX2_KERNELS
    if (level == Simd::avx512) return avx512_rows::logsumexp_range<T>(x, out, c, temperature, b, e);
    if (level == Simd::avx2) return avx2_rows::logsumexp_range<T>(x, out, c, temperature, b, e);
#endif
    (void)level;
    scalar_rows::logsumexp_range<T>(x, out, c, temperature, b, e);
  });
}

template <class T>
void vexp(const T* x, T* out, int64_t n, bool shifted) {
  const Simd level = row_level();
  parallel_for(n, int64_t{1} << 16, [&](int64_t b, int64_t e) {
#if FASTREG_HAVE_AVX2_KERNELS
    if (level == Simd::avx512) return avx512_rows::vexp_range<T>(x, out, b, e, shifted);
    if (level == Simd::avx2) return avx2_rows::vexp_range<T>(x, out, b, e, shifted);
#endif
    (void)level;
    scalar_rows::vexp_range<T>(x, out, b, e, shifted);
  });
}

template <class T>
void vlog1p(const T* x, T* out, int64_t n) {
  const Simd level = row_level();
  parallel_for(n, int64_t{1} << 16, [&](int64_t b, int64_t e) {
#if FASTREG_HAVE_AVX2_KERNELS
    if (level == Simd::avx512) return avx512_rows::vlog1p_range<T>(x, out, b, e);
    if (level == Simd::avx2) return avx2_rows::vlog1p_range<T>(x, out, b, e);
#endif
    (void)level;
    scalar_rows::vlog1p_range<T>(x, out, b, e);
  });
}

#define FASTREG_INSTANTIATE(T)                                             \
  template void softmax_rows<T>(const T*, T*, int64_t, int64_t, bool);     \
  template void logsumexp_rows<T>(const T*, T*, int64_t, int64_t, double); \
  template void vexp<T>(const T*, T*, int64_t, bool);                      \
  template void vlog1p<T>(const T*, T*, int64_t);
FASTREG_INSTANTIATE(float)
FASTREG_INSTANTIATE(double)
#undef FASTREG_INSTANTIATE

}  // namespace fastreg
