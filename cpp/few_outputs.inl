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
void forward(const typename V::T* x, const typename V::T* w, const typename V::T* b, int64_t n, int64_t in,
             int64_t out, typename V::T* y) {
  const int64_t groups = (out + V::kClasses - 1) / V::kClasses;
  for (int64_t g = 0; g < groups; ++g) {
    const int64_t c0 = out * g / groups, cb = out * (g + 1) / groups - c0;  // even blocks
    const auto* wg = w + c0 * in;
    const auto* bg = b ? b + c0 : nullptr;
    int64_t i = 0;
    for (; i + 2 <= n; i += 2)
      forward_cb<V, 2, V::kClasses>(static_cast<int>(cb), x + i * in, in, wg, bg, y + i * out + c0, out);
    if (i < n) forward_cb<V, 1, V::kClasses>(static_cast<int>(cb), x + i * in, in, wg, bg, y + i * out + c0, out);
  }
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
