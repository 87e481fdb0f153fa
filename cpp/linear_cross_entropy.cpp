#include "linear_cross_entropy.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#include "blas.hpp"
#include "runtime.hpp"
#include "simd.hpp"
#include "vexp.hpp"

namespace fastreg {
namespace {

// Default tile sizes. A [rows, cols] logits tile (256 x 256 float: 256 KB) stays in
// L2 between its GEMM and the row statistics. grad_weight is read and written once
// per chunk of rows, so more rows mean less traffic and a larger K for that GEMM:
// at 4096 x 512 x 16000 (2 threads, medians of 4 under load) 256 rows took ~0.85x
// the time of 128 and 64 rows ~1.35x; 512 was a little faster again, but the
// chunk's [rows, v] logits (kept only when gradients are wanted) would then pass
// 3% of the memory the unfused computation needs at n = 4096.
constexpr int64_t kRows = 256;
constexpr int64_t kCols = 256;
// grad_h is summed over the vocabulary in this many fixed groups of tiles (one
// partial [rows, d] each), so that its order of summation never depends on the
// thread count; more groups than threads keeps the threads evenly loaded.
constexpr int64_t kGroups = 8;

struct TileStat {
  double max;         // max of the tile's row (NaN ignored), -inf if none
  double sum;         // sum of exp(z - max) over the tile's row (NaN if the row holds a NaN)
  double zsum;        // sum of z (only with label smoothing)
  int64_t argmax;     // first index of max within the tile (only when wanted)
  int64_t first_nan;  // first NaN within the tile, or -1 (only when wanted)
};

bool use_avx2() { return FASTREG_HAVE_AVX2_KERNELS && active_simd() == Simd::avx2; }

// tanh(u) = sign(u) (1 - 2 / (exp(2 |u|) + 1)): one exp, and 1 for large |u| (exp
// overflows to +inf). Its absolute error is a few ulp of 1, so softcap * tanh
// carries an error of a few ulp of softcap, below that of the GEMM's logits.
template <class T>
FASTREG_INLINE T tanh_via_exp(T u) {
  const T e = exp_scalar<T>(std::fabs(u) * T(2));
  return std::copysign(T(1) - T(2) / (e + T(1)), u);
}

// The slow, rare tails of a tile's statistics, shared by both paths: a tile whose
// max is -inf (all -inf, or NaN) sums to 0 unless it holds a NaN; the argmax and
// the first NaN are found by a scan that stops at the first hit.
template <class T>
TileStat finish_stats(const T* z, int64_t c, T m, double s, double zs, bool want_argmax) {
  TileStat t{static_cast<double>(m), s, zs, -1, -1};
  if (m == -std::numeric_limits<T>::infinity()) {
    t.sum = 0;
    for (int64_t j = 0; j < c; ++j)
      if (z[j] != z[j]) t.sum = std::numeric_limits<double>::quiet_NaN();
  }
  if (want_argmax) {
    for (int64_t j = 0; j < c; ++j)
      if (z[j] == m) {
        t.argmax = j;
        break;
      }
    if (std::isnan(t.sum))
      for (int64_t j = 0; j < c; ++j)
        if (z[j] != z[j]) {
          t.first_nan = j;
          break;
        }
  }
  return t;
}

namespace scalar {

template <class T>
TileStat row_stats(T* z, int64_t c, T cap, bool want_zsum, bool want_argmax) {
  if (cap > 0)
    for (int64_t j = 0; j < c; ++j) z[j] = cap * tanh_via_exp<T>(z[j] / cap);
  T m = -std::numeric_limits<T>::infinity();
  for (int64_t j = 0; j < c; ++j) m = z[j] > m ? z[j] : m;
  double s = 0, zs = 0;
  for (int64_t j = 0; j < c; ++j) s += exp_shifted_scalar(z[j] - m);
  if (want_zsum)
    for (int64_t j = 0; j < c; ++j) zs += z[j];
  return finish_stats(z, c, m, s, zs, want_argmax);
}

// z[j] <- (exp(z[j] - lse) * rk - reps) * (1 - (z[j] / cap)^2) (the last factor with softcap only).
template <class T>
void grad_row(T* z, int64_t c, T lse, T rk, T reps, T cap) {
  for (int64_t j = 0; j < c; ++j) {
    T g = exp_shifted_scalar(z[j] - lse) * rk - reps;
    if (cap > 0) {
      const T q = z[j] / cap;
      g *= T(1) - q * q;
    }
    z[j] = g;
  }
}

}  // namespace scalar

#if FASTREG_HAVE_AVX2_KERNELS
#pragma GCC push_options
#pragma GCC target("avx2,fma")
namespace avx2 {

template <class T>
struct V;

template <>
struct V<float> {
  using R = __m256;
  static constexpr int64_t W = 8;
  static R load(const float* p) { return _mm256_loadu_ps(p); }
  static void store(float* p, R v) { _mm256_storeu_ps(p, v); }
  static R set1(float v) { return _mm256_set1_ps(v); }
  static R add(R a, R b) { return _mm256_add_ps(a, b); }
  static R sub(R a, R b) { return _mm256_sub_ps(a, b); }
  static R mul(R a, R b) { return _mm256_mul_ps(a, b); }
  static R div(R a, R b) { return _mm256_div_ps(a, b); }
  static R fmsub(R a, R b, R c) { return _mm256_fmsub_ps(a, b, c); }
  static R max(R a, R b) { return _mm256_max_ps(a, b); }  // b when a is NaN
  static R exp(R v) { return exp_avx2(v); }
  static R exp_shifted(R v) { return exp_shifted_avx2(v); }
  static R abs(R v) { return _mm256_andnot_ps(_mm256_set1_ps(-0.0f), v); }
  static R copysign(R mag, R sgn) {
    const R s = _mm256_set1_ps(-0.0f);
    return _mm256_or_ps(_mm256_andnot_ps(s, mag), _mm256_and_ps(s, sgn));
  }
  static double hsum(R v) {
    alignas(32) float t[8];
    _mm256_store_ps(t, v);
    double s = 0;
    for (float f : t) s += f;
    return s;
  }
  static float hmax(R v) {
    alignas(32) float t[8];
    _mm256_store_ps(t, v);
    float m = t[0];
    for (float f : t) m = f > m ? f : m;
    return m;
  }
};

template <>
struct V<double> {
  using R = __m256d;
  static constexpr int64_t W = 4;
  static R load(const double* p) { return _mm256_loadu_pd(p); }
  static void store(double* p, R v) { _mm256_storeu_pd(p, v); }
  static R set1(double v) { return _mm256_set1_pd(v); }
  static R add(R a, R b) { return _mm256_add_pd(a, b); }
  static R sub(R a, R b) { return _mm256_sub_pd(a, b); }
  static R mul(R a, R b) { return _mm256_mul_pd(a, b); }
  static R div(R a, R b) { return _mm256_div_pd(a, b); }
  static R fmsub(R a, R b, R c) { return _mm256_fmsub_pd(a, b, c); }
  static R max(R a, R b) { return _mm256_max_pd(a, b); }
  static R exp(R v) { return exp_avx2(v); }
  static R exp_shifted(R v) { return exp_shifted_avx2(v); }
  static R abs(R v) { return _mm256_andnot_pd(_mm256_set1_pd(-0.0), v); }
  static R copysign(R mag, R sgn) {
    const R s = _mm256_set1_pd(-0.0);
    return _mm256_or_pd(_mm256_andnot_pd(s, mag), _mm256_and_pd(s, sgn));
  }
  static double hsum(R v) {
    alignas(32) double t[4];
    _mm256_store_pd(t, v);
    return (t[0] + t[1]) + (t[2] + t[3]);
  }
  static double hmax(R v) {
    alignas(32) double t[4];
    _mm256_store_pd(t, v);
    double m = t[0];
    for (double f : t) m = f > m ? f : m;
    return m;
  }
};

template <class T>
TileStat row_stats(T* z, int64_t c, T cap, bool want_zsum, bool want_argmax) {
  using P = V<T>;
  using R = typename P::R;
  constexpr int64_t W = P::W;
  const int64_t cv = c - c % W;
  if (cap > 0) {
    const R vc = P::set1(cap), one = P::set1(T(1)), two = P::set1(T(2));
    for (int64_t j = 0; j < cv; j += W) {
      const R u = P::div(P::load(z + j), vc);
      const R e = P::exp(P::mul(P::abs(u), two));
      P::store(z + j, P::mul(vc, P::copysign(P::sub(one, P::div(two, P::add(e, one))), u)));
    }
    for (int64_t j = cv; j < c; ++j) z[j] = cap * tanh_via_exp<T>(z[j] / cap);
  }
  R vm = P::set1(-std::numeric_limits<T>::infinity());
  for (int64_t j = 0; j < cv; j += W) vm = P::max(P::load(z + j), vm);
  T m = P::hmax(vm);
  for (int64_t j = cv; j < c; ++j) m = z[j] > m ? z[j] : m;
  const R mm = P::set1(m);
  R vs = P::set1(T(0)), vz = P::set1(T(0));
  for (int64_t j = 0; j < cv; j += W) vs = P::add(vs, P::exp_shifted(P::sub(P::load(z + j), mm)));
  double s = P::hsum(vs), zs = 0;
  for (int64_t j = cv; j < c; ++j) s += exp_shifted_scalar(z[j] - m);
  if (want_zsum) {
    for (int64_t j = 0; j < cv; j += W) vz = P::add(vz, P::load(z + j));
    zs = P::hsum(vz);
    for (int64_t j = cv; j < c; ++j) zs += z[j];
  }
  return finish_stats(z, c, m, s, zs, want_argmax);
}

template <class T>
void grad_row(T* z, int64_t c, T lse, T rk, T reps, T cap) {
  using P = V<T>;
  using R = typename P::R;
  constexpr int64_t W = P::W;
  const int64_t cv = c - c % W;
  const R vl = P::set1(lse), vk = P::set1(rk), ve = P::set1(reps);
  if (cap > 0) {
    const R vc = P::set1(cap), one = P::set1(T(1));
    for (int64_t j = 0; j < cv; j += W) {
      const R x = P::load(z + j), q = P::div(x, vc);
      const R g = P::fmsub(P::exp_shifted(P::sub(x, vl)), vk, ve);
      P::store(z + j, P::mul(g, P::sub(one, P::mul(q, q))));
    }
  } else {
    for (int64_t j = 0; j < cv; j += W) P::store(z + j, P::fmsub(P::exp_shifted(P::sub(P::load(z + j), vl)), vk, ve));
  }
  scalar::grad_row(z + cv, c - cv, lse, rk, reps, cap);
}

}  // namespace avx2
#pragma GCC pop_options
#endif

template <class T>
TileStat row_stats(bool avx2, T* z, int64_t c, T cap, bool want_zsum, bool want_argmax) {
#if FASTREG_HAVE_AVX2_KERNELS
  if (avx2) return avx2::row_stats<T>(z, c, cap, want_zsum, want_argmax);
#endif
  (void)avx2;
  return scalar::row_stats<T>(z, c, cap, want_zsum, want_argmax);
}

template <class T>
void grad_row(bool avx2, T* z, int64_t c, T lse, T rk, T reps, T cap) {
#if FASTREG_HAVE_AVX2_KERNELS
  if (avx2) return avx2::grad_row<T>(z, c, lse, rk, reps, cap);
#endif
  (void)avx2;
  scalar::grad_row<T>(z, c, lse, rk, reps, cap);
}

[[noreturn]] __attribute__((noinline, cold)) void throw_bad_target(int64_t y, int64_t row, int64_t v, int64_t ignore) {
  throw std::out_of_range("Target " + std::to_string(y) + " at row " + std::to_string(row) +
                          " is out of bounds: class indices must be in [0, " + std::to_string(v) +
                          ") or equal ignore_index (" + std::to_string(ignore) + ")");
}

}  // namespace

LinearXentTiles linear_cross_entropy_tiles(int64_t n, int64_t v, LinearXentTiles req) {
  LinearXentTiles t;
  t.rows = std::max<int64_t>(1, std::min<int64_t>(req.rows > 0 ? req.rows : kRows, std::max<int64_t>(n, 1)));
  t.cols = std::max<int64_t>(1, std::min<int64_t>(req.cols > 0 ? req.cols : kCols, std::max<int64_t>(v, 1)));
  return t;
}

template <class T>
double linear_cross_entropy(const LinearXentArgs<T>& a, LinearXentTiles req) {
  if (a.n < 0 || a.d < 0 || a.v < 0) throw std::invalid_argument("linear_cross_entropy: need n, d, v >= 0");
  if (!(a.label_smoothing >= 0.0 && a.label_smoothing <= 1.0))
    throw std::invalid_argument("linear_cross_entropy: label_smoothing must be in [0, 1]");
  if (!(a.softcap >= 0.0) || std::isinf(a.softcap))
    throw std::invalid_argument("linear_cross_entropy: softcap must be finite and > 0 (0 for none)");
  if (!std::isfinite(a.lse_square_scale))
    throw std::invalid_argument("linear_cross_entropy: lse_square_scale must be finite");
  const int64_t n = a.n, d = a.d, v = a.v;
  int64_t kept = 0;
  for (int64_t i = 0; i < n; ++i) {
    const int64_t y = a.target[i];
    if (y == a.ignore_index) continue;
    if (static_cast<uint64_t>(y) >= static_cast<uint64_t>(v)) throw_bad_target(y, i, v, a.ignore_index);
    ++kept;
  }

  const bool want_gh = a.grad_h != nullptr, want_gw = a.grad_weight != nullptr;
  const bool want_gb = a.grad_bias != nullptr && a.bias != nullptr;
  const bool grad = want_gh || want_gw || want_gb;
  const bool mean = a.reduction == Reduction::mean;
  const double eps = a.label_smoothing, zscale = a.lse_square_scale;
  const T cap = static_cast<T>(a.softcap);
  const double r = mean ? a.grad_scale / static_cast<double>(kept) : a.grad_scale;

  if (n == 0 || v == 0) {  // no rows, or (v == 0) every row ignored: zero gradients; a mean over nothing is NaN
    if (want_gh) std::fill(a.grad_h, a.grad_h + n * d, T(0));
    if (want_gw) std::fill(a.grad_weight, a.grad_weight + v * d, T(0));
    if (want_gb) std::fill(a.grad_bias, a.grad_bias + v, T(0));
    if (a.row_loss) std::fill(a.row_loss, a.row_loss + n, T(0));
    if (a.lse) std::fill(a.lse, a.lse + n, -std::numeric_limits<T>::infinity());  // log of an empty sum
    if (a.argmax) std::fill(a.argmax, a.argmax + n, int64_t{-1});
    return mean ? std::numeric_limits<double>::quiet_NaN() : 0.0;
  }

  const LinearXentTiles tiles = linear_cross_entropy_tiles(n, v, req);
  const int64_t R = tiles.rows, C = tiles.cols, ntiles = (v + C - 1) / C;
  const int64_t groups = std::min(ntiles, kGroups);
  const bool avx2 = use_avx2();
  const bool want_zsum = eps > 0, want_argmax = a.argmax != nullptr;

  std::vector<T> logits(grad ? static_cast<size_t>(R * v) : 0);  // the chunk's logits, then their gradient
  std::vector<TileStat> stats(static_cast<size_t>(ntiles * R));
  std::vector<double> row_lse(static_cast<size_t>(R)), losses(static_cast<size_t>(n));
  std::vector<T> zy(static_cast<size_t>(R));
  std::vector<T> partial(want_gh ? static_cast<size_t>(groups * R * d) : 0);
  std::vector<double> gb_acc(want_gb ? static_cast<size_t>(v) : 0, 0.0);

  for (int64_t r0 = 0; r0 < n; r0 += R) {
    const int64_t rc = std::min(R, n - r0);
    const T* hc = a.h + r0 * d;
    const int64_t* yc = a.target + r0;

    // (A) logits tile by tile, each folded into its rows' statistics while in cache.
    parallel_for(ntiles, 1, [&](int64_t tb, int64_t te) {
      const BlasThreads single(1);  // parallel over tiles: each GEMM on the thread that owns it
      thread_local std::vector<T> scratch;
      for (int64_t t = tb; t < te; ++t) {
        const int64_t j0 = t * C, c = std::min(C, v - j0);
        T* z;
        int64_t ld;
        if (grad) {
          z = logits.data() + j0;
          ld = v;
        } else {
          if (scratch.size() < static_cast<size_t>(R * C)) scratch.resize(static_cast<size_t>(R * C));
          z = scratch.data();
          ld = c;
        }
        if (a.bias)
          for (int64_t i = 0; i < rc; ++i) std::copy(a.bias + j0, a.bias + j0 + c, z + i * ld);
        gemm<T>(false, true, rc, c, d, T(1), hc, d, a.weight + j0 * d, d, a.bias ? T(1) : T(0), z, ld);
        for (int64_t i = 0; i < rc; ++i) {
          T* row = z + i * ld;
          stats[static_cast<size_t>(t * R + i)] = row_stats<T>(avx2, row, c, cap, want_zsum, want_argmax);
          const int64_t y = yc[i];
          if (y != a.ignore_index && y >= j0 && y < j0 + c) zy[static_cast<size_t>(i)] = row[y - j0];
        }
      }
    });

    // (B) each row's log-sum-exp from its tiles' statistics, in tile order, and its loss.
    for (int64_t i = 0; i < rc; ++i) {
      double m = -std::numeric_limits<double>::infinity(), zsum = 0;
      for (int64_t t = 0; t < ntiles; ++t) m = std::max(m, stats[static_cast<size_t>(t * R + i)].max);
      double s = 0;
      int64_t am = -1, first_nan = -1;
      for (int64_t t = 0; t < ntiles; ++t) {
        const TileStat& st = stats[static_cast<size_t>(t * R + i)];
        if (st.sum != 0) s += st.sum * std::exp(st.max - m);  // NaN sums pass through
        zsum += st.zsum;
        if (want_argmax) {
          if (first_nan < 0 && st.first_nan >= 0) first_nan = t * C + st.first_nan;
          if (am < 0 && st.max == m && st.argmax >= 0) am = t * C + st.argmax;
        }
      }
      const double lse = m + std::log(s);
      row_lse[static_cast<size_t>(i)] = lse;
      if (a.lse) a.lse[r0 + i] = static_cast<T>(lse);
      if (want_argmax) a.argmax[r0 + i] = first_nan >= 0 ? first_nan : std::max<int64_t>(am, 0);
      double loss = 0;
      if (yc[i] != a.ignore_index) {
        const double nll = lse - static_cast<double>(zy[static_cast<size_t>(i)]);
        loss = eps > 0 ? (1 - eps) * nll + eps * (lse - zsum / static_cast<double>(v)) : nll;
        if (zscale != 0) loss += zscale * lse * lse;
      }
      losses[static_cast<size_t>(r0 + i)] = loss;
    }
    if (!grad) continue;

    // (C) each tile's gradient, formed in place and consumed at once by the backward GEMMs.
    parallel_for(groups, 1, [&](int64_t gb, int64_t ge) {
      const BlasThreads single(1);
      for (int64_t g = gb; g < ge; ++g) {
        T* part = want_gh ? partial.data() + g * R * d : nullptr;
        bool first = true;
        for (int64_t t = ntiles * g / groups; t < ntiles * (g + 1) / groups; ++t) {
          const int64_t j0 = t * C, c = std::min(C, v - j0);
          T* G = logits.data() + j0;
          for (int64_t i = 0; i < rc; ++i) {
            T* row = G + i * v;
            const int64_t y = yc[i];
            if (y == a.ignore_index) {
              std::fill(row, row + c, T(0));
              continue;
            }
            const double lse = row_lse[static_cast<size_t>(i)];
            grad_row<T>(avx2, row, c, static_cast<T>(lse), static_cast<T>(r * (1 + 2 * zscale * lse)),
                        static_cast<T>(r * eps / static_cast<double>(v)), cap);
            if (y >= j0 && y < j0 + c) {
              T f = T(1);
              if (cap > 0) {
                const T q = zy[static_cast<size_t>(i)] / cap;
                f = T(1) - q * q;
              }
              row[y - j0] -= static_cast<T>(r * (1 - eps)) * f;
            }
          }
          if (want_gb)
            for (int64_t i = 0; i < rc; ++i)
              for (int64_t j = 0; j < c; ++j) gb_acc[static_cast<size_t>(j0 + j)] += G[i * v + j];
          if (want_gw)  // grad_weight[tile] (+)= G^T h_chunk, chunks in order
            gemm<T>(true, false, c, d, rc, T(1), G, v, hc, d, r0 == 0 ? T(0) : T(1), a.grad_weight + j0 * d, d);
          if (want_gh) {  // this group's partial grad_h (+)= G W[tile]
            gemm<T>(false, false, rc, d, c, T(1), G, v, a.weight + j0 * d, d, first ? T(0) : T(1), part, d);
            first = false;
          }
        }
      }
    });

    // (D) grad_h of the chunk: the groups' partials summed in group order.
    if (want_gh)
      parallel_for(rc, std::max<int64_t>(1, 16384 / std::max<int64_t>(d, 1)), [&](int64_t ib, int64_t ie) {
        for (int64_t i = ib; i < ie; ++i) {
          T* out = a.grad_h + (r0 + i) * d;
          const T* p0 = partial.data() + i * d;
          std::copy(p0, p0 + d, out);
          for (int64_t g = 1; g < groups; ++g) {
            const T* p = partial.data() + g * R * d + i * d;
            for (int64_t k = 0; k < d; ++k) out[k] += p[k];
          }
        }
      });
  }

  if (want_gb)
    for (int64_t j = 0; j < v; ++j) a.grad_bias[j] = static_cast<T>(gb_acc[static_cast<size_t>(j)]);
  if (a.row_loss)
    for (int64_t i = 0; i < n; ++i) a.row_loss[i] = static_cast<T>(losses[static_cast<size_t>(i)]);
  const double total = ordered_sum(losses.data(), n);
  return mean ? total / static_cast<double>(kept) : total;
}

template double linear_cross_entropy<float>(const LinearXentArgs<float>&, LinearXentTiles);
template double linear_cross_entropy<double>(const LinearXentArgs<double>&, LinearXentTiles);

}  // namespace fastreg
