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

// One SGD update of w and b from their gradients; weight decay on w only.
template <class T>
void update(const EpochArgs<T>& a, T* gw, T* gb, bool first) {
  sgd_update<T>(a.w, gw, a.w_buf, a.c * a.d, a.opt, first);
  SgdOptions no_decay = a.opt;
  no_decay.weight_decay = 0.0;
  sgd_update<T>(a.b, gb, a.b_buf, a.c, no_decay, first);
}

}  // namespace

template <class T>
EpochResult softmax_epoch(const EpochArgs<T>& a, const int64_t* y) {
  const BlasThreads single(1);
  EpochResult r;
  const int64_t bmax = std::min(a.batch_size, a.n_order);
  std::vector<T> xb(static_cast<size_t>(bmax * a.d)), logits(static_cast<size_t>(bmax * a.c));
  std::vector<T> gw(static_cast<size_t>(a.c * a.d)), gb(static_cast<size_t>(a.c));
  std::vector<int64_t> yb(static_cast<size_t>(bmax));
  bool first = a.first_step;
  for (int64_t start = 0; start < a.n_order; start += a.batch_size) {
    const int64_t bs = std::min(a.batch_size, a.n_order - start);
    const int64_t* idx = a.order + start;
    gather_batch(a, idx, bs, xb.data());
    for (int64_t i = 0; i < bs; ++i) yb[static_cast<size_t>(i)] = y[idx[i]];
    linear_forward<T>(xb.data(), a.w, a.b, bs, a.d, a.c, logits.data());
    // Accuracy from the logits before the loss kernel overwrites them with the
    // gradient (first maximum wins, as torch.argmax).
    for (int64_t i = 0; i < bs; ++i) {
      const T* z = logits.data() + i * a.c;
      r.correct += (std::max_element(z, z + a.c) - z) == yb[static_cast<size_t>(i)];
    }
    XentArgs<T> xa;
    xa.logits = logits.data();
    xa.n = bs;
    xa.c = a.c;
    xa.target = yb.data();
    xa.reduction = Reduction::mean;
    xa.grad = logits.data();  // in place: d(mean loss)/d(logits)
    const double loss = softmax_cross_entropy<T>(xa);
    if (!std::isfinite(loss)) {
      r.finite = false;
      return r;
    }
    r.loss_sum += loss * static_cast<double>(bs);
    r.rows += bs;
    linear_backward<T>(xb.data(), a.w, logits.data(), bs, a.d, a.c, gw.data(), gb.data(), nullptr, false);
    update(a, gw.data(), gb.data(), first);
    first = false;
  }
  return r;
}

template <class T>
EpochResult regression_epoch(const EpochArgs<T>& a, const T* y, RegressionLoss kind) {
  const BlasThreads single(1);
  EpochResult r;
  const int64_t bmax = std::min(a.batch_size, a.n_order);
  std::vector<T> xb(static_cast<size_t>(bmax * a.d)), pred(static_cast<size_t>(bmax));
  std::vector<T> gw(static_cast<size_t>(a.d)), gb(1);
  bool first = a.first_step;
  for (int64_t start = 0; start < a.n_order; start += a.batch_size) {
    const int64_t bs = std::min(a.batch_size, a.n_order - start);
    const int64_t* idx = a.order + start;
    gather_batch(a, idx, bs, xb.data());
    linear_forward<T>(xb.data(), a.w, a.b, bs, a.d, 1, pred.data());
    // Loss and d(mean loss)/d(pred), written over pred.
    double loss = 0.0;
    const T inv = T(1) / static_cast<T>(bs);
    for (int64_t i = 0; i < bs; ++i) {
      const T res = pred[static_cast<size_t>(i)] - y[idx[i]], ares = std::abs(res);
      T g;
      if (kind == RegressionLoss::squared || (kind == RegressionLoss::huber && ares <= T(1))) {
        loss += 0.5 * double(res) * double(res);
        g = res;
      } else {
        loss += kind == RegressionLoss::l1 ? double(ares) : double(ares) - 0.5;
        g = res > T(0) ? T(1) : res < T(0) ? T(-1) : T(0);  // sign, 0 at 0 as torch
      }
      pred[static_cast<size_t>(i)] = g * inv;
    }
    if (!std::isfinite(loss)) {
      r.finite = false;
      return r;
    }
    r.loss_sum += loss;
    r.rows += bs;
    linear_backward<T>(xb.data(), a.w, pred.data(), bs, a.d, 1, gw.data(), gb.data(), nullptr, false);
    update(a, gw.data(), gb.data(), first);
    first = false;
  }
  return r;
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
template int64_t first_nonfinite_row<float>(const float*, int64_t, int64_t);
template int64_t first_nonfinite_row<double>(const double*, int64_t, int64_t);

}  // namespace fastreg
