// The few-outputs linear kernels (linear.cpp), written once over a vector policy V
// and included inside each SIMD target region, so every instantiation carries that
// region's instruction set. V gives T, the register type R, its width W, the class
// block kClasses (how many outputs' accumulators fit in the registers for two rows
// or two vectors), Mask/tail_mask/load_tail/store_tail for the last partial vector,
// load/store/set1/zero/fmadd and hsum.

// y rows [R) x outputs [CB): dot products of R rows of x with CB rows of w, all of
// `in` long, accumulated in R * CB registers so each loaded w vector feeds R
// multiply-adds and each x vector CB.
template <class V, int R, int CB>
FASTREG_INLINE void forward_block(const typename V::T* x, int64_t in, const typename V::T* w,
                                  const typename V::T* b, typename V::T* y, int64_t ldy) {
  using Reg = typename V::R;
  Reg acc[R][CB];
  for (int r = 0; r < R; ++r)
    for (int j = 0; j < CB; ++j) acc[r][j] = V::zero();
  int64_t k = 0;
  for (; k + V::W <= in; k += V::W) {
    Reg xv[R];
    for (int r = 0; r < R; ++r) xv[r] = V::load(x + r * in + k);
    for (int j = 0; j < CB; ++j) {
      Reg wv = V::load(w + j * in + k);
      // One load feeding R multiply-adds: GCC otherwise folds the load into each
      // of them, which doubles the loads and makes the loop bound by them.
      if constexpr (R > 1) asm("" : "+v"(wv));
      for (int r = 0; r < R; ++r) acc[r][j] = V::fmadd(xv[r], wv, acc[r][j]);
    }
  }
  if (k < in) {  // masked lanes load as 0 and add nothing
    const auto m = V::tail_mask(in - k);
    Reg xv[R];
    for (int r = 0; r < R; ++r) xv[r] = V::load_tail(x + r * in + k, m);
    for (int j = 0; j < CB; ++j) {
      const Reg wv = V::load_tail(w + j * in + k, m);
      for (int r = 0; r < R; ++r) acc[r][j] = V::fmadd(xv[r], wv, acc[r][j]);
    }
  }
  for (int r = 0; r < R; ++r)
    for (int j = 0; j < CB; ++j) y[r * ldy + j] = V::hsum(acc[r][j]) + (b ? b[j] : typename V::T(0));
}

// forward_block for a run-time class count cb in [1, CB].
template <class V, int R, int CB>
FASTREG_INLINE void forward_cb(int cb, const typename V::T* x, int64_t in, const typename V::T* w,
                               const typename V::T* b, typename V::T* y, int64_t ldy) {
  if constexpr (CB >= 1) {
    if (cb == CB) return forward_block<V, R, CB>(x, in, w, b, y, ldy);
    forward_cb<V, R, CB - 1>(cb, x, in, w, b, y, ldy);
  }
}

// Outputs in blocks of at most V::kClasses (w's block stays in L1 while every row
// passes), rows two at a time.
template <class V>
int64_t class_groups(int64_t out) {
  return (out + V::kClasses - 1) / V::kClasses;
}

// Outputs [c0, c0 + cb) of group g of `groups` (even blocks).
template <class V>
void forward_group(const typename V::T* x, const typename V::T* w, const typename V::T* b, int64_t n, int64_t in,
                   int64_t out, typename V::T* y, int64_t g, int64_t groups) {
  const int64_t c0 = out * g / groups, cb = out * (g + 1) / groups - c0;
  const auto* wg = w + c0 * in;
  const auto* bg = b ? b + c0 : nullptr;
  int64_t i = 0;
  for (; i + 2 <= n; i += 2)
    forward_cb<V, 2, V::kClasses>(static_cast<int>(cb), x + i * in, in, wg, bg, y + i * out + c0, out);
  if (i < n) forward_cb<V, 1, V::kClasses>(static_cast<int>(cb), x + i * in, in, wg, bg, y + i * out + c0, out);
}

template <class V>
void forward(const typename V::T* x, const typename V::T* w, const typename V::T* b, int64_t n, int64_t in,
             int64_t out, typename V::T* y) {
  const int64_t groups = class_groups<V>(out);
  for (int64_t g = 0; g < groups; ++g) forward_group<V>(x, w, b, n, in, out, y, g, groups);
}

// gw[CB outputs, S vectors of `in` from k] (+)= sum over the n rows of gy[i, j] * x[i, k...]:
// the CB x S block of gw stays in registers while every row passes once, so each
// x vector feeds CB multiply-adds and each broadcast gradient S. Tail: S == 1 and
// the vector is the last, partial one (lanes [0, m)).
template <class V, int CB, int S, bool Tail>
FASTREG_INLINE void grad_block(const typename V::T* x, int64_t in, const typename V::T* gy, int64_t out, int64_t n,
                               typename V::T* gw, bool accumulate, typename V::Mask m) {
  using Reg = typename V::R;
  Reg acc[CB][S];
  for (int j = 0; j < CB; ++j)
    for (int s = 0; s < S; ++s) {
      if (!accumulate) acc[j][s] = V::zero();
      else if (Tail) acc[j][s] = V::load_tail(gw + j * in, m);
      else acc[j][s] = V::load(gw + j * in + s * V::W);
    }
  for (int64_t i = 0; i < n; ++i) {
    Reg xv[S];
    for (int s = 0; s < S; ++s) xv[s] = Tail ? V::load_tail(x + i * in, m) : V::load(x + i * in + s * V::W);
    const auto* g = gy + i * out;
    for (int j = 0; j < CB; ++j) {
      const Reg gj = V::set1(g[j]);
      for (int s = 0; s < S; ++s) acc[j][s] = V::fmadd(gj, xv[s], acc[j][s]);
    }
  }
  for (int j = 0; j < CB; ++j)
    for (int s = 0; s < S; ++s) {
      if (Tail) V::store_tail(gw + j * in, m, acc[j][s]);
      else V::store(gw + j * in + s * V::W, acc[j][s]);
    }
}

template <class V, int CB, int S, bool Tail>
FASTREG_INLINE void grad_cb(int cb, const typename V::T* x, int64_t in, const typename V::T* gy, int64_t out,
                            int64_t n, typename V::T* gw, bool accumulate, typename V::Mask m) {
  if constexpr (CB >= 1) {
    if (cb == CB) return grad_block<V, CB, S, Tail>(x, in, gy, out, n, gw, accumulate, m);
    grad_cb<V, CB - 1, S, Tail>(cb, x, in, gy, out, n, gw, accumulate, m);
  }
}

// Column slabs of two vectors, then one, then the masked tail; outputs in blocks.
template <class V>
void weight_grad(const typename V::T* x, const typename V::T* gy, int64_t n, int64_t in, int64_t out,
                 typename V::T* gw, bool accumulate) {
  const int64_t groups = (out + V::kClasses - 1) / V::kClasses;
  const auto none = V::tail_mask(V::W);
  for (int64_t g = 0; g < groups; ++g) {
    const int64_t c0 = out * g / groups;
    const int cb = static_cast<int>(out * (g + 1) / groups - c0);
    const auto* gyg = gy + c0;
    auto* gwg = gw + c0 * in;
    int64_t k = 0;
    for (; k + 2 * V::W <= in; k += 2 * V::W)
      grad_cb<V, V::kClasses, 2, false>(cb, x + k, in, gyg, out, n, gwg + k, accumulate, none);
    for (; k + V::W <= in; k += V::W)
      grad_cb<V, V::kClasses, 1, false>(cb, x + k, in, gyg, out, n, gwg + k, accumulate, none);
    if (k < in)
      grad_cb<V, V::kClasses, 1, true>(cb, x + k, in, gyg, out, n, gwg + k, accumulate, V::tail_mask(in - k));
  }
}

// forward_block over R rows read from scattered sources src[r] (rows of X), each
// also copied to dst (consecutive rows, for the weight gradient that follows), while
// its vectors are in registers: the gather and the forward in one pass. ahead[r]: a
// row whose lines are prefetched alongside (the row itself when there is none to
// fetch). With Check, returns the first row holding NaN/inf, else -1. Every element
// of a row enters each of its products, and a NaN or inf makes them NaN or +-inf
// (inf * 0 is NaN), so only a row with a product that is not finite is read again,
// to tell NaN/inf from an overflow of finite values.
template <class V, int R, int CB, bool Check>
FASTREG_INLINE int gather_forward_block(const typename V::T* const* src, const typename V::T* const* ahead, int64_t in,
                                        const typename V::T* w, const typename V::T* b, typename V::T* y, int64_t ldy,
                                        typename V::T* dst) {
  using Reg = typename V::R;
  using T = typename V::T;
  Reg acc[R][CB];
  for (int r = 0; r < R; ++r)
    for (int j = 0; j < CB; ++j) acc[r][j] = V::zero();
  int64_t k = 0;
  for (; k + V::W <= in; k += V::W) {
    Reg xv[R];
    for (int r = 0; r < R; ++r) {
      __builtin_prefetch(ahead[r] + k, 0, 2);
      xv[r] = V::load(src[r] + k);
      V::store(dst + r * in + k, xv[r]);
    }
    for (int j = 0; j < CB; ++j) {
      Reg wv = V::load(w + j * in + k);
      if constexpr (R > 1) asm("" : "+v"(wv));
      for (int r = 0; r < R; ++r) acc[r][j] = V::fmadd(xv[r], wv, acc[r][j]);
    }
  }
  if (k < in) {
    const auto m = V::tail_mask(in - k);
    Reg xv[R];
    for (int r = 0; r < R; ++r) {
      xv[r] = V::load_tail(src[r] + k, m);
      V::store_tail(dst + r * in + k, m, xv[r]);
    }
    for (int j = 0; j < CB; ++j) {
      const Reg wv = V::load_tail(w + j * in + k, m);
      for (int r = 0; r < R; ++r) acc[r][j] = V::fmadd(xv[r], wv, acc[r][j]);
    }
  }
  for (int r = 0; r < R; ++r)
    for (int j = 0; j < CB; ++j) y[r * ldy + j] = V::hsum(acc[r][j]) + (b ? b[j] : T(0));
  if constexpr (Check) {
    for (int r = 0; r < R; ++r) {
      T probe = 0;  // y * 0 is NaN exactly for a y that is NaN/inf
      for (int j = 0; j < CB; ++j) probe += y[r * ldy + j] * T(0);
      if (probe != probe && !std::all_of(dst + r * in, dst + (r + 1) * in, [](T v) { return std::isfinite(v); })) return r;
    }
  }
  return -1;
}

template <class V, int R, int CB, bool Check>
FASTREG_INLINE int gather_forward_cb(int cb, const typename V::T* const* src, const typename V::T* const* ahead,
                                     int64_t in, const typename V::T* w, const typename V::T* b, typename V::T* y,
                                     int64_t ldy, typename V::T* dst) {
  if constexpr (CB >= 1) {
    if (cb == CB) return gather_forward_block<V, R, CB, Check>(src, ahead, in, w, b, y, ldy, dst);
    return gather_forward_cb<V, R, CB - 1, Check>(cb, src, ahead, in, w, b, y, ldy, dst);
  }
  return -1;
}

// Rows idx[0, n) of x gathered into xb and multiplied by w, two rows at a time,
// prefetching the rows kAhead further on into L2 (prefetcht1, as gather_lines in
// memory.hpp does; into L1 the whole epoch ran slower, docs/models.md): the first
// block of outputs during the gather, any others from xb after it. Returns the first
// of the n rows holding NaN/inf (Check), or -1.
template <class V, bool Check>
int64_t gather_forward(const typename V::T* x, const int64_t* idx, int64_t n, int64_t in, const typename V::T* w,
                       const typename V::T* b, int64_t out, typename V::T* xb, typename V::T* y) {
  using T = typename V::T;
  constexpr int64_t kAhead = 4;  // rows: 2, 6 and 8 measured the same
  const int64_t groups = class_groups<V>(out);
  const int cb = static_cast<int>(out / groups);  // group 0's outputs (forward_group's even blocks)
  int64_t i = 0;
  for (; i + 2 <= n; i += 2) {
    const T* src[2] = {x + idx[i] * in, x + idx[i + 1] * in};
    const T* ahead[2] = {i + kAhead < n ? x + idx[i + kAhead] * in : src[0],
                         i + 1 + kAhead < n ? x + idx[i + 1 + kAhead] * in : src[1]};
    const int bad = gather_forward_cb<V, 2, V::kClasses, Check>(cb, src, ahead, in, w, b, y + i * out, out, xb + i * in);
    if (bad >= 0) return i + bad;
  }
  if (i < n) {
    const T* src[1] = {x + idx[i] * in};
    const int bad = gather_forward_cb<V, 1, V::kClasses, Check>(cb, src, src, in, w, b, y + i * out, out, xb + i * in);
    if (bad >= 0) return i + bad;
  }
  for (int64_t g = 1; g < groups; ++g) forward_group<V>(xb, w, b, n, in, out, y, g, groups);
  return -1;
}
