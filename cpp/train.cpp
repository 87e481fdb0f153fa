#include "train.hpp"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstddef>
#include <type_traits>
#include <vector>

#include "blas.hpp"
#include "linear.hpp"
#include "loader.hpp"
#include "runtime.hpp"
#include "softmax_xent.hpp"

namespace fastreg {
namespace {

// Copies the batch's rows of X into xb [bs, d] (row-major, T), scaling u8.
// The gathered batch (256 x 784 floats = 800 KB) stays in L2 for the forward
// and the backward GEMM, so X itself is read once per epoch.
template <class T>
void gather_batch(const EpochArgs<T>& a, const int64_t* idx, int64_t bs, T* xb) {
  if (a.source == Source::u8) {
    if constexpr (std::is_same_v<T, float>)
      gather_rows_u8_to_f32(static_cast<const uint8_t*>(a.x), a.d, idx, bs, a.scale, xb);
  } else {
    gather_rows(a.x, a.d * static_cast<int64_t>(sizeof(T)), idx, bs, xb);
  }
}

template <class T>
void ensure_scratch(BatchScratch<T>& s, int64_t rows, int64_t d, int64_t c) {
  // Grown to the largest batch seen; later batches reuse it (no allocation per step).
  auto grow = [](auto& v, int64_t n) {
    if (v.size() < static_cast<size_t>(n)) v.resize(static_cast<size_t>(n));
  };
  grow(s.xb, rows * d);
  grow(s.out, rows * c);
  grow(s.yb, rows);
}

}  // namespace

template <class T>
BatchResult softmax_batch_grad(const EpochArgs<T>& a, const int64_t* y, T* grad, BatchScratch<T>& s) {
  BatchResult r;
  const int64_t bs = a.n_order;
  const int64_t* idx = a.order;
  ensure_scratch(s, bs, a.d, a.c);
  T* xb = s.xb.data();
  T* logits = s.out.data();
  gather_batch(a, idx, bs, xb);
  for (int64_t i = 0; i < bs; ++i) s.yb[static_cast<size_t>(i)] = y[idx[i]];
  linear_forward<T>(xb, a.w, a.b, bs, a.d, a.c, logits);
  // Accuracy from the logits before the loss kernel overwrites them with the
  // gradient (first maximum wins, as torch.argmax).
  for (int64_t i = 0; i < bs; ++i) {
    const T* z = logits + i * a.c;
    r.correct += (std::max_element(z, z + a.c) - z) == s.yb[static_cast<size_t>(i)];
  }
  XentArgs<T> xa;
  xa.logits = logits;
  xa.n = bs;
  xa.c = a.c;
  xa.target = s.yb.data();
  xa.reduction = Reduction::mean;
  xa.grad = logits;  // in place: d(mean loss)/d(logits)
  const double loss = softmax_cross_entropy<T>(xa);
  if (!std::isfinite(loss)) {
    r.finite = false;
    return r;
  }
  r.loss_sum = loss * static_cast<double>(bs);
  linear_backward<T>(xb, a.w, logits, bs, a.d, a.c, grad, grad + a.c * a.d, nullptr, false);
  return r;
}

template <class T>
BatchResult regression_batch_grad(const EpochArgs<T>& a, const T* y, RegressionLoss kind, T* grad,
                                  BatchScratch<T>& s) {
  BatchResult r;
  const int64_t bs = a.n_order;
  const int64_t* idx = a.order;
  ensure_scratch(s, bs, a.d, 1);
  T* xb = s.xb.data();
  T* pred = s.out.data();
  gather_batch(a, idx, bs, xb);
  linear_forward<T>(xb, a.w, a.b, bs, a.d, 1, pred);
  // Loss and d(mean loss)/d(pred), written over pred.
  double loss = 0.0;
  const T inv = T(1) / static_cast<T>(bs);
  for (int64_t i = 0; i < bs; ++i) {
    const T res = pred[i] - y[idx[i]], ares = std::abs(res);
    T g;
    if (kind == RegressionLoss::squared || (kind == RegressionLoss::huber && ares <= T(1))) {
      loss += 0.5 * double(res) * double(res);
      g = res;
    } else {
      loss += kind == RegressionLoss::l1 ? double(ares) : double(ares) - 0.5;
      g = res > T(0) ? T(1) : res < T(0) ? T(-1) : T(0);  // sign, 0 at 0 as torch
    }
    pred[i] = g * inv;
  }
  if (!std::isfinite(loss)) {
    r.finite = false;
    return r;
  }
  r.loss_sum = loss;
  linear_backward<T>(xb, a.w, pred, bs, a.d, 1, grad, grad + a.d, nullptr, false);
  return r;
}

template <class T>
void linear_sgd_step(const EpochArgs<T>& a, const T* grad, bool first) {
  sgd_update<T>(a.w, grad, a.w_buf, a.c * a.d, a.opt, first);
  SgdOptions no_decay = a.opt;
  no_decay.weight_decay = 0.0;
  sgd_update<T>(a.b, grad + a.c * a.d, a.b_buf, a.c, no_decay, first);
}

namespace {

// Runs batch_grad + SGD over consecutive batch_size slices of a.order.
template <class T, class BatchGrad>
EpochResult run_epoch(const EpochArgs<T>& a, BatchGrad&& batch_grad) {
  const BlasThreads single(1);
  EpochResult r;
  BatchScratch<T> s;
  std::vector<T> grad(static_cast<size_t>(a.c * a.d + a.c));
  bool first = a.first_step;
  for (int64_t start = 0; start < a.n_order; start += a.batch_size) {
    EpochArgs<T> batch = a;
    batch.order = a.order + start;
    batch.n_order = std::min(a.batch_size, a.n_order - start);
    const BatchResult br = batch_grad(batch, grad.data(), s);
    if (!br.finite) {
      r.finite = false;
      return r;
    }
    r.loss_sum += br.loss_sum;
    r.correct += br.correct;
    r.rows += batch.n_order;
    linear_sgd_step(a, grad.data(), first);
    first = false;
  }
  return r;
}

}  // namespace

template <class T>
EpochResult softmax_epoch(const EpochArgs<T>& a, const int64_t* y) {
  return run_epoch(a, [y](const EpochArgs<T>& b, T* g, BatchScratch<T>& s) { return softmax_batch_grad(b, y, g, s); });
}

template <class T>
EpochResult regression_epoch(const EpochArgs<T>& a, const T* y, RegressionLoss kind) {
  return run_epoch(
      a, [y, kind](const EpochArgs<T>& b, T* g, BatchScratch<T>& s) { return regression_batch_grad(b, y, kind, g, s); });
}

template <class T>
int64_t first_nonfinite_row(const T* x, int64_t n, int64_t d) {
  // Rows are scanned in parallel chunks; the smallest bad row found wins.
  // v - v is 0 for finite v and NaN for inf/NaN, so "all equal 0" is an
  // integer AND over the row that vectorises: the scan runs at memory speed.
  std::atomic<int64_t> first{n};
  const int64_t grain = std::max<int64_t>(1, (int64_t{1} << 18) / std::max<int64_t>(d, 1));
  parallel_for(n, grain, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e && i < first.load(std::memory_order_relaxed); ++i) {
      const T* row = x + i * d;
      int ok = 1;
      for (int64_t j = 0; j < d; ++j) ok &= (row[j] - row[j]) == T(0);
      if (!ok) {
        int64_t cur = first.load();
        while (i < cur && !first.compare_exchange_weak(cur, i)) {
        }
        return;
      }
    }
  });
  const int64_t f = first.load();
  return f == n ? -1 : f;
}

template EpochResult softmax_epoch<float>(const EpochArgs<float>&, const int64_t*);
template EpochResult softmax_epoch<double>(const EpochArgs<double>&, const int64_t*);
template EpochResult regression_epoch<float>(const EpochArgs<float>&, const float*, RegressionLoss);
template EpochResult regression_epoch<double>(const EpochArgs<double>&, const double*, RegressionLoss);
template BatchResult softmax_batch_grad<float>(const EpochArgs<float>&, const int64_t*, float*, BatchScratch<float>&);
template BatchResult softmax_batch_grad<double>(const EpochArgs<double>&, const int64_t*, double*, BatchScratch<double>&);
template BatchResult regression_batch_grad<float>(const EpochArgs<float>&, const float*, RegressionLoss, float*,
                                                  BatchScratch<float>&);
template BatchResult regression_batch_grad<double>(const EpochArgs<double>&, const double*, RegressionLoss, double*,
                                                   BatchScratch<double>&);
template void linear_sgd_step<float>(const EpochArgs<float>&, const float*, bool);
template void linear_sgd_step<double>(const EpochArgs<double>&, const double*, bool);
template int64_t first_nonfinite_row<float>(const float*, int64_t, int64_t);
template int64_t first_nonfinite_row<double>(const double*, int64_t, int64_t);

}  // namespace fastreg
