#include "linear.hpp"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <type_traits>
#include <vector>

#include "blas.hpp"
#include "simd.hpp"
#include "vexp.hpp"  // <immintrin.h> and FASTREG_HAVE_AVX2_KERNELS

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

namespace {
template <class T>
FASTREG_INLINE void add_into_body(T* __restrict dst, const T* __restrict src, int64_t n) {
  for (int64_t e = 0; e < n; ++e) dst[e] += src[e];
}
template <class T>
void add_into_base(T* dst, const T* src, int64_t n) {
  add_into_body(dst, src, n);
}
template <class T>
FASTREG_TARGET_AVX2 void add_into_avx2(T* dst, const T* src, int64_t n) {
  add_into_body(dst, src, n);
}
template <class T>
FASTREG_TARGET_AVX512 void add_into_avx512(T* dst, const T* src, int64_t n) {
  add_into_body(dst, src, n);
}
}  // namespace

template <class T>
void add_into(T* dst, const T* src, int64_t n) {
  if (simd_at_least(Simd::avx512))
    add_into_avx512(dst, src, n);
  else if (simd_at_least(Simd::avx2))
    add_into_avx2(dst, src, n);
  else
    add_into_base(dst, src, n);
}

template <class T>
void linear_backward(const T* x, const T* w, const T* gy, int64_t n, int64_t in, int64_t out, T* gw, T* gb, T* gx,
                     bool accumulate) {
  const T beta = accumulate ? T(1) : T(0);
  gemm<T>(true, false, out, in, n, T(1), gy, out, x, in, beta, gw, in);  // gw = gy^T x
  if (gb) column_sums(gy, n, out, gb, accumulate);
  if (gx) gemm<T>(false, false, n, in, out, T(1), gy, out, w, in, beta, gx, in);  // gx = gy w
}

// ---- few outputs: vector policies and the kernels of few_outputs.inl --------

#if FASTREG_HAVE_AVX2_KERNELS
#pragma GCC push_options
#pragma GCC target("avx2,fma")
namespace few_avx2 {

// Six outputs per block: two rows (or two vectors) x 6 accumulators, the loaded
// vectors and a broadcast fit AVX2's 16 registers.
struct F32 {
  using T = float;
  using R = __m256;
  using Mask = __m256i;
  static constexpr int64_t W = 8;
  static constexpr int kClasses = 6;
  static FASTREG_INLINE R load(const T* p) { return _mm256_loadu_ps(p); }
  static FASTREG_INLINE void store(T* p, R v) { _mm256_storeu_ps(p, v); }
  static FASTREG_INLINE R set1(T v) { return _mm256_set1_ps(v); }
  static FASTREG_INLINE R zero() { return _mm256_setzero_ps(); }
  static FASTREG_INLINE R fmadd(R a, R b, R c) { return _mm256_fmadd_ps(a, b, c); }
  static FASTREG_INLINE Mask tail_mask(int64_t n) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(n)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  }
  static FASTREG_INLINE R load_tail(const T* p, Mask m) { return _mm256_maskload_ps(p, m); }
  static FASTREG_INLINE void store_tail(T* p, Mask m, R v) { _mm256_maskstore_ps(p, m, v); }
  static FASTREG_INLINE T hsum(R v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    return _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)));
  }
};

struct F64 {
  using T = double;
  using R = __m256d;
  using Mask = __m256i;
  static constexpr int64_t W = 4;
  static constexpr int kClasses = 6;
  static FASTREG_INLINE R load(const T* p) { return _mm256_loadu_pd(p); }
  static FASTREG_INLINE void store(T* p, R v) { _mm256_storeu_pd(p, v); }
  static FASTREG_INLINE R set1(T v) { return _mm256_set1_pd(v); }
  static FASTREG_INLINE R zero() { return _mm256_setzero_pd(); }
  static FASTREG_INLINE R fmadd(R a, R b, R c) { return _mm256_fmadd_pd(a, b, c); }
  static FASTREG_INLINE Mask tail_mask(int64_t n) {
    return _mm256_cmpgt_epi64(_mm256_set1_epi64x(n), _mm256_setr_epi64x(0, 1, 2, 3));
  }
  static FASTREG_INLINE R load_tail(const T* p, Mask m) { return _mm256_maskload_pd(p, m); }
  static FASTREG_INLINE void store_tail(T* p, Mask m, R v) { _mm256_maskstore_pd(p, m, v); }
  static FASTREG_INLINE T hsum(R v) {
    const __m128d s = _mm_add_pd(_mm256_castpd256_pd128(v), _mm256_extractf128_pd(v, 1));
    return _mm_cvtsd_f64(_mm_add_sd(s, _mm_unpackhi_pd(s, s)));
  }
};

#include "few_outputs.inl"

}  // namespace few_avx2
#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")
namespace few_avx512 {

// Twelve outputs per block: 2 x 12 accumulators, two loaded vectors and a
// broadcast in AVX-512's 32 registers.
struct F32 {
  using T = float;
  using R = __m512;
  using Mask = __mmask16;
  static constexpr int64_t W = 16;
  static constexpr int kClasses = 12;
  static FASTREG_INLINE R load(const T* p) { return _mm512_loadu_ps(p); }
  static FASTREG_INLINE void store(T* p, R v) { _mm512_storeu_ps(p, v); }
  static FASTREG_INLINE R set1(T v) { return _mm512_set1_ps(v); }
  static FASTREG_INLINE R zero() { return _mm512_setzero_ps(); }
  static FASTREG_INLINE R fmadd(R a, R b, R c) { return _mm512_fmadd_ps(a, b, c); }
  static FASTREG_INLINE Mask tail_mask(int64_t n) { return static_cast<Mask>((1u << n) - 1u); }
  static FASTREG_INLINE R load_tail(const T* p, Mask m) { return _mm512_maskz_loadu_ps(m, p); }
  static FASTREG_INLINE void store_tail(T* p, Mask m, R v) { _mm512_mask_storeu_ps(p, m, v); }
  static FASTREG_INLINE T hsum(R v) { return _mm512_reduce_add_ps(v); }
};

struct F64 {
  using T = double;
  using R = __m512d;
  using Mask = __mmask8;
  static constexpr int64_t W = 8;
  static constexpr int kClasses = 12;
  static FASTREG_INLINE R load(const T* p) { return _mm512_loadu_pd(p); }
  static FASTREG_INLINE void store(T* p, R v) { _mm512_storeu_pd(p, v); }
  static FASTREG_INLINE R set1(T v) { return _mm512_set1_pd(v); }
  static FASTREG_INLINE R zero() { return _mm512_setzero_pd(); }
  static FASTREG_INLINE R fmadd(R a, R b, R c) { return _mm512_fmadd_pd(a, b, c); }
  static FASTREG_INLINE Mask tail_mask(int64_t n) { return static_cast<Mask>((1u << n) - 1u); }
  static FASTREG_INLINE R load_tail(const T* p, Mask m) { return _mm512_maskz_loadu_pd(m, p); }
  static FASTREG_INLINE void store_tail(T* p, Mask m, R v) { _mm512_mask_storeu_pd(p, m, v); }
  static FASTREG_INLINE T hsum(R v) { return _mm512_reduce_add_pd(v); }
};

#include "few_outputs.inl"

}  // namespace few_avx512
#pragma GCC pop_options
#endif

template <class T>
bool few_outputs_supported(int64_t out) {
  return FASTREG_HAVE_AVX2_KERNELS && out >= 1 && out <= kFewOutputs && simd_at_least(Simd::avx2);
}

template <class T>
void few_outputs_forward(const T* x, const T* w, const T* b, int64_t n, int64_t in, int64_t out, T* y) {
#if FASTREG_HAVE_AVX2_KERNELS
  using P2 = std::conditional_t<std::is_same_v<T, float>, few_avx2::F32, few_avx2::F64>;
  using P5 = std::conditional_t<std::is_same_v<T, float>, few_avx512::F32, few_avx512::F64>;
  if (simd_at_least(Simd::avx512)) return few_avx512::forward<P5>(x, w, b, n, in, out, y);
  if (simd_at_least(Simd::avx2)) return few_avx2::forward<P2>(x, w, b, n, in, out, y);
#endif
  linear_forward<T>(x, w, b, n, in, out, y);
}

template <class T>
void few_outputs_weight_grad(const T* x, const T* gy, int64_t n, int64_t in, int64_t out, T* gw, bool accumulate) {
#if FASTREG_HAVE_AVX2_KERNELS
  using P2 = std::conditional_t<std::is_same_v<T, float>, few_avx2::F32, few_avx2::F64>;
  using P5 = std::conditional_t<std::is_same_v<T, float>, few_avx512::F32, few_avx512::F64>;
  if (simd_at_least(Simd::avx512)) return few_avx512::weight_grad<P5>(x, gy, n, in, out, gw, accumulate);
  if (simd_at_least(Simd::avx2)) return few_avx2::weight_grad<P2>(x, gy, n, in, out, gw, accumulate);
#endif
  gemm<T>(true, false, out, in, n, T(1), gy, out, x, in, accumulate ? T(1) : T(0), gw, in);
}

template <class T>
int64_t few_outputs_gather_forward(const T* x, const int64_t* idx, int64_t n, int64_t in, const T* w, const T* b,
                                   int64_t out, T* xb, T* y, bool check) {
#if FASTREG_HAVE_AVX2_KERNELS
  using P2 = std::conditional_t<std::is_same_v<T, float>, few_avx2::F32, few_avx2::F64>;
  using P5 = std::conditional_t<std::is_same_v<T, float>, few_avx512::F32, few_avx512::F64>;
  if (simd_at_least(Simd::avx512))
    return check ? few_avx512::gather_forward<P5, true>(x, idx, n, in, w, b, out, xb, y)
                 : few_avx512::gather_forward<P5, false>(x, idx, n, in, w, b, out, xb, y);
  if (simd_at_least(Simd::avx2))
    return check ? few_avx2::gather_forward<P2, true>(x, idx, n, in, w, b, out, xb, y)
                 : few_avx2::gather_forward<P2, false>(x, idx, n, in, w, b, out, xb, y);
#endif
  (void)x, (void)idx, (void)n, (void)in, (void)w, (void)b, (void)out, (void)xb, (void)y, (void)check;
  return -1;
}

#define FASTREG_LINEAR_INSTANTIATE(T)                                                                            \
  template void linear_forward<T>(const T*, const T*, const T*, int64_t, int64_t, int64_t, T*);                  \
  template void linear_backward<T>(const T*, const T*, const T*, int64_t, int64_t, int64_t, T*, T*, T*, bool);   \
  template void column_sums<T>(const T*, int64_t, int64_t, T*, bool);                                            \
  template void add_into<T>(T*, const T*, int64_t);                                                              \
  template bool few_outputs_supported<T>(int64_t);                                                               \
  template void few_outputs_forward<T>(const T*, const T*, const T*, int64_t, int64_t, int64_t, T*);             \
  template void few_outputs_weight_grad<T>(const T*, const T*, int64_t, int64_t, int64_t, T*, bool);             \
  template int64_t few_outputs_gather_forward<T>(const T*, const int64_t*, int64_t, int64_t, const T*, const T*, \
                                                 int64_t, T*, T*, bool);
FASTREG_LINEAR_INSTANTIATE(float)
FASTREG_LINEAR_INSTANTIATE(double)
#undef FASTREG_LINEAR_INSTANTIATE

}  // namespace fastreg
