// Vectorised log1p(t) for t >= 0 (the small-class cross-entropy needs
// log(s) with s = 1 + t, where t, the sum of the non-max exps, may be tiny: taking
// log1p of t itself keeps a confident row's loss accurate to a few ulp, where
// log(1 + t) would lose it to the rounding of 1 + t).
//
//   u = 1 + t = 2^k f,  f in [sqrt(1/2), sqrt(2)),  s = (f - 1) / (f + 1)
//   log1p(t) = k ln2 + 2 atanh(s) + (t - (u - 1)) / u
//
// 2 atanh(s) = 2s + s z P(z), z = s^2 <= 0.0295: the series to s^11 (float) or
// s^23 (double) truncates below 2^-25 / 2^-58 relative. The last term corrects
// the rounding of 1 + t (Goldberg's trick). Measured max error (tests/test_vlog.py,
// against long double, both dispatch paths, t in [0, 2^20]): about 1 ulp.
// Domain: finite t >= 0 (what the kernel passes); NaN gives NaN.
#pragma once

#include <cstdint>
#include <cstring>

#include "vexp.hpp"

namespace fastreg {

template <class T>
struct LogConst;

template <>
struct LogConst<float> {
  using Bits = uint32_t;
  static constexpr Bits one = 0x3f800000u, sqrt_half = 0x3f3504f3u, mant_mask = 0x007fffffu;
  static constexpr int mant_bits = 23;
  static constexpr float ln2_hi = 0.693359375f, ln2_lo = -2.12194440e-4f;
  static constexpr int terms = 5;
  static constexpr float p[terms] = {2.0f / 11, 2.0f / 9, 2.0f / 7, 2.0f / 5, 2.0f / 3};
};

template <>
struct LogConst<double> {
  using Bits = uint64_t;
  static constexpr Bits one = 0x3ff0000000000000ull, sqrt_half = 0x3fe6a09e667f3bcdull,
                        mant_mask = 0x000fffffffffffffull;
  static constexpr int mant_bits = 52;
  static constexpr double ln2_hi = 6.93147180369123816490e-01, ln2_lo = 1.90821492927058770002e-10;
  static constexpr int terms = 11;
  static constexpr double p[terms] = {2.0 / 23, 2.0 / 21, 2.0 / 19, 2.0 / 17, 2.0 / 15, 2.0 / 13,
                                      2.0 / 11, 2.0 / 9,  2.0 / 7,  2.0 / 5,  2.0 / 3};
};

// Scalar log1p with the same steps as the AVX2 version (the paths agree to an ulp).
template <class T>
FASTREG_INLINE T log1p_scalar(T t) {
  using C = LogConst<T>;
  using Bits = typename C::Bits;
  const T u = T(1) + t;
  Bits ix;
  std::memcpy(&ix, &u, sizeof ix);
  // Shift the exponent boundary to sqrt(1/2) so f lands in [sqrt(1/2), sqrt(2)).
  ix += C::one - C::sqrt_half;
  const T k = static_cast<T>(static_cast<int>(ix >> C::mant_bits) - static_cast<int>(C::one >> C::mant_bits));
  ix = (ix & C::mant_mask) + C::sqrt_half;
  T f;
  std::memcpy(&f, &ix, sizeof f);
  const T s = (f - T(1)) / (f + T(1)), z = s * s;
  T p = C::p[0];
  for (int i = 1; i < C::terms; ++i) p = p * z + C::p[i];
  const T corr = (t - (u - T(1))) / u;
  return k * C::ln2_hi + ((s * z * p + corr + k * C::ln2_lo) + T(2) * s);
}

#if FASTREG_HAVE_AVX2_KERNELS

FASTREG_TARGET_AVX2 FASTREG_INLINE __m256 log1p_avx2(__m256 t) {
  using C = LogConst<float>;
  const __m256 one = _mm256_set1_ps(1.0f);
  const __m256 u = _mm256_add_ps(one, t);
  __m256i ix = _mm256_add_epi32(_mm256_castps_si256(u), _mm256_set1_epi32(int(C::one - C::sqrt_half)));
  const __m256 k = _mm256_cvtepi32_ps(
      _mm256_sub_epi32(_mm256_srli_epi32(ix, C::mant_bits), _mm256_set1_epi32(int(C::one >> C::mant_bits))));
  ix = _mm256_add_epi32(_mm256_and_si256(ix, _mm256_set1_epi32(int(C::mant_mask))),
                        _mm256_set1_epi32(int(C::sqrt_half)));
  const __m256 f = _mm256_castsi256_ps(ix);
  const __m256 s = _mm256_div_ps(_mm256_sub_ps(f, one), _mm256_add_ps(f, one)), z = _mm256_mul_ps(s, s);
  __m256 p = _mm256_set1_ps(C::p[0]);
  for (int i = 1; i < C::terms; ++i) p = _mm256_fmadd_ps(p, z, _mm256_set1_ps(C::p[i]));
  const __m256 corr = _mm256_div_ps(_mm256_sub_ps(t, _mm256_sub_ps(u, one)), u);
  // Same association as the scalar version; fmadd's single rounding can differ by an ulp.
  __m256 lo = _mm256_add_ps(_mm256_mul_ps(_mm256_mul_ps(s, z), p), corr);
  lo = _mm256_add_ps(lo, _mm256_mul_ps(k, _mm256_set1_ps(C::ln2_lo)));
  return _mm256_add_ps(_mm256_mul_ps(k, _mm256_set1_ps(C::ln2_hi)), _mm256_add_ps(lo, _mm256_add_ps(s, s)));
}

FASTREG_TARGET_AVX2 FASTREG_INLINE __m256d log1p_avx2(__m256d t) {
  using C = LogConst<double>;
  const __m256d one = _mm256_set1_pd(1.0);
  const __m256d u = _mm256_add_pd(one, t);
  __m256i ix = _mm256_add_epi64(_mm256_castpd_si256(u), _mm256_set1_epi64x(int64_t(C::one - C::sqrt_half)));
  // k = (ix >> 52) - 1023 as a double: the biased exponent is in [0, 2047], so
  // OR-ing it into the mantissa of 2^52 and subtracting 2^52 converts it exactly.
  const __m256d magic = _mm256_set1_pd(4503599627370496.0);  // 2^52
  const __m256d kb = _mm256_sub_pd(
      _mm256_castsi256_pd(_mm256_or_si256(_mm256_srli_epi64(ix, C::mant_bits), _mm256_castpd_si256(magic))), magic);
  const __m256d k = _mm256_sub_pd(kb, _mm256_set1_pd(1023.0));
  ix = _mm256_add_epi64(_mm256_and_si256(ix, _mm256_set1_epi64x(int64_t(C::mant_mask))),
                        _mm256_set1_epi64x(int64_t(C::sqrt_half)));
  const __m256d f = _mm256_castsi256_pd(ix);
  const __m256d s = _mm256_div_pd(_mm256_sub_pd(f, one), _mm256_add_pd(f, one)), z = _mm256_mul_pd(s, s);
  __m256d p = _mm256_set1_pd(C::p[0]);
  for (int i = 1; i < C::terms; ++i) p = _mm256_fmadd_pd(p, z, _mm256_set1_pd(C::p[i]));
  const __m256d corr = _mm256_div_pd(_mm256_sub_pd(t, _mm256_sub_pd(u, one)), u);
  __m256d lo = _mm256_add_pd(_mm256_mul_pd(_mm256_mul_pd(s, z), p), corr);
  lo = _mm256_add_pd(lo, _mm256_mul_pd(k, _mm256_set1_pd(C::ln2_lo)));
  return _mm256_add_pd(_mm256_mul_pd(k, _mm256_set1_pd(C::ln2_hi)), _mm256_add_pd(lo, _mm256_add_pd(s, s)));
}

#endif

#if FASTREG_HAVE_AVX2_KERNELS

FASTREG_TARGET_AVX512 FASTREG_INLINE __m512 log1p_avx512(__m512 t) {
  using C = LogConst<float>;
  const __m512 one = _mm512_set1_ps(1.0f);
  const __m512 u = _mm512_add_ps(one, t);
  __m512i ix = _mm512_add_epi32(_mm512_castps_si512(u), _mm512_set1_epi32(int(C::one - C::sqrt_half)));
  const __m512 k = _mm512_cvtepi32_ps(
      _mm512_sub_epi32(_mm512_srli_epi32(ix, C::mant_bits), _mm512_set1_epi32(int(C::one >> C::mant_bits))));
  ix = _mm512_add_epi32(_mm512_and_si512(ix, _mm512_set1_epi32(int(C::mant_mask))),
                        _mm512_set1_epi32(int(C::sqrt_half)));
  const __m512 f = _mm512_castsi512_ps(ix);
  const __m512 s = _mm512_div_ps(_mm512_sub_ps(f, one), _mm512_add_ps(f, one)), z = _mm512_mul_ps(s, s);
  __m512 p = _mm512_set1_ps(C::p[0]);
  for (int i = 1; i < C::terms; ++i) p = _mm512_fmadd_ps(p, z, _mm512_set1_ps(C::p[i]));
  const __m512 corr = _mm512_div_ps(_mm512_sub_ps(t, _mm512_sub_ps(u, one)), u);
  __m512 lo = _mm512_add_ps(_mm512_mul_ps(_mm512_mul_ps(s, z), p), corr);
  lo = _mm512_add_ps(lo, _mm512_mul_ps(k, _mm512_set1_ps(C::ln2_lo)));
  return _mm512_add_ps(_mm512_mul_ps(k, _mm512_set1_ps(C::ln2_hi)), _mm512_add_ps(lo, _mm512_add_ps(s, s)));
}

FASTREG_TARGET_AVX512 FASTREG_INLINE __m512d log1p_avx512(__m512d t) {
  using C = LogConst<double>;
  const __m512d one = _mm512_set1_pd(1.0);
  const __m512d u = _mm512_add_pd(one, t);
  __m512i ix = _mm512_add_epi64(_mm512_castpd_si512(u), _mm512_set1_epi64(int64_t(C::one - C::sqrt_half)));
  const __m512d k = _mm512_cvtepi64_pd(  // DQ: the exponent, exactly
      _mm512_sub_epi64(_mm512_srli_epi64(ix, C::mant_bits), _mm512_set1_epi64(int64_t(C::one >> C::mant_bits))));
  ix = _mm512_add_epi64(_mm512_and_si512(ix, _mm512_set1_epi64(int64_t(C::mant_mask))),
                        _mm512_set1_epi64(int64_t(C::sqrt_half)));
  const __m512d f = _mm512_castsi512_pd(ix);
  const __m512d s = _mm512_div_pd(_mm512_sub_pd(f, one), _mm512_add_pd(f, one)), z = _mm512_mul_pd(s, s);
  __m512d p = _mm512_set1_pd(C::p[0]);
  for (int i = 1; i < C::terms; ++i) p = _mm512_fmadd_pd(p, z, _mm512_set1_pd(C::p[i]));
  const __m512d corr = _mm512_div_pd(_mm512_sub_pd(t, _mm512_sub_pd(u, one)), u);
  __m512d lo = _mm512_add_pd(_mm512_mul_pd(_mm512_mul_pd(s, z), p), corr);
  lo = _mm512_add_pd(lo, _mm512_mul_pd(k, _mm512_set1_pd(C::ln2_lo)));
  return _mm512_add_pd(_mm512_mul_pd(k, _mm512_set1_pd(C::ln2_hi)), _mm512_add_pd(lo, _mm512_add_pd(s, s)));
}

#endif

// log1p of n values >= 0 with the active SIMD level. Exposed for the accuracy tests.
template <class T>
void vlog1p(const T* x, T* out, int64_t n);

}  // namespace fastreg
