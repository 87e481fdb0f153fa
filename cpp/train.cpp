#include "train.hpp"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstddef>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

#include "blas.hpp"
#include "linear.hpp"
#include "loader.hpp"
#include "runtime.hpp"
#include "softmax_xent.hpp"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

namespace fastreg {
namespace {

// ---- the epoch team ---------------------------------------------------------
//
// A batch's two GEMMs (256 x 784 x 10 each, ~100-150 us on one core) are too
// small for BLAS's own threading (its threads are woken and parked per call) and
// too small to start threads per batch. Instead the epoch runs on a team started
// once per epoch call and joined before it returns. The epoch is a sequence of
// phases (per batch: rows, then columns); each phase is cut into fixed chunks
// that members claim one at a time, and whoever completes a phase's last chunk
// runs the short sequential step and opens the next phase. A member that the OS
// has descheduled (a loaded machine) therefore never holds the others up unless
// it is inside a chunk: the rest simply take its chunks. Which member runs a
// chunk never changes the result, since the chunks are fixed by the shapes.

class Phases {
 public:
  // Claims the next chunk of phase s (of n chunks): its index, or -1 when none
  // is left, the team has moved past s, or it stopped.
  int64_t claim(uint64_t s, int64_t n) {
    uint64_t v = ticket_.load(std::memory_order_acquire);
    for (;;) {
      if ((v >> kChunkBits) != s || stopped()) return -1;
      const auto i = static_cast<int64_t>(v & kChunkMask);
      if (i >= n) return -1;
      if (ticket_.compare_exchange_weak(v, v + 1, std::memory_order_acq_rel, std::memory_order_acquire)) return i;
    }
  }
  // Records a finished chunk; true for the member that finished the phase's last
  // one (it then sees every other member's writes: acq_rel on one counter).
  bool finish(int64_t n) { return done_.fetch_add(1, std::memory_order_acq_rel) + 1 == n; }

  // Opens phase s (called by the finisher of s - 1 after its sequential step).
  void open(uint64_t s) {
    done_.store(0, std::memory_order_relaxed);  // ordered before the ticket's release
    ticket_.store(s << kChunkBits);             // seq_cst, paired with wait_past's sleepers_
    wake();
  }
  void stop() {
    stopped_.store(true);
    wake();
  }
  bool stopped() const { return stopped_.load(std::memory_order_acquire); }

  // Waits until the team is past phase s or stopped; returns the current phase.
  // Spins briefly (the phase is usually opened within microseconds), then sleeps
  // on a condition variable so that it burns no core when the machine is busy.
  uint64_t wait_past(uint64_t s) {
    const auto spin_until = std::chrono::steady_clock::now() + kSpin;
    for (int i = 1; !past(s); ++i) {
      pause();
      if ((i & 63) == 0 && std::chrono::steady_clock::now() > spin_until) {
        sleepers_.fetch_add(1);  // seq_cst: either open() sees us, or we see its ticket
        std::unique_lock<std::mutex> lock(mutex_);
        cv_.wait(lock, [&] { return past(s); });
        sleepers_.fetch_sub(1);
        break;
      }
    }
    return ticket_.load(std::memory_order_acquire) >> kChunkBits;
  }

  static constexpr int kChunkBits = 24;  // ticket = phase << 24 | next chunk
  static constexpr int64_t kMaxChunks = int64_t{1} << 20;

 private:
  static constexpr uint64_t kChunkMask = (uint64_t{1} << kChunkBits) - 1;
  static constexpr std::chrono::microseconds kSpin{20};

  bool past(uint64_t s) const {
    return (ticket_.load(std::memory_order_acquire) >> kChunkBits) != s || stopped();
  }
  static void pause() {
#if defined(__x86_64__) || defined(__i386__)
    _mm_pause();
#endif
  }
  void wake() {
    if (sleepers_.load() > 0) {
      { std::lock_guard<std::mutex> lock(mutex_); }  // a sleeper is either waiting or will see the change
      cv_.notify_all();
    }
  }

  std::atomic<uint64_t> ticket_{0};
  std::atomic<int64_t> done_{0};
  std::atomic<int> sleepers_{0};
  std::atomic<bool> stopped_{false};
  std::mutex mutex_;
  std::condition_variable cv_;
};

// Runs member(rank) on n threads (the caller is rank 0) and joins them. The
// first exception of any member stops the team (nobody waits forever) and is
// rethrown here after every thread has finished.
template <class Member>
void run_team(int n, Phases& phases, Member&& member) {
  std::vector<std::exception_ptr> errors(static_cast<size_t>(n));
  auto guarded = [&](int rank) {
    try {
      member(rank);
    } catch (...) {
      errors[static_cast<size_t>(rank)] = std::current_exception();
      phases.stop();
    }
  };
  std::vector<std::thread> workers;
  workers.reserve(static_cast<size_t>(n - 1));
  try {
    for (int r = 1; r < n; ++r) workers.emplace_back(guarded, r);
  } catch (...) {  // could not start a thread: the caller alone runs the epoch
  }
  guarded(0);
  for (auto& w : workers) w.join();
  for (auto& e : errors)
    if (e) std::rethrow_exception(e);
}

// Chunk c of [0, n) cut into pieces of `size` (a multiple of 16 elements for
// columns: one cache line of float gW/W, so members never share a line).
struct Span {
  int64_t begin, end;
  int64_t size() const { return end - begin; }
};
Span chunk(int64_t n, int64_t size, int64_t c) { return {std::min(n, c * size), std::min(n, (c + 1) * size)}; }
int64_t n_chunks(int64_t n, int64_t size) { return (n + size - 1) / size; }

// Team size for an epoch: 1 (the plain single-thread loop) unless a batch holds
// enough work that sharing it beats the hand-offs between phases (a few us each).
constexpr int64_t kMinTeamWork = int64_t{1} << 18;  // multiply-adds + gathered elements per batch
// Chunks when the team has more than one member: 64 rows (a 64 x 784 x 10 GEMM,
// ~25 us) and 128 feature columns; small enough that a lone member can pick up
// a descheduled partner's share, large enough for BLAS to stay efficient.
constexpr int64_t kRowChunk = 64, kColChunk = 128;

}  // namespace

int epoch_team_size(int64_t bmax, int64_t d, int64_t c) {
  if (static_cast<double>(bmax) * static_cast<double>(d) * static_cast<double>(c + 1) < kMinTeamWork) return 1;
  const int64_t by_shape = std::min(bmax / kRowChunk, d / kColChunk);  // >= 2 chunks of each kind
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(num_threads(), by_shape)));
}

namespace {

// True when every v in row[0, d) is finite: v - v is 0 for finite v and NaN for
// inf/NaN, so the test is an integer AND over the row that vectorises.
template <class T>
bool row_finite(const T* row, int64_t d) {
  int ok = 1;
  for (int64_t j = 0; j < d; ++j) ok &= (row[j] - row[j]) == T(0);
  return ok != 0;
}

// A row chunk's results, one cache line each so members never share a line.
struct alignas(64) ChunkSlot {
  double loss = 0.0;
  int64_t correct = 0;
};

// Copies rows idx[b, e) of X into xb rows [b, e) (row-major T), scaling u8, on
// the calling thread only. The gathered batch (256 x 784 floats = 800 KB) stays
// in L2 for the forward and the backward GEMM, so X itself is read once per epoch.
// With check_finite, returns the X row of a gathered row holding NaN/inf, or -1.
template <class T>
int64_t gather_rows_of(const EpochArgs<T>& a, const int64_t* idx, Span rows, T* xb) {
  if (a.d == 0) return -1;  // nothing to copy (and the empty buffer may be a null pointer)
  LoaderColumn col;
  col.src = a.x;
  col.row_len = a.d;
  col.itemsize = a.source == Source::u8 ? 1 : static_cast<int64_t>(sizeof(T));
  col.u8_to_f32 = a.source == Source::u8;
  col.scale = a.scale;
  col.gather(idx + rows.begin, rows.size(), xb + rows.begin * a.d, false);
  if (a.check_finite && a.source != Source::u8)
    for (int64_t i = rows.begin; i < rows.end; ++i)
      if (!row_finite(xb + i * a.d, a.d)) return idx[i];
  return -1;
}

// Softmax rows z [m, c] (X rows idx[0, m) of a batch of bs): their targets into t,
// right predictions added to *correct (taken from the logits before the loss kernel
// overwrites them; first maximum wins, as torch.argmax), then the summed loss, with
// d(batch mean)/d(z) written over z. Shared by the epoch team and the per-step path.
template <class T>
double softmax_rows(T* z, const int64_t* y, const int64_t* idx, int64_t m, int64_t c, int64_t bs, int64_t* t,
                    int64_t* correct) {
  for (int64_t i = 0; i < m; ++i) t[i] = y[idx[i]];
  for (int64_t i = 0; i < m; ++i) {
    const T* zi = z + i * c;
    *correct += (std::max_element(zi, zi + c) - zi) == t[i];
  }
  XentArgs<T> xa;
  xa.logits = z;
  xa.n = m;
  xa.c = c;
  xa.target = t;
  xa.reduction = Reduction::sum;  // a batch may span several members' rows:
  xa.grad_scale = 1.0 / static_cast<double>(bs);  // d(sum)/d(z) / bs = d(batch mean)/d(z)
  xa.grad = z;                    // in place
  return softmax_cross_entropy<T>(xa);
}

// Regression rows pred [m] (X rows idx[0, m) of a batch of bs): the summed loss, with
// d(batch mean)/d(pred) written over pred.
template <class T>
double regression_rows(T* pred, const T* y, const int64_t* idx, int64_t m, int64_t bs, RegressionLoss kind) {
  double loss = 0.0;
  const T inv = T(1) / static_cast<T>(bs);
  for (int64_t i = 0; i < m; ++i) {
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
  return loss;
}

// The batch loop shared by both models, as phases (batch k, rows R, features F):
//   phase 0       gather batch 0's rows                 chunks: rows
//   phase 2k + 1  z[R] = X[R] @ W^T + b, then the loss  chunks: rows
//                 and d(mean loss)/d(z) in place over z[R] (row_loss)
//      step:      check the batch loss is finite; gb, bias update, bookkeeping
//   phase 2k + 2  gW[:, F] = G^T @ X[:, F] (X[:, F] is a  chunks: columns, then
//                 strided view, ldb = d: no reduction)   rows of batch k + 1
//                 and the SGD update of W[:, F]; gather
//                 batch k+1 (other buffer) meanwhile
// Every output element is the same dot product whatever the chunking, so the
// team agrees with the single-thread loop to rounding, and is bit-identical for
// any team size >= 2. A team of 1 uses one chunk per phase: today's plain loop.
//
// row_loss(z, idx, r0, m, bs, correct) gets logits z [m, c] of rows r0..r0+m of
// a batch of bs (X rows idx[0..m)); returns their summed loss, writes the
// gradient of the batch mean over z, and adds right predictions to *correct.
template <class T, class RowLoss>
EpochResult run_epoch(const EpochArgs<T>& a, RowLoss&& row_loss) {
  EpochResult r;
  const int64_t bmax = std::min(a.batch_size, a.n_order);
  if (bmax <= 0) return r;
  const int nt = epoch_team_size(bmax, a.d, a.c);
  const int64_t n_batches = n_chunks(a.n_order, a.batch_size);
  // Chunk sizes (a team of 1: the whole batch / all columns in one chunk).
  const int64_t row_chunk = nt > 1 ? std::max(kRowChunk, n_chunks(bmax, Phases::kMaxChunks / 2)) : bmax;
  const int64_t col_chunk =
      nt > 1 ? std::max(kColChunk, n_chunks(a.d, Phases::kMaxChunks / 2) * 16) : std::max<int64_t>(a.d, 1);
  const int64_t col_chunks = std::max<int64_t>(1, n_chunks(a.d, col_chunk));  // every phase needs a chunk, even for d = 0
  std::vector<T> xb[2] = {std::vector<T>(static_cast<size_t>(bmax * a.d)),
                          std::vector<T>(n_batches > 1 ? static_cast<size_t>(bmax * a.d) : 0)};
  std::vector<T> z(static_cast<size_t>(bmax * a.c)), gw(static_cast<size_t>(a.c * a.d)), gb(static_cast<size_t>(a.c));
  std::vector<ChunkSlot> slots(static_cast<size_t>(n_chunks(bmax, row_chunk)));
  SgdOptions no_decay = a.opt;  // weight decay applies to w only
  no_decay.weight_decay = 0.0;
  bool first = a.first_step;  // written only in the sequential steps
  std::atomic<int64_t> bad_row{-1};  // check_finite: a non-finite row some gather found
  auto gather = [&](const int64_t* idx, Span rows, T* xb) {
    const int64_t bad = gather_rows_of(a, idx, rows, xb);
    if (bad >= 0) bad_row.store(bad, std::memory_order_relaxed);  // the phase's finish() publishes it
  };

  auto batch_rows = [&](int64_t k) { return std::min(a.batch_size, a.n_order - k * a.batch_size); };
  auto chunks_of = [&](uint64_t s) -> int64_t {
    if (s == 0) return n_chunks(batch_rows(0), row_chunk);
    const auto k = static_cast<int64_t>((s - 1) / 2);
    if (s % 2 == 1) return n_chunks(batch_rows(k), row_chunk);
    return col_chunks + (k + 1 < n_batches ? n_chunks(batch_rows(k + 1), row_chunk) : 0);
  };
  auto run_chunk = [&](uint64_t s, int64_t i) {
    if (s == 0) return gather(a.order, chunk(batch_rows(0), row_chunk, i), xb[0].data());
    const auto k = static_cast<int64_t>((s - 1) / 2);
    const int64_t bs = batch_rows(k), *idx = a.order + k * a.batch_size;
    const T* x = xb[k & 1].data();
    if (s % 2 == 1) {  // rows: forward and loss
      const Span rows = chunk(bs, row_chunk, i);
      T* zr = z.data() + rows.begin * a.c;
      linear_forward<T>(x + rows.begin * a.d, a.w, a.b, rows.size(), a.d, a.c, zr);
      ChunkSlot& slot = slots[static_cast<size_t>(i)];
      slot.correct = 0;
      slot.loss = row_loss(zr, idx + rows.begin, rows.begin, rows.size(), bs, &slot.correct);
    } else if (i < col_chunks) {  // columns: weight gradient and update
      const Span cols = chunk(a.d, col_chunk, i);
      gemm<T>(true, false, a.c, cols.size(), bs, T(1), z.data(), a.c, x + cols.begin, a.d, T(0),
              gw.data() + cols.begin, a.d);
      for (int64_t j = 0; j < a.c; ++j) {
        const int64_t o = j * a.d + cols.begin;
        sgd_update<T>(a.w + o, gw.data() + o, a.w_buf ? a.w_buf + o : nullptr, cols.size(), a.opt, first);
      }
    } else {  // rows of the next batch into the other buffer
      gather(idx + a.batch_size, chunk(batch_rows(k + 1), row_chunk, i - col_chunks), xb[(k + 1) & 1].data());
    }
  };
  // The sequential step after phase s; false ends the epoch.
  auto after = [&](uint64_t s) {
    if (s % 2 == 0) {  // a gather phase: stop before a batch with a non-finite row is used
      r.nonfinite_row = bad_row.load(std::memory_order_relaxed);
      if (r.nonfinite_row >= 0) return false;
    }
    if (s == 0) return true;
    const auto k = static_cast<int64_t>((s - 1) / 2);
    const int64_t bs = batch_rows(k);
    if (s % 2 == 0) {
      first = false;
      return k + 1 < n_batches;
    }
    double loss = 0.0;  // summed in chunk order: the same for any team size >= 2
    const int64_t used = n_chunks(bs, row_chunk);
    for (int64_t i = 0; i < used; ++i) loss += slots[static_cast<size_t>(i)].loss;
    if (!std::isfinite(loss)) {
      r.finite = false;
      return false;
    }
    column_sums(z.data(), bs, a.c, gb.data(), false);
    sgd_update<T>(a.b, gb.data(), a.b_buf, a.c, no_decay, first);
    r.loss_sum += loss;
    for (int64_t i = 0; i < used; ++i) r.correct += slots[static_cast<size_t>(i)].correct;
    r.rows += bs;
    return true;
  };

  Phases phases;
  run_team(nt, phases, [&](int) {
    const BlasThreads single(1);  // thread-local in OpenBLAS: every member pins its own calls
    for (uint64_t s = 0; !phases.stopped(); s = phases.wait_past(s)) {
      const int64_t n = chunks_of(s);
      for (int64_t i; (i = phases.claim(s, n)) >= 0;) {
        run_chunk(s, i);
        if (phases.finish(n)) {
          if (after(s)) phases.open(s + 1);
          else phases.stop();
        }
      }
    }
  });
  return r;
}

}  // namespace

template <class T>
EpochResult softmax_epoch(const EpochArgs<T>& a, const int64_t* y) {
  std::vector<int64_t> yb(static_cast<size_t>(std::min(a.batch_size, a.n_order)));
  return run_epoch(a, [&](T* z, const int64_t* idx, int64_t r0, int64_t m, int64_t bs, int64_t* correct) {
    return softmax_rows(z, y, idx, m, a.c, bs, yb.data() + r0, correct);  // members write disjoint rows of yb
  });
}

template <class T>
EpochResult regression_epoch(const EpochArgs<T>& a, const T* y, RegressionLoss kind) {
  return run_epoch(a, [&](T* pred, const int64_t* idx, int64_t, int64_t m, int64_t bs, int64_t*) {
    return regression_rows(pred, y, idx, m, bs, kind);
  });
}

// ---- one minibatch at a time (data-parallel training) ----------------------
// The data-parallel path in Python runs these per step so it can all-reduce the
// gradient in between; the epoch loops above do the same work in team phases.

namespace {


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
  gather_rows_of(a, idx, Span{0, bs}, xb);
  linear_forward<T>(xb, a.w, a.b, bs, a.d, a.c, logits);
  const double loss = softmax_rows(logits, y, idx, bs, a.c, bs, s.yb.data(), &r.correct);
  if (!std::isfinite(loss)) {
    r.finite = false;
    return r;
  }
  r.loss_sum = loss;
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
  gather_rows_of(a, idx, Span{0, bs}, xb);
  linear_forward<T>(xb, a.w, a.b, bs, a.d, 1, pred);
  const double loss = regression_rows(pred, y, idx, bs, bs, kind);
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



template <class T>
int64_t first_nonfinite_row(const T* x, int64_t n, int64_t d) {
  // Rows are scanned in parallel chunks; the smallest bad row found wins. The
  // row test vectorises, so the scan runs at memory speed.
  std::atomic<int64_t> first{n};
  const int64_t grain = std::max<int64_t>(1, (int64_t{1} << 18) / std::max<int64_t>(d, 1));
  parallel_for(n, grain, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e && i < first.load(std::memory_order_relaxed); ++i) {
      if (!row_finite(x + i * d, d)) {
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
