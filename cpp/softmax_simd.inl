// The per-ISA vector policies of the row kernels, each instantiating
// softmax_rows.inl in its own namespace (scalar_rows, avx2_rows, avx512_rows), and
// the dispatch helpers. Shared by cross_entropy.cpp and softmax.cpp, which include
// it inside `namespace fastreg { namespace {` after simd.hpp, vexp.hpp, vlog.hpp
// and runtime.hpp: one source for the vectorised code of both ops. An includer
// that defines FASTREG_EXTRA_ROW_KERNELS (a file name) gets that file's row
// kernels compiled into each policy's namespace too.
// No include guard on purpose (each translation unit gets its own copy).

// ---- scalar policy: one lane, any CPU ------------------------------------------
namespace scalar_rows {

template <class T_>
struct Vec {
  using T = T_;
  using R = T;
  static constexpr int64_t W = 1, TW = 1;    // lanes; columns per transposed tile
  static constexpr bool kMaskTail = false;   // see softmax_rows.inl
  static constexpr bool kLaneKernel = true;  // small C: one row per lane (cross_entropy_rows.inl)
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
  static FASTREG_INLINE R exp_shifted(R v) { return exp_shifted_scalar(v); }
  static FASTREG_INLINE R log1p(R v) { return log1p_scalar<T>(v); }
  static FASTREG_INLINE R div(R a, R b) { return a / b; }
  // A W x W tile (here 1 x 1): see the AVX2 policy.
  static FASTREG_INLINE void load_tile(const T* p, int64_t, R* cols) { cols[0] = *p; }
  static FASTREG_INLINE void store_tile(T* p, int64_t, const R* cols) { *p = cols[0]; }
  static FASTREG_INLINE void load_tile_part(const T* p, int64_t, int64_t, R* cols) { cols[0] = *p; }
  static FASTREG_INLINE void store_tile_part(T* p, int64_t, int64_t, const R* cols) { *p = cols[0]; }
  // Label of each lane as T, or -1 where it equals `ignore` (then also valid = 0).
  static FASTREG_INLINE void labels(const int64_t* y, int64_t ignore, R& vy, R& valid) {
    const bool ok = *y != ignore;
    vy = ok ? static_cast<T>(*y) : T(-1);
    valid = ok ? T(1) : T(0);
  }
  static FASTREG_INLINE R ge_one(R x, R m) { return x >= m ? T(1) : T(0); }
  static FASTREG_INLINE R select_eq(R a, R b, R v, R other) { return a == b ? v : other; }
  static FASTREG_INLINE R mask_nz(R flag, R v) { return flag != T(0) ? v : T(0); }
  static FASTREG_INLINE void store_double(double* p, R v) { *p = v; }
  static FASTREG_INLINE double hsum(R v) { return v; }
  static FASTREG_INLINE T hmax(R v) { return v; }
};

#include "softmax_rows.inl"
#ifdef FASTREG_EXTRA_ROW_KERNELS
#include FASTREG_EXTRA_ROW_KERNELS
#endif

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
  static constexpr int64_t W = 8, TW = 8;
  static constexpr bool kMaskTail = false;
  static constexpr bool kLaneKernel = true;
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
  static FASTREG_INLINE R exp_shifted(R v) { return exp_shifted_avx2(v); }
  static FASTREG_INLINE R log1p(R v) { return log1p_avx2(v); }
  static FASTREG_INLINE R div(R a, R b) { return _mm256_div_ps(a, b); }
  // The 8 x 8 tile of rows p + r * stride, r < 8 (8 values each) transposed:
  // cols[k] lane r = p[r * stride + k]. In-register shuffles: Zen 4's vgatherdps
  // costs several times more per value.
  static FASTREG_INLINE void load_tile(const T* p, int64_t stride, R* cols) {
    R rows[8];
    for (int r = 0; r < 8; ++r) rows[r] = _mm256_loadu_ps(p + r * stride);
    transpose8(rows, cols);
  }
  // The inverse: row r of the tile (8 values at p + r * stride) = lane r of cols[0..8).
  static FASTREG_INLINE void store_tile(T* p, int64_t stride, const R* cols) {
    R rows[8];
    transpose8(cols, rows);
    for (int r = 0; r < 8; ++r) _mm256_storeu_ps(p + r * stride, rows[r]);
  }
  // Rows of only `width` < 8 values: masked loads and stores, nothing touched past them.
  static FASTREG_INLINE void load_tile_part(const T* p, int64_t stride, int64_t width, R* cols) {
    const __m256i mask = part_mask(width);
    R rows[8];
    for (int r = 0; r < 8; ++r) rows[r] = _mm256_maskload_ps(p + r * stride, mask);
    transpose8(rows, cols);
  }
  static FASTREG_INLINE void store_tile_part(T* p, int64_t stride, int64_t width, const R* cols) {
    const __m256i mask = part_mask(width);
    R rows[8];
    transpose8(cols, rows);
    for (int r = 0; r < 8; ++r) _mm256_maskstore_ps(p + r * stride, mask, rows[r]);
  }
  static FASTREG_INLINE __m256i part_mask(int64_t width) {  // lanes [0, width) set
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(width)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  }
  static FASTREG_INLINE void transpose8(const R* in, R* out) {
    const R t0 = _mm256_unpacklo_ps(in[0], in[1]), t1 = _mm256_unpackhi_ps(in[0], in[1]);
    const R t2 = _mm256_unpacklo_ps(in[2], in[3]), t3 = _mm256_unpackhi_ps(in[2], in[3]);
    const R t4 = _mm256_unpacklo_ps(in[4], in[5]), t5 = _mm256_unpackhi_ps(in[4], in[5]);
    const R t6 = _mm256_unpacklo_ps(in[6], in[7]), t7 = _mm256_unpackhi_ps(in[6], in[7]);
    const R u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE);
    const R u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE);
    const R u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xEE);
    const R u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xEE);
    out[0] = _mm256_permute2f128_ps(u0, u4, 0x20);
    out[1] = _mm256_permute2f128_ps(u1, u5, 0x20);
    out[2] = _mm256_permute2f128_ps(u2, u6, 0x20);
    out[3] = _mm256_permute2f128_ps(u3, u7, 0x20);
    out[4] = _mm256_permute2f128_ps(u0, u4, 0x31);
    out[5] = _mm256_permute2f128_ps(u1, u5, 0x31);
    out[6] = _mm256_permute2f128_ps(u2, u6, 0x31);
    out[7] = _mm256_permute2f128_ps(u3, u7, 0x31);
  }
  // 8 int64 labels -> floats (-1 where ignored) and a 1/0 validity vector, without
  // scalar stores that a vector load would then have to wait for. Labels were
  // range-checked already, so the low 32 bits hold the value.
  static FASTREG_INLINE void labels(const int64_t* y, int64_t ignore, R& vy, R& valid) {
    const __m256i lo = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(y));
    const __m256i hi = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(y + 4));
    const __m256i ig = _mm256_set1_epi64x(ignore);
    const __m256i pick = _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7);  // low dwords first
    const __m256i ylo = _mm256_permutevar8x32_epi32(lo, pick), yhi = _mm256_permutevar8x32_epi32(hi, pick);
    const __m256i y32 = _mm256_permute2x128_si256(ylo, yhi, 0x20);
    const __m256i elo = _mm256_permutevar8x32_epi32(_mm256_cmpeq_epi64(lo, ig), pick);
    const __m256i ehi = _mm256_permutevar8x32_epi32(_mm256_cmpeq_epi64(hi, ig), pick);
    const __m256 ign = _mm256_castsi256_ps(_mm256_permute2x128_si256(elo, ehi, 0x20));
    vy = _mm256_blendv_ps(_mm256_cvtepi32_ps(y32), _mm256_set1_ps(-1.0f), ign);
    valid = _mm256_andnot_ps(ign, _mm256_set1_ps(1.0f));
  }
  static FASTREG_INLINE R ge_one(R x, R m) {
    return _mm256_and_ps(_mm256_cmp_ps(x, m, _CMP_GE_OQ), _mm256_set1_ps(1.0f));
  }
  static FASTREG_INLINE R select_eq(R a, R b, R v, R other) {
    return _mm256_blendv_ps(other, v, _mm256_cmp_ps(a, b, _CMP_EQ_OQ));
  }
  static FASTREG_INLINE R mask_nz(R flag, R v) {
    return _mm256_and_ps(_mm256_cmp_ps(flag, _mm256_setzero_ps(), _CMP_NEQ_UQ), v);
  }
  static FASTREG_INLINE void store_double(double* p, R v) {
    _mm256_storeu_pd(p, _mm256_cvtps_pd(_mm256_castps256_ps128(v)));
    _mm256_storeu_pd(p + 4, _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1)));
  }
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
  static constexpr int64_t W = 4, TW = 4;
  static constexpr bool kMaskTail = false;
  static constexpr bool kLaneKernel = true;
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
  static FASTREG_INLINE R exp_shifted(R v) { return exp_shifted_avx2(v); }
  static FASTREG_INLINE R log1p(R v) { return log1p_avx2(v); }
  static FASTREG_INLINE R div(R a, R b) { return _mm256_div_pd(a, b); }
  // 4 x 4 tiles, as Vec<float>'s 8 x 8 ones.
  static FASTREG_INLINE void load_tile(const T* p, int64_t stride, R* cols) {
    R rows[4];
    for (int r = 0; r < 4; ++r) rows[r] = _mm256_loadu_pd(p + r * stride);
    transpose4(rows, cols);
  }
  static FASTREG_INLINE void store_tile(T* p, int64_t stride, const R* cols) {
    R rows[4];
    transpose4(cols, rows);
    for (int r = 0; r < 4; ++r) _mm256_storeu_pd(p + r * stride, rows[r]);
  }
  static FASTREG_INLINE void load_tile_part(const T* p, int64_t stride, int64_t width, R* cols) {
    const __m256i mask = part_mask(width);
    R rows[4];
    for (int r = 0; r < 4; ++r) rows[r] = _mm256_maskload_pd(p + r * stride, mask);
    transpose4(rows, cols);
  }
  static FASTREG_INLINE void store_tile_part(T* p, int64_t stride, int64_t width, const R* cols) {
    const __m256i mask = part_mask(width);
    R rows[4];
    transpose4(cols, rows);
    for (int r = 0; r < 4; ++r) _mm256_maskstore_pd(p + r * stride, mask, rows[r]);
  }
  static FASTREG_INLINE __m256i part_mask(int64_t width) {
    return _mm256_cmpgt_epi64(_mm256_set1_epi64x(width), _mm256_setr_epi64x(0, 1, 2, 3));
  }
  static FASTREG_INLINE void transpose4(const R* in, R* out) {
    const R t0 = _mm256_unpacklo_pd(in[0], in[1]), t1 = _mm256_unpackhi_pd(in[0], in[1]);
    const R t2 = _mm256_unpacklo_pd(in[2], in[3]), t3 = _mm256_unpackhi_pd(in[2], in[3]);
    out[0] = _mm256_permute2f128_pd(t0, t2, 0x20);
    out[1] = _mm256_permute2f128_pd(t1, t3, 0x20);
    out[2] = _mm256_permute2f128_pd(t0, t2, 0x31);
    out[3] = _mm256_permute2f128_pd(t1, t3, 0x31);
  }
  static FASTREG_INLINE void labels(const int64_t* y, int64_t ignore, R& vy, R& valid) {
    const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(y));
    const __m256d ign = _mm256_castsi256_pd(_mm256_cmpeq_epi64(v, _mm256_set1_epi64x(ignore)));
    const __m128i y32 =
        _mm256_castsi256_si128(_mm256_permutevar8x32_epi32(v, _mm256_setr_epi32(0, 2, 4, 6, 0, 2, 4, 6)));
    vy = _mm256_blendv_pd(_mm256_cvtepi32_pd(y32), _mm256_set1_pd(-1.0), ign);
    valid = _mm256_andnot_pd(ign, _mm256_set1_pd(1.0));
  }
  static FASTREG_INLINE R ge_one(R x, R m) {
    return _mm256_and_pd(_mm256_cmp_pd(x, m, _CMP_GE_OQ), _mm256_set1_pd(1.0));
  }
  static FASTREG_INLINE R select_eq(R a, R b, R v, R other) {
    return _mm256_blendv_pd(other, v, _mm256_cmp_pd(a, b, _CMP_EQ_OQ));
  }
  static FASTREG_INLINE R mask_nz(R flag, R v) {
    return _mm256_and_pd(_mm256_cmp_pd(flag, _mm256_setzero_pd(), _CMP_NEQ_UQ), v);
  }
  static FASTREG_INLINE void store_double(double* p, R v) { _mm256_storeu_pd(p, v); }
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
#ifdef FASTREG_EXTRA_ROW_KERNELS
#include FASTREG_EXTRA_ROW_KERNELS
#endif

}  // namespace avx2_rows
#pragma GCC pop_options
#endif

// ---- AVX-512 (F, BW, VL, DQ) policy: 16 floats / 8 doubles, masked row tails ---------
// Row kernels only (C > kLaneMaxC). Small C stays on the AVX2 lane kernel at this
// level: a 16-lane version (16 x 8 tiles from two 8 x 8 transposes, masked partial
// tiles, 16 or 32 rows a block) measured the same as AVX2 (1.00-1.07x, 256 x 10 and
// 65536 x 10, docs/build.md), below the 5% a variant must gain to be kept.
#if FASTREG_HAVE_AVX2_KERNELS
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")
namespace avx512_rows {

template <class T>
struct Vec;

template <>
struct Vec<float> {
  using T = float;
  using R = __m512;
  using Mask = __mmask16;
  static constexpr int64_t W = 16;
  static constexpr bool kMaskTail = true;
  static constexpr bool kLaneKernel = false;  // see the note above
  static FASTREG_INLINE R load(const T* p) { return _mm512_loadu_ps(p); }
  static FASTREG_INLINE void store(T* p, R v) { _mm512_storeu_ps(p, v); }
  static FASTREG_INLINE R set1(T v) { return _mm512_set1_ps(v); }
  static FASTREG_INLINE R zero() { return _mm512_setzero_ps(); }
  static FASTREG_INLINE R add(R a, R b) { return _mm512_add_ps(a, b); }
  static FASTREG_INLINE R sub(R a, R b) { return _mm512_sub_ps(a, b); }
  static FASTREG_INLINE R mul(R a, R b) { return _mm512_mul_ps(a, b); }
  static FASTREG_INLINE R fmadd(R a, R b, R c) { return _mm512_fmadd_ps(a, b, c); }
  static FASTREG_INLINE R max(R a, R b) { return _mm512_max_ps(a, b); }
  static FASTREG_INLINE R mul_nz(R u, R d) {
    return _mm512_maskz_mul_ps(_mm512_cmp_ps_mask(u, _mm512_setzero_ps(), _CMP_NEQ_UQ), u, d);
  }
  static FASTREG_INLINE R exp(R v) { return exp_avx512(v); }
  static FASTREG_INLINE R exp_shifted(R v) { return exp_shifted_avx512(v); }
  static FASTREG_INLINE R log1p(R v) { return log1p_avx512(v); }
  static FASTREG_INLINE R div(R a, R b) { return _mm512_div_ps(a, b); }
  // Masked tails: lanes [0, n) of a vector; loads fill the others with `fill` and
  // never touch their memory.
  static FASTREG_INLINE Mask tail_mask(int64_t n) { return static_cast<Mask>((1u << n) - 1u); }
  static FASTREG_INLINE R load_tail(const T* p, Mask k, T fill) { return _mm512_mask_loadu_ps(set1(fill), k, p); }
  static FASTREG_INLINE void store_tail(T* p, Mask k, R v) { _mm512_mask_storeu_ps(p, k, v); }
  static FASTREG_INLINE R mask_zero(Mask k, R v) { return _mm512_maskz_mov_ps(k, v); }
  // In double, as the AVX2 policy's sums, but as a tree: a chain of 16 adds per row
  // made the per-row overhead larger than AVX2's at C ~ 100.
  static FASTREG_INLINE double hsum(R v) {
    const __m512d d =
        _mm512_add_pd(_mm512_cvtps_pd(_mm512_castps512_ps256(v)), _mm512_cvtps_pd(_mm512_extractf32x8_ps(v, 1)));
    return _mm512_reduce_add_pd(d);
  }
  // A row holding NaN gives NaN whichever lane's max is returned (its sums are NaN).
  static FASTREG_INLINE T hmax(R v) { return _mm512_reduce_max_ps(v); }
};

template <>
struct Vec<double> {
  using T = double;
  using R = __m512d;
  using Mask = __mmask8;
  static constexpr int64_t W = 8;
  static constexpr bool kMaskTail = true;
  static constexpr bool kLaneKernel = false;
  static FASTREG_INLINE R load(const T* p) { return _mm512_loadu_pd(p); }
  static FASTREG_INLINE void store(T* p, R v) { _mm512_storeu_pd(p, v); }
  static FASTREG_INLINE R set1(T v) { return _mm512_set1_pd(v); }
  static FASTREG_INLINE R zero() { return _mm512_setzero_pd(); }
  static FASTREG_INLINE R add(R a, R b) { return _mm512_add_pd(a, b); }
  static FASTREG_INLINE R sub(R a, R b) { return _mm512_sub_pd(a, b); }
  static FASTREG_INLINE R mul(R a, R b) { return _mm512_mul_pd(a, b); }
  static FASTREG_INLINE R fmadd(R a, R b, R c) { return _mm512_fmadd_pd(a, b, c); }
  static FASTREG_INLINE R max(R a, R b) { return _mm512_max_pd(a, b); }
  static FASTREG_INLINE R mul_nz(R u, R d) {
    return _mm512_maskz_mul_pd(_mm512_cmp_pd_mask(u, _mm512_setzero_pd(), _CMP_NEQ_UQ), u, d);
  }
  static FASTREG_INLINE R exp(R v) { return exp_avx512(v); }
  static FASTREG_INLINE R exp_shifted(R v) { return exp_shifted_avx512(v); }
  static FASTREG_INLINE R log1p(R v) { return log1p_avx512(v); }
  static FASTREG_INLINE R div(R a, R b) { return _mm512_div_pd(a, b); }
  static FASTREG_INLINE Mask tail_mask(int64_t n) { return static_cast<Mask>((1u << n) - 1u); }
  static FASTREG_INLINE R load_tail(const T* p, Mask k, T fill) { return _mm512_mask_loadu_pd(set1(fill), k, p); }
  static FASTREG_INLINE void store_tail(T* p, Mask k, R v) { _mm512_mask_storeu_pd(p, k, v); }
  static FASTREG_INLINE R mask_zero(Mask k, R v) { return _mm512_maskz_mov_pd(k, v); }
  static FASTREG_INLINE double hsum(R v) {  // pairwise, as the AVX2 policy's 4 lanes
    alignas(64) double t[8];
    _mm512_store_pd(t, v);
    return ((t[0] + t[1]) + (t[2] + t[3])) + ((t[4] + t[5]) + (t[6] + t[7]));
  }
  static FASTREG_INLINE T hmax(R v) { return _mm512_reduce_max_pd(v); }
};

#include "softmax_rows.inl"
#ifdef FASTREG_EXTRA_ROW_KERNELS
#include FASTREG_EXTRA_ROW_KERNELS
#endif

}  // namespace avx512_rows
#pragma GCC pop_options
#endif

// The level the row kernels run at (scalar where the build has no x86 kernels).
Simd row_level() { return FASTREG_HAVE_AVX2_KERNELS ? active_simd() : Simd::scalar; }

// Rows per thread chunk: ~64K elements, below which a thread costs more than it saves.
int64_t row_grain(int64_t c) { return std::max<int64_t>(1, (int64_t{1} << 16) / std::max<int64_t>(c, 1)); }
