#include "softmax_xent.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#include "simd.hpp"
#include "vexp.hpp"

namespace fastreg {
namespace {

// ---- scalar policy: one lane, any CPU ------------------------------------------
namespace scalar_rows {

template <class T_>
struct Vec {
  using T = T_;
  using R = T;
  static constexpr int64_t W = 1;
  static FASTREG_INLINE R load(const T* p) { return *p; }
  static FASTREG_INLINE void store(T* p, R v) { *p = v; }
  static FASTREG_INLINE R set1(T v) { return v; }
  static FASTREG_INLINE R zero() { return T(0); }
  static FASTREG_INLINE R add(R a, R b) { return a + b; }
  static FASTREG_INLINE R sub(R a, R b) { return a - b; }
  static FASTREG_INLINE R mul(R a, R b) { return a * b; }
  static FASTREG_INLINE R fmadd(R a, R b, R c) { return a * b + c; }
  static FASTREG_INLINE R max(R a, R b) { return b > a ? b : a; }
  static FASTREG_INLINE R mul_nz(R u, R d) { return u == T(0) ? T(0) : u * d; }
  static FASTREG_INLINE R exp(R v) { return exp_scalar<T>(v); }
  static FASTREG_INLINE double hsum(R v) { return v; }
  static FASTREG_INLINE T hmax(R v) { return v; }
};

#include "softmax_rows.inl"

}  // namespace scalar_rows

// ---- AVX2 + FMA policy: compiled for that ISA only, picked at run time -------------
#if FASTREG_HAVE_AVX2_KERNELS
#pragma GCC push_options
#pragma GCC target("avx2,fma")
namespace avx2_rows {

template <class T>
struct Vec;

template <>
struct Vec<float> {
  using T = float;
  using R = __m256;
  static constexpr int64_t W = 8;
  static FASTREG_INLINE R load(const T* p) { return _mm256_loadu_ps(p); }
  static FASTREG_INLINE void store(T* p, R v) { _mm256_storeu_ps(p, v); }
  static FASTREG_INLINE R set1(T v) { return _mm256_set1_ps(v); }
  static FASTREG_INLINE R zero() { return _mm256_setzero_ps(); }
  static FASTREG_INLINE R add(R a, R b) { return _mm256_add_ps(a, b); }
  static FASTREG_INLINE R sub(R a, R b) { return _mm256_sub_ps(a, b); }
  static FASTREG_INLINE R mul(R a, R b) { return _mm256_mul_ps(a, b); }
  static FASTREG_INLINE R fmadd(R a, R b, R c) { return _mm256_fmadd_ps(a, b, c); }
  static FASTREG_INLINE R max(R a, R b) { return _mm256_max_ps(a, b); }
  static FASTREG_INLINE R mul_nz(R u, R d) {
    return _mm256_and_ps(_mm256_cmp_ps(u, _mm256_setzero_ps(), _CMP_NEQ_UQ), _mm256_mul_ps(u, d));
  }
  static FASTREG_INLINE R exp(R v) { return exp_avx2(v); }
  static FASTREG_INLINE double hsum(R v) {
    alignas(32) float t[8];
    _mm256_store_ps(t, v);
    double s = 0;
    for (float f : t) s += f;
    return s;
  }
  static FASTREG_INLINE T hmax(R v) {
    alignas(32) float t[8];
    _mm256_store_ps(t, v);
    float m = t[0];
    for (float f : t) m = f > m ? f : m;
    return m;
  }
};

template <>
struct Vec<double> {
  using T = double;
  using R = __m256d;
  static constexpr int64_t W = 4;
  static FASTREG_INLINE R load(const T* p) { return _mm256_loadu_pd(p); }
  static FASTREG_INLINE void store(T* p, R v) { _mm256_storeu_pd(p, v); }
  static FASTREG_INLINE R set1(T v) { return _mm256_set1_pd(v); }
  static FASTREG_INLINE R zero() { return _mm256_setzero_pd(); }
  static FASTREG_INLINE R add(R a, R b) { return _mm256_add_pd(a, b); }
  static FASTREG_INLINE R sub(R a, R b) { return _mm256_sub_pd(a, b); }
  static FASTREG_INLINE R mul(R a, R b) { return _mm256_mul_pd(a, b); }
  static FASTREG_INLINE R fmadd(R a, R b, R c) { return _mm256_fmadd_pd(a, b, c); }
  static FASTREG_INLINE R max(R a, R b) { return _mm256_max_pd(a, b); }
  static FASTREG_INLINE R mul_nz(R u, R d) {
    return _mm256_and_pd(_mm256_cmp_pd(u, _mm256_setzero_pd(), _CMP_NEQ_UQ), _mm256_mul_pd(u, d));
  }
  static FASTREG_INLINE R exp(R v) { return exp_avx2(v); }
  static FASTREG_INLINE double hsum(R v) {
    alignas(32) double t[4];
    _mm256_store_pd(t, v);
    return (t[0] + t[1]) + (t[2] + t[3]);
  }
  static FASTREG_INLINE T hmax(R v) {
    alignas(32) double t[4];
    _mm256_store_pd(t, v);
    double m = t[0];
    for (double f : t) m = f > m ? f : m;
    return m;
  }
};

#include "softmax_rows.inl"

}  // namespace avx2_rows
#pragma GCC pop_options
#endif

bool use_avx2() { return FASTREG_HAVE_AVX2_KERNELS && active_simd() == Simd::avx2; }

// Rows per thread chunk: ~64K elements, below which a thread costs more than it saves.
int64_t row_grain(int64_t c) { return std::max<int64_t>(1, (int64_t{1} << 16) / std::max<int64_t>(c, 1)); }

}  // namespace

template <class T>
double softmax_cross_entropy(const XentArgs<T>& a) {
  if (a.n < 0 || a.c < 1) throw std::invalid_argument("softmax_cross_entropy: need n >= 0 and c >= 1");
  if ((a.target == nullptr) == (a.target_probs == nullptr))
    throw std::invalid_argument("softmax_cross_entropy: exactly one of target / target_probs must be set");
  if (!(a.label_smoothing >= 0.0 && a.label_smoothing <= 1.0))
    throw std::invalid_argument("softmax_cross_entropy: label_smoothing must be in [0, 1]");

  // Pre-pass over the labels (before anything is written): bounds, and the
  // mean's denominator, the summed weight of the rows that are not ignored.
  double denom = static_cast<double>(a.n);
  if (a.target) {
    denom = 0;
    for (int64_t i = 0; i < a.n; ++i) {
      const int64_t y = a.target[i];
      if (y == a.ignore_index) continue;
      if (y < 0 || y >= a.c)
        throw std::out_of_range("Target " + std::to_string(y) + " at row " + std::to_string(i) +
                                " is out of bounds: class indices must be in [0, " + std::to_string(a.c) +
                                ") or equal ignore_index (" + std::to_string(a.ignore_index) + ")");
      denom += a.weight ? static_cast<double>(a.weight[y]) : 1.0;
    }
  }
  double wsum = static_cast<double>(a.c);
  if (a.weight) {
    wsum = 0;
    for (int64_t j = 0; j < a.c; ++j) wsum += a.weight[j];
  }
  const bool mean = a.reduction == Reduction::mean;
  const double r = mean ? a.grad_scale / denom : a.grad_scale;

  std::vector<double> rows(static_cast<size_t>(a.n));
  const bool avx2 = use_avx2();
  parallel_for(a.n, row_grain(a.c), [&](int64_t b, int64_t e) {
#if FASTREG_HAVE_AVX2_KERNELS
    if (avx2) return avx2_rows::xent_range<T>(a, b, e, r, wsum, rows.data());
#endif
    (void)avx2;
    scalar_rows::xent_range<T>(a, b, e, r, wsum, rows.data());
  });
  // Summed in row order after the parallel part: the result does not depend on
  // the thread count.
  double total = 0;
  for (int64_t i = 0; i < a.n; ++i) {
    total += rows[static_cast<size_t>(i)];
    if (a.row_loss) a.row_loss[i] = static_cast<T>(rows[static_cast<size_t>(i)]);
  }
  return mean ? total / denom : total;
}

template <class T>
void softmax_rows(const T* x, T* out, int64_t n, int64_t c, bool log) {
  const bool avx2 = use_avx2();
  parallel_for(n, row_grain(c), [&](int64_t b, int64_t e) {
#if FASTREG_HAVE_AVX2_KERNELS
    if (avx2) return avx2_rows::softmax_range<T>(x, out, c, log, b, e);
#endif
    (void)avx2;
    scalar_rows::softmax_range<T>(x, out, c, log, b, e);
  });
}

template <class T>
void logsumexp_rows(const T* x, T* out, int64_t n, int64_t c, double temperature) {
  if (!(temperature >= 0) || std::isinf(temperature))
    throw std::invalid_argument("logsumexp: temperature must be a finite number >= 0");
  const bool avx2 = use_avx2();
  parallel_for(n, row_grain(c), [&](int64_t b, int64_t e) {
#if FASTREG_HAVE_AVX2_KERNELS
    if (avx2) return avx2_rows::logsumexp_range<T>(x, out, c, temperature, b, e);
#endif
    (void)avx2;
    scalar_rows::logsumexp_range<T>(x, out, c, temperature, b, e);
  });
}

template <class T>
void vexp(const T* x, T* out, int64_t n) {
  const bool avx2 = use_avx2();
  parallel_for(n, int64_t{1} << 16, [&](int64_t b, int64_t e) {
#if FASTREG_HAVE_AVX2_KERNELS
    if (avx2) return avx2_rows::vexp_range<T>(x, out, b, e);
#endif
    (void)avx2;
    scalar_rows::vexp_range<T>(x, out, b, e);
  });
}

#define FASTREG_INSTANTIATE(T)                                                 \
  template double softmax_cross_entropy<T>(const XentArgs<T>&);                \
  template void softmax_rows<T>(const T*, T*, int64_t, int64_t, bool);         \
  template void logsumexp_rows<T>(const T*, T*, int64_t, int64_t, double);     \
  template void vexp<T>(const T*, T*, int64_t);
FASTREG_INSTANTIATE(float)
FASTREG_INSTANTIATE(double)
#undef FASTREG_INSTANTIATE

}  // namespace fastreg
