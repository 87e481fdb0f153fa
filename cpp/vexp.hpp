// Vectorised exp for float and double: one algorithm, in a scalar version (any
// CPU) and an AVX2+FMA version (8 floats / 4 doubles per call).
//
//   exp(x) = 2^n * exp(r),  n = round(x / ln 2),  r = x - n ln 2,  |r| <= ln(2)/2
//
// r comes from a Cody-Waite split of ln 2 (hi part exact in n * hi), exp(r) from
// a polynomial: Cephes' degree-7 minimax for float, Taylor to r^13 for double
// (truncation < 2^-60). 2^n is applied as two powers of two, 2^(n/2) * 2^(n - n/2),
// so results in the subnormal range round once and overflow gives +inf.
//
// Accuracy (tests/test_vexp.py measures it against long double on both dispatch
// paths; the bound tested is 2 ulp): measured max 1.0 ulp (float), 1.15 ulp (double) over the
// whole range, exactly
// 0 for x below ln(smallest subnormal / 2), +inf above ln(max), NaN for NaN,
// exp(-inf) = 0 and exp(+inf) = +inf.
#pragma once

#include <cstdint>
#include <cstring>
#include <limits>

#include "simd.hpp"

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
// GCC 12's AVX-512 headers start many intrinsics from a self-initialised
// "undefined" vector, which -Wmaybe-uninitialized reports wherever they are
// inlined (GCC PR 105593, fixed in GCC 13); silenced for the header's lines only.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop
#define FASTREG_HAVE_AVX2_KERNELS 1
#else
#define FASTREG_HAVE_AVX2_KERNELS 0
#endif

namespace fastreg {

template <class T>
struct ExpConst;

template <>
struct ExpConst<float> {
  static constexpr float lo = -104.0f;  // exp(-104) < half the smallest subnormal: rounds to 0
  static constexpr float hi = 89.0f;    // exp(89) > FLT_MAX: overflows to +inf
  static constexpr float log2e = 1.44269504088896341f;
  static constexpr float ln2_hi = 0.693359375f;  // 10 significant bits: n * ln2_hi is exact
  static constexpr float ln2_lo = -2.12194440e-4f;
  static constexpr float round_magic = 12582912.0f;  // 1.5 * 2^23: x + magic - magic rounds to int
  static constexpr int bias = 127, mant_bits = 23;
};

template <>
struct ExpConst<double> {
  static constexpr double lo = -746.0;
  static constexpr double hi = 710.0;
  static constexpr double log2e = 1.4426950408889634074;
  static constexpr double ln2_hi = 6.93147180369123816490e-01;  // fdlibm split
  static constexpr double ln2_lo = 1.90821492927058770002e-10;
  static constexpr double round_magic = 6755399441055744.0;  // 1.5 * 2^52
  static constexpr int bias = 1023, mant_bits = 52;
};

// exp(r) for |r| <= ln(2)/2 by Horner's rule.
FASTREG_INLINE float exp_poly(float r) {
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  return p * (r * r) + r + 1.0f;
}

FASTREG_INLINE double exp_poly(double r) {
  double p = 1.0 / 6227020800.0;  // 1/13!
  p = p * r + 1.0 / 479001600.0;
  p = p * r + 1.0 / 39916800.0;
  p = p * r + 1.0 / 3628800.0;
  p = p * r + 1.0 / 362880.0;
  p = p * r + 1.0 / 40320.0;
  p = p * r + 1.0 / 5040.0;
  p = p * r + 1.0 / 720.0;
  p = p * r + 1.0 / 120.0;
  p = p * r + 1.0 / 24.0;
  p = p * r + 1.0 / 6.0;
  p = p * r + 0.5;
  p = p * r + 1.0;
  return p * r + 1.0;
}

template <class T>
FASTREG_INLINE T pow2_scalar(int k) {  // 2^k for k in the normal exponent range
  using Bits = std::conditional_t<sizeof(T) == 4, uint32_t, uint64_t>;
  const Bits bits = static_cast<Bits>(k + ExpConst<T>::bias) << ExpConst<T>::mant_bits;
  T out;
  std::memcpy(&out, &bits, sizeof out);
  return out;
}

// Scalar exp with the same algorithm as the AVX2 version (so both dispatch
// paths agree to the last bit or two).
template <class T>
FASTREG_INLINE T exp_scalar(T x) {
  using C = ExpConst<T>;
  if (!(x == x)) return x;  // NaN: the int conversion below would be undefined
  x = x < C::lo ? C::lo : (x > C::hi ? C::hi : x);
  const T nf = (x * C::log2e + C::round_magic) - C::round_magic;
  T r = x - nf * C::ln2_hi;
  r = r - nf * C::ln2_lo;
  const int n = static_cast<int>(nf), n1 = n >> 1;
  return exp_poly(r) * pow2_scalar<T>(n1) * pow2_scalar<T>(n - n1);
}

#if FASTREG_HAVE_AVX2_KERNELS

FASTREG_TARGET_AVX2 FASTREG_INLINE __m256 exp_avx2(__m256 x) {
  using C = ExpConst<float>;
  // max/min return their second operand when either is NaN: NaN flows through.
  x = _mm256_min_ps(_mm256_set1_ps(C::hi), _mm256_max_ps(_mm256_set1_ps(C::lo), x));
  const __m256 nf =
      _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(C::log2e)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(nf, _mm256_set1_ps(C::ln2_hi), x);
  r = _mm256_fnmadd_ps(nf, _mm256_set1_ps(C::ln2_lo), r);
  __m256 p = _mm256_set1_ps(1.9875691500e-4f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
  // (p r^2 + r) + 1: adding the 1 last keeps r's low bits (as the scalar version).
  p = _mm256_add_ps(_mm256_fmadd_ps(p, _mm256_mul_ps(r, r), r), _mm256_set1_ps(1.0f));
  const __m256i n = _mm256_cvtps_epi32(nf);
  const __m256i n1 = _mm256_srai_epi32(n, 1), n2 = _mm256_sub_epi32(n, n1);
  const __m256i bias = _mm256_set1_epi32(C::bias);
  const __m256 s1 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n1, bias), C::mant_bits));
  const __m256 s2 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n2, bias), C::mant_bits));
  return _mm256_mul_ps(_mm256_mul_ps(p, s1), s2);
}

FASTREG_TARGET_AVX2 FASTREG_INLINE __m256d exp_avx2(__m256d x) {
  using C = ExpConst<double>;
  x = _mm256_min_pd(_mm256_set1_pd(C::hi), _mm256_max_pd(_mm256_set1_pd(C::lo), x));
  const __m256d nf =
      _mm256_round_pd(_mm256_mul_pd(x, _mm256_set1_pd(C::log2e)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256d r = _mm256_fnmadd_pd(nf, _mm256_set1_pd(C::ln2_hi), x);
  r = _mm256_fnmadd_pd(nf, _mm256_set1_pd(C::ln2_lo), r);
  static constexpr double k[] = {1.0 / 479001600.0,
                                 1.0 / 39916800.0,
                                 1.0 / 3628800.0,
                                 1.0 / 362880.0,
                                 1.0 / 40320.0,
                                 1.0 / 5040.0,
                                 1.0 / 720.0,
                                 1.0 / 120.0,
                                 1.0 / 24.0,
                                 1.0 / 6.0,
                                 0.5,
                                 1.0,
                                 1.0};
  __m256d p = _mm256_set1_pd(1.0 / 6227020800.0);
  for (double c : k) p = _mm256_fmadd_pd(p, r, _mm256_set1_pd(c));
  const __m128i n = _mm256_cvtpd_epi32(nf);
  const __m128i n1 = _mm_srai_epi32(n, 1), n2 = _mm_sub_epi32(n, n1);
  const __m128i bias = _mm_set1_epi32(C::bias);
  const __m256d s1 =
      _mm256_castsi256_pd(_mm256_slli_epi64(_mm256_cvtepi32_epi64(_mm_add_epi32(n1, bias)), C::mant_bits));
  const __m256d s2 =
      _mm256_castsi256_pd(_mm256_slli_epi64(_mm256_cvtepi32_epi64(_mm_add_epi32(n2, bias)), C::mant_bits));
  return _mm256_mul_pd(_mm256_mul_pd(p, s1), s2);
}

#endif

// ---- exp of shifted logits (x = logit - row max <= 0): the row kernels' exp ----
//
//   exp(x) = 2^(k >> 3) * 2^((k & 7) / 8) * exp(r),  k = round(8 x / ln 2),
//   r = x - k ln2 / 8,  |r| <= ln2 / 16
//
// 2^((k & 7) / 8) comes from an 8-entry table (one vpermps; its rounding error
// is carried by a second table, so the result still rounds once), exp(r) - 1
// from a degree-4 polynomial, and 2^(k >> 3) is added into the exponent field.
// That is 8 multiply-adds where exp_avx2 needs 12 (and no clamps): about a third
// less work for the exp that dominates the cross-entropy. The exponent add is
// exact only while the result is a normal float, so any vector with a lane
// below kShiftedLo (or NaN) is handed to exp_avx2 whole; the kernels only see
// that on extreme rows. float only (double keeps exp_avx2).
// Measured max error (tests/test_vexp.py, against long double, x in [-104, 0]):
// about 0.6 ulp; exp(0) = 1 exactly, which the small-C kernel relies on.
// Domain: x <= 0 (any NaN or x < kShiftedLo is also right); for x > 0 the
// result is unspecified (the kernels pass x > 0 only in rows holding a NaN,
// whose results are NaN anyway).
struct ExpShifted {
  static constexpr float lo = -86.5f;                      // k >> 3 >= -125: the result stays normal
  static constexpr float inv_step = 11.5415603271117073f;  // 8 / ln 2
  static constexpr float step_hi = 0.086669921875f;        // ln2_hi / 8: k * step_hi exact for |k| < 2^14
  static constexpr float step_lo = -2.65243050e-5f;        // ln 2 / 8 - step_hi
  static constexpr float round_magic = 12582912.0f;        // 1.5 * 2^23: low bits of x + magic hold k
  // 2^(j / 8) rounded to float, and (2^(j / 8) - that) / that.
  static constexpr float table[8] = {1.0f,
                                     1.090507746e+00f,
                                     1.189207077e+00f,
                                     1.296839595e+00f,
                                     1.414213538e+00f,
                                     1.542210817e+00f,
                                     1.681792855e+00f,
                                     1.834008098e+00f};
  static constexpr float corr[8] = {0.0f,
                                    -1.199215709e-08f,
                                    3.193418086e-08f,
                                    -3.099072076e-08f,
                                    1.711427133e-08f,
                                    5.233334250e-09f,
                                    -1.471960544e-08f,
                                    -6.128259824e-09f};
  // exp(r) - 1 = r + r^2 (c2 + r (c3 + r c4)): Taylor, truncation < 2^-29 for |r| <= ln2/16.
  static constexpr float c2 = 0.5f, c3 = 1.0f / 6, c4 = 1.0f / 24;
};

// Scalar twin of exp_shifted_avx2 (same steps; without FMA the two may differ by an ulp).
FASTREG_INLINE float exp_shifted_scalar(float x) {
  using C = ExpShifted;
  if (!(x >= C::lo)) return exp_scalar<float>(x);  // also NaN
  const float y = x * C::inv_step + C::round_magic;
  const float kf = y - C::round_magic;
  float r = x - kf * C::step_hi;
  r = r - kf * C::step_lo;
  uint32_t yb;
  std::memcpy(&yb, &y, sizeof yb);
  const int j = static_cast<int>(yb & 7u);
  const float q = r + (r * r) * ((C::c4 * r + C::c3) * r + C::c2) + C::corr[j];
  float e = C::table[j] * q + C::table[j];
  uint32_t eb;
  std::memcpy(&eb, &e, sizeof eb);
  eb += (yb & ~7u) << 20;  // + (k >> 3) in the exponent field
  std::memcpy(&e, &eb, sizeof e);
  return e;
}

FASTREG_INLINE double exp_shifted_scalar(double x) { return exp_scalar<double>(x); }

#if FASTREG_HAVE_AVX2_KERNELS

FASTREG_TARGET_AVX2 FASTREG_INLINE __m256 exp_shifted_avx2(__m256 x) {
  using C = ExpShifted;
  // All lanes in range (an unordered compare: NaN fails it) -> the fast path.
  if (_mm256_movemask_ps(_mm256_cmp_ps(x, _mm256_set1_ps(C::lo), _CMP_GE_OQ)) != 0xff) return exp_avx2(x);
  const __m256 y = _mm256_fmadd_ps(x, _mm256_set1_ps(C::inv_step), _mm256_set1_ps(C::round_magic));
  const __m256 kf = _mm256_sub_ps(y, _mm256_set1_ps(C::round_magic));
  __m256 r = _mm256_fnmadd_ps(kf, _mm256_set1_ps(C::step_hi), x);
  r = _mm256_fnmadd_ps(kf, _mm256_set1_ps(C::step_lo), r);
  const __m256i yb = _mm256_castps_si256(y);  // low 3 bits: k & 7 (vpermps reads only those)
  __m256 p = _mm256_fmadd_ps(_mm256_set1_ps(C::c4), r, _mm256_set1_ps(C::c3));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(C::c2));
  const __m256 corr = _mm256_permutevar8x32_ps(_mm256_loadu_ps(C::corr), yb);
  const __m256 q = _mm256_add_ps(_mm256_fmadd_ps(p, _mm256_mul_ps(r, r), r), corr);
  const __m256 t = _mm256_permutevar8x32_ps(_mm256_loadu_ps(C::table), yb);
  const __m256 e = _mm256_fmadd_ps(t, q, t);
  const __m256i scale = _mm256_slli_epi32(_mm256_and_si256(yb, _mm256_set1_epi32(~7)), 20);
  return _mm256_castsi256_ps(_mm256_add_epi32(_mm256_castps_si256(e), scale));
}

FASTREG_TARGET_AVX2 FASTREG_INLINE __m256d exp_shifted_avx2(__m256d x) { return exp_avx2(x); }

#endif

// ---- AVX-512 twins (F, DQ): the same steps on 16 floats / 8 doubles --------------
// Same algorithm and constants as the AVX2 versions, so all three paths agree to an
// ulp or so (the accuracy tests run every level).
#if FASTREG_HAVE_AVX2_KERNELS

FASTREG_TARGET_AVX512 FASTREG_INLINE __m512 exp_avx512(__m512 x) {
  using C = ExpConst<float>;
  x = _mm512_min_ps(_mm512_set1_ps(C::hi), _mm512_max_ps(_mm512_set1_ps(C::lo), x));
  const __m512 nf =
      _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(C::log2e)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(nf, _mm512_set1_ps(C::ln2_hi), x);
  r = _mm512_fnmadd_ps(nf, _mm512_set1_ps(C::ln2_lo), r);
  __m512 p = _mm512_set1_ps(1.9875691500e-4f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
  p = _mm512_add_ps(_mm512_fmadd_ps(p, _mm512_mul_ps(r, r), r), _mm512_set1_ps(1.0f));
  const __m512i n = _mm512_cvtps_epi32(nf);
  const __m512i n1 = _mm512_srai_epi32(n, 1), n2 = _mm512_sub_epi32(n, n1);
  const __m512i bias = _mm512_set1_epi32(C::bias);
  const __m512 s1 = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_add_epi32(n1, bias), C::mant_bits));
  const __m512 s2 = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_add_epi32(n2, bias), C::mant_bits));
  return _mm512_mul_ps(_mm512_mul_ps(p, s1), s2);
}

FASTREG_TARGET_AVX512 FASTREG_INLINE __m512d exp_avx512(__m512d x) {
  using C = ExpConst<double>;
  x = _mm512_min_pd(_mm512_set1_pd(C::hi), _mm512_max_pd(_mm512_set1_pd(C::lo), x));
  const __m512d nf =
      _mm512_roundscale_pd(_mm512_mul_pd(x, _mm512_set1_pd(C::log2e)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512d r = _mm512_fnmadd_pd(nf, _mm512_set1_pd(C::ln2_hi), x);
  r = _mm512_fnmadd_pd(nf, _mm512_set1_pd(C::ln2_lo), r);
  static constexpr double k[] = {1.0 / 479001600.0,
                                 1.0 / 39916800.0,
                                 1.0 / 3628800.0,
                                 1.0 / 362880.0,
                                 1.0 / 40320.0,
                                 1.0 / 5040.0,
                                 1.0 / 720.0,
                                 1.0 / 120.0,
                                 1.0 / 24.0,
                                 1.0 / 6.0,
                                 0.5,
                                 1.0,
                                 1.0};
  __m512d p = _mm512_set1_pd(1.0 / 6227020800.0);
  for (double c : k) p = _mm512_fmadd_pd(p, r, _mm512_set1_pd(c));
  const __m512i n = _mm512_cvtpd_epi64(nf);  // exact: nf is an integer in [-1077, 1025]
  const __m512i n1 = _mm512_srai_epi64(n, 1), n2 = _mm512_sub_epi64(n, n1);
  const __m512i bias = _mm512_set1_epi64(C::bias);
  const __m512d s1 = _mm512_castsi512_pd(_mm512_slli_epi64(_mm512_add_epi64(n1, bias), C::mant_bits));
  const __m512d s2 = _mm512_castsi512_pd(_mm512_slli_epi64(_mm512_add_epi64(n2, bias), C::mant_bits));
  return _mm512_mul_pd(_mm512_mul_pd(p, s1), s2);
}

FASTREG_TARGET_AVX512 FASTREG_INLINE __m512 exp_shifted_avx512(__m512 x) {
  using C = ExpShifted;
  if (_mm512_cmp_ps_mask(x, _mm512_set1_ps(C::lo), _CMP_GE_OQ) != 0xffff) return exp_avx512(x);
  const __m512 y = _mm512_fmadd_ps(x, _mm512_set1_ps(C::inv_step), _mm512_set1_ps(C::round_magic));
  const __m512 kf = _mm512_sub_ps(y, _mm512_set1_ps(C::round_magic));
  __m512 r = _mm512_fnmadd_ps(kf, _mm512_set1_ps(C::step_hi), x);
  r = _mm512_fnmadd_ps(kf, _mm512_set1_ps(C::step_lo), r);
  // vpermps reads 4 index bits here: the 8-entry tables twice over make bit 3 moot.
  const __m512i yb = _mm512_castps_si512(y);
  const __m256 corr8 = _mm256_loadu_ps(C::corr), table8 = _mm256_loadu_ps(C::table);
  const __m512 corr16 = _mm512_insertf32x8(_mm512_castps256_ps512(corr8), corr8, 1);
  const __m512 table16 = _mm512_insertf32x8(_mm512_castps256_ps512(table8), table8, 1);
  __m512 p = _mm512_fmadd_ps(_mm512_set1_ps(C::c4), r, _mm512_set1_ps(C::c3));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(C::c2));
  const __m512 corr = _mm512_permutexvar_ps(yb, corr16);
  const __m512 q = _mm512_add_ps(_mm512_fmadd_ps(p, _mm512_mul_ps(r, r), r), corr);
  const __m512 t = _mm512_permutexvar_ps(yb, table16);
  const __m512 e = _mm512_fmadd_ps(t, q, t);
  const __m512i scale = _mm512_slli_epi32(_mm512_and_si512(yb, _mm512_set1_epi32(~7)), 20);
  return _mm512_castsi512_ps(_mm512_add_epi32(_mm512_castps_si512(e), scale));
}

FASTREG_TARGET_AVX512 FASTREG_INLINE __m512d exp_shifted_avx512(__m512d x) { return exp_avx512(x); }

#endif

// exp of n values with the active SIMD level (out may equal x). Exposed for
// the accuracy tests; `shifted` selects exp_shifted (inputs <= 0).
template <class T>
void vexp(const T* x, T* out, int64_t n, bool shifted = false);

}  // namespace fastreg
