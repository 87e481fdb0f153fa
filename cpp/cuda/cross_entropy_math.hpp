// The per-row arithmetic of the CUDA softmax cross-entropy, in functions that nvcc
// compiles for the device and any C++17 compiler for the host. The host copies are
// what fastreg._cuda.cross_entropy_rows_host runs, so CPU tests check these exact
// formulas (and the order partial sums are merged in) against torch float64 with no GPU.
//
// One row of logits x[0..C), class weights w (1 when absent), smoothing eps, z-loss
// scale z, lse = log(sum_j exp(x_j)):
//   class index y:   row = (1-eps) w_y (lse - x_y) + eps/C sum_j w_j (lse - x_j) + z lse^2
//                    d row / d x_j = p_j ((1-eps) w_y + eps/C W) - (1-eps) w_y [j = y]
//                                    - eps/C w_j + 2 z lse p_j,      W = sum_j w_j
//   probabilities t: t'_j = (1-eps) t_j + eps/C,   A = sum_j w_j t'_j
//                    row = sum_j w_j t'_j (lse - x_j) + z lse^2   (t'_j = 0 terms count 0)
//                    d row / d x_j = p_j A - w_j t'_j + 2 z lse p_j
// with p_j = exp(x_j - lse). An ignored row (y = ignore_index) is 0 with a 0 gradient.
#pragma once

#include <math.h>

#if defined(__CUDACC__)
#define FASTREG_HD __host__ __device__ __forceinline__
#else
#define FASTREG_HD inline
#endif

namespace fastreg::cuda::xent {

// Running max m and sum s = sum exp(x - m) of the values seen (online softmax,
// Milakov & Gimelshein 2018). The empty state is m = -inf, s = 0.
// exp and log in the accumulation type (float on the device, float or double here).
FASTREG_HD float ex(float x) { return expf(x); }
FASTREG_HD double ex(double x) { return exp(x); }
FASTREG_HD float lg(float x) { return logf(x); }
FASTREG_HD double lg(double x) { return log(x); }

template <class A>
struct Lse {
  A m;
  A s;
};

template <class A>
FASTREG_HD Lse<A> lse_empty() {
  return {-INFINITY, A(0)};
}

// Adds one value. A -inf value changes nothing; a NaN makes the state NaN.
template <class A>
FASTREG_HD void lse_push(Lse<A>& st, A x) {
  if (x > st.m) {
    // exp(-inf - x) = 0 when the state was empty, so s restarts at 1.
    st.s = st.s * ex(st.m - x) + A(1);
    st.m = x;
  } else if (x == x) {
    if (x != -INFINITY) st.s += ex(x - st.m);
  } else {
    st.m = x;  // NaN: poisons the row, as torch's log_softmax does
    st.s = x;
  }
}

// Merges two states (either may be empty). Associative up to rounding, so the
// order partial states meet in is the only thing the host harness must copy.
template <class A>
FASTREG_HD Lse<A> lse_merge(Lse<A> a, Lse<A> b) {
  if (a.m != a.m || b.m != b.m) return {a.m + b.m, a.m + b.m};  // NaN wins
  if (b.m == -INFINITY) return a;
  if (a.m == -INFINITY) return b;
  if (a.m >= b.m) return {a.m, a.s + b.s * ex(b.m - a.m)};
  return {b.m, b.s + a.s * ex(a.m - b.m)};
}

// log(sum exp(x)): -inf for an empty or all -inf row, +inf when a value was +inf.
template <class A>
FASTREG_HD A lse_value(Lse<A> st) {
  if (st.m == -INFINITY || st.m == INFINITY) return st.m;
  return st.m + lg(st.s);
}

// What a row's gradient needs besides p_j, fixed once per row:
//   grad_j = scale * (p_j * pcoef - [j = y] * tcoef - ucoef * w_j * t'_j-or-1)
// The last term is eps/C * w_j (class index) or w_j * t'_j (probabilities).
template <class A>
struct RowCoef {
  A pcoef;  // multiplies p_j (includes the z-loss's 2 z lse)
  A tcoef;  // subtracted at the target class (class-index targets)
  A ucoef;  // multiplies w_j (class index: eps/C) or w_j t'_j (probabilities: 1)
};

// Class-index row: w_y the target's weight, wsum = W (sum of all weights, C without).
template <class A>
FASTREG_HD RowCoef<A> coef_class(A lse, A w_y, A eps, A c, A wsum, A z) {
  const A u = eps / c;
  return {(A(1) - eps) * w_y + u * wsum + A(2) * z * lse, (A(1) - eps) * w_y, u};
}

// Probability row: wt_sum = A = sum_j w_j t'_j.
template <class A>
FASTREG_HD RowCoef<A> coef_probs(A lse, A wt_sum, A z) {
  return {wt_sum + A(2) * z * lse, A(0), A(1)};
}

// The smoothed target t'_j = (1 - eps) t_j + eps / C.
template <class A>
FASTREG_HD A smooth_target(A t, A eps, A c) {
  return (A(1) - eps) * t + eps / c;
}

// One element of the gradient (before the reduction's scale). `u` is w_j for a
// class-index row (times ucoef = eps/C), w_j t'_j for a probability row.
template <class A>
FASTREG_HD A grad_elem(const RowCoef<A>& k, A x, A lse, bool is_target, A u) {
  const A p = ex(x - lse);
  return p * k.pcoef - (is_target ? k.tcoef : A(0)) - k.ucoef * u;
}

// One element's share of the smoothing / probability loss sum: w (lse - x) for a
// smoothed class-index row (scaled by eps/C at the end), w t' (lse - x) for a
// probability row; a zero target weight counts 0 even where x = -inf.
template <class A>
FASTREG_HD A loss_elem(A wt, A x, A lse) {
  return wt == A(0) ? A(0) : wt * (lse - x);
}

// The row's loss from the partial sums: class index: (1-eps) w_y (lse - x_y)
// + eps/C * smooth_sum + z lse^2; probabilities: prob_sum + z lse^2.
template <class A>
FASTREG_HD A row_loss_class(A lse, A x_y, A w_y, A eps, A c, A smooth_sum, A z) {
  A r = (A(1) - eps) * w_y * (lse - x_y) + z * lse * lse;
  if (eps != A(0)) r += eps / c * smooth_sum;
  return r;
}

template <class A>
FASTREG_HD A row_loss_probs(A lse, A prob_sum, A z) {
  return prob_sum + z * lse * lse;
}

}  // namespace fastreg::cuda::xent
