#include "epoch.hpp"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <exception>
#include <mutex>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#include "blas.hpp"
#include "cross_entropy.hpp"
#include "linear.hpp"
#include "linear_cross_entropy.hpp"
#include "loader.hpp"  // the loader's uint8 -> float32 conversion (LoaderColumn)
#include "memory.hpp"
#include "runtime.hpp"
#include "simd.hpp"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

namespace fastreg {
namespace {

// ---- the epoch team ---------------------------------------------------------
//
// A batch's two products (256 x 784 x 10 each: tens of microseconds on one core)
// are too small for BLAS's own threading (its threads are woken and parked per call) and too
// small to start threads per batch. Instead the epoch runs on a team started
// once per epoch call and joined before it returns. The epoch is a sequence of
// phases (per batch: its rows, then for a big W its update); each is cut into fixed chunks
// that members claim one at a time, and whoever completes a phase's last chunk
// runs the short sequential step and opens the next phase. A member that the OS
// has descheduled (a loaded machine) therefore never holds the others up unless
// it is inside a chunk: the rest simply take its chunks. Which member runs a
// chunk never changes the result, since the chunks are fixed by the shapes.

class Phases {
 public:
  static void pause() {
#if defined(__x86_64__) || defined(__i386__)
    _mm_pause();
#endif
  }
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

  // Claims, while phase s runs, a chunk of phase s + 1 ahead of time (a member
  // with nothing left in s prepares its next chunk's data meanwhile): its index,
  // or -1. The chunk is the caller's; it may run it only once s + 1 is open.
  int64_t claim_next(uint64_t s, int64_t n) {
    uint64_t v = early_.load(std::memory_order_acquire);
    for (;;) {
      if ((v >> kChunkBits) != s + 1 || stopped()) return -1;
      const auto i = static_cast<int64_t>(v & kChunkMask);
      if (i >= n) return -1;
      if (early_.compare_exchange_weak(v, v + 1, std::memory_order_acq_rel, std::memory_order_acquire)) return i;
    }
  }

  // Opens phase s (called by the finisher of s - 1 after its sequential step).
  // Chunks of s claimed ahead are closed to further early claims in the same
  // atomic step that counts them, so every chunk is claimed exactly once.
  void open(uint64_t s) {
    done_.store(0, std::memory_order_relaxed);  // ordered before the ticket's release
    const uint64_t e = early_.exchange((s + 1) << kChunkBits);
    const uint64_t ahead = (e >> kChunkBits) == s ? (e & kChunkMask) : 0;
    ticket_.store(s << kChunkBits | ahead);  // seq_cst, paired with wait_past's sleepers_
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

  bool past(uint64_t s) const { return (ticket_.load(std::memory_order_acquire) >> kChunkBits) != s || stopped(); }
  void wake() {
    if (sleepers_.load() > 0) {
      {
        std::lock_guard<std::mutex> lock(mutex_);
      }  // a sleeper is either waiting or will see the change
      cv_.notify_all();
    }
  }

  std::atomic<uint64_t> ticket_{0};
  std::atomic<uint64_t> early_{uint64_t{1} << kChunkBits};  // phase + 1 << 24 | chunks of it claimed early
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

// Chunk c of [0, n) cut into pieces of `size`.
struct Span {
  int64_t begin, end;
  int64_t size() const { return end - begin; }
};
Span chunk(int64_t n, int64_t size, int64_t c) { return {std::min(n, c * size), std::min(n, (c + 1) * size)}; }
int64_t n_chunks(int64_t n, int64_t size) { return (n + size - 1) / size; }

// How an epoch cuts a batch, fixed by the shapes alone (never by the team size,
// so every team size, 1 included, computes bit-identical results):
// - blocks of `block` rows, the unit of every GEMM call. OpenBLAS (SciPy's) runs
//   products with M*N*K <= 1e6 (and, for A transposed, M*N <= 1200) on its "small
//   matrix" kernels, which skip the packing copies of both operands (a 256 x 784
//   batch with c = 10 ran ~2.5x faster as 64-row calls than as one call each; the
//   few-outputs kernels, which pack nothing, use the same blocks). So a block is
//   64 rows, or 32 or 16 when that keeps it under the limits.
// - chunks of `chunk` rows (whole blocks), the unit team members claim. Each chunk
//   accumulates its weight gradient into a partial [c, d] of its own; the update
//   phase sums the partials in chunk order. Chunks are one block unless that would
//   need more than kPartialBudget elements of partials (very large batches).
//   When a chunk is one block, a batch's last two chunks' rows are cut into three
//   smaller chunks instead (3/8, 3/8 and 1/4 of them: 48, 48, 32 rows of a 256-row
//   batch), so that the batch ends on small pieces of work: whichever member is
//   free takes them, and a member that runs slower (the VM's host shares a core
//   at times) holds the batch up by less (docs/models.md has the schedule's model
//   and measurements).
// - `update` elements of W per chunk of the reduce-and-update phase.
constexpr int64_t kBlockRows = 64;
constexpr int64_t kTaperMinRows = 24;                 // a smaller tail stays one chunk
constexpr int64_t kMinTeamWork = int64_t{1} << 18;    // multiply-adds + gathered elements per batch
constexpr double kSmallGemm = 1e6;                    // OpenBLAS small-kernel limit on M*N*K
constexpr int64_t kSmallGemmTransMN = 1200;           // ... and on M*N with A transposed (the forward)
constexpr int64_t kPartialBudget = int64_t{1} << 20;  // elements of partial gradients (at least 4 partials)
constexpr int64_t kUpdateWork = int64_t{1} << 16;     // partial elements summed per update chunk

// Whether a batch holds enough work that sharing it beats the hand-offs between
// phases (a few us each). Shapes only: it also decides the taper below.
bool worth_a_team(int64_t bmax, int64_t d, int64_t c) {
  return static_cast<double>(bmax) * static_cast<double>(d) * static_cast<double>(c + 1) >= kMinTeamWork;
}

struct ChunkPlan {
  int64_t block = 1, chunk = 1, parts = 1, update = 1, update_chunks = 1;
  bool taper = false;  // the last two chunks' rows are cut into three (see above)

  // Chunks a batch of bs rows is cut into (at most `parts`), and chunk i's rows.
  int64_t count(int64_t bs) const {
    if (!tapers(bs)) return n_chunks(bs, chunk);
    const int64_t whole = n_chunks(bs, chunk) - 2;
    return whole + (bs - whole * chunk >= kTaperMinRows ? 3 : 1);
  }
  Span span(int64_t bs, int64_t i) const {
    const int64_t whole = tapers(bs) ? n_chunks(bs, chunk) - 2 : n_chunks(bs, chunk);
    if (i < whole) return {i * chunk, std::min(bs, (i + 1) * chunk)};
    const int64_t start = whole * chunk, tail = bs - start;
    if (tail < kTaperMinRows) return {start, bs};
    const int64_t piece = (3 * tail + 4) / 8;  // 3/8, 3/8, and the rest (~1/4)
    const int64_t j = i - whole;
    return {start + std::min(j, int64_t{2}) * piece, j < 2 ? start + (j + 1) * piece : bs};
  }

 private:
  bool tapers(int64_t bs) const { return taper && n_chunks(bs, chunk) >= 2; }  // a one-chunk batch stays whole
};

ChunkPlan plan_chunks(int64_t bmax, int64_t d, int64_t c) {
  ChunkPlan p;
  p.block = kBlockRows;
  for (int64_t rows = kBlockRows; rows >= 16; rows /= 2) {  // the largest block the small kernels take
    if (static_cast<double>(rows) * static_cast<double>(c) * static_cast<double>(d) <= kSmallGemm &&
        c * rows <= kSmallGemmTransMN) {
      p.block = rows;
      break;
    }
  }
  p.block = std::max<int64_t>(1, std::min(p.block, bmax));
  const int64_t blocks = n_chunks(bmax, p.block);
  const int64_t max_parts =
      std::min(Phases::kMaxChunks / 2, std::max<int64_t>(4, kPartialBudget / std::max<int64_t>(c * d, 1)));
  p.chunk = p.block * n_chunks(blocks, max_parts);
  // Taper only batches a team would share: it costs a one-member epoch an extra
  // partial and GEMM call.
  p.taper = p.chunk == p.block && worth_a_team(bmax, d, c);
  p.parts = n_chunks(bmax, p.chunk) + (p.taper && n_chunks(bmax, p.chunk) >= 2 ? 1 : 0);  // at most one more
  const int64_t wsize = c * d;
  p.update = std::max<int64_t>(16, (kUpdateWork / p.parts + 15) / 16 * 16);  // whole cache lines of float W
  p.update = std::max(p.update, n_chunks(wsize, Phases::kMaxChunks / 2));
  p.update_chunks = std::max<int64_t>(1, n_chunks(wsize, p.update));  // every phase needs a chunk, even for d = 0
  return p;
}

}  // namespace

std::vector<int64_t> epoch_chunk_rows(int64_t rows, int64_t bmax, int64_t d, int64_t c) {
  const ChunkPlan plan = plan_chunks(bmax, d, c);
  std::vector<int64_t> out;
  for (int64_t i = 0; i < plan.count(rows); ++i) out.push_back(plan.span(rows, i).size());
  return out;
}

// 1 unless a batch is worth a team, and never more members than it has whole chunks.
int epoch_team_size(int64_t bmax, int64_t d, int64_t c) {
  if (!worth_a_team(bmax, d, c)) return 1;
  const ChunkPlan plan = plan_chunks(bmax, d, c);
  const int64_t by_shape = n_chunks(bmax, plan.chunk);  // (the taper's pieces are too small to share)
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(num_threads(), by_shape)));
}

namespace {

// True when every v in row[0, d) is finite: v - v is 0 for finite v and NaN for
// inf/NaN, so the test is an integer AND over the row that vectorises (the AVX2
// variant at twice the width). first_nonfinite_row runs it over all of X.
template <class T>
FASTREG_INLINE bool row_finite_body(const T* row, int64_t d) {
  int ok = 1;
  for (int64_t j = 0; j < d; ++j) ok &= (row[j] - row[j]) == T(0);
  return ok != 0;
}
template <class T>
bool row_finite_plain(const T* row, int64_t d) {
  return row_finite_body(row, d);
}
template <class T>
FASTREG_TARGET_AVX2 bool row_finite_avx2(const T* row, int64_t d) {
  return row_finite_body(row, d);
}
template <class T>
bool row_finite(const T* row, int64_t d) {
  return simd_at_least(Simd::avx2) ? row_finite_avx2(row, d) : row_finite_plain(row, d);
}

// A row chunk's results, one cache line each so members never share a line.
struct alignas(64) ChunkSlot {
  double loss = 0.0;
  int64_t correct = 0;
  std::atomic<int64_t> done{-1};  // the batch whose partial this chunk has completed (for the fold)
};

// The first epoch checks every row for NaN/inf as it copies it, while the row is
// in registers (a separate sweep over the copied rows would read them again): the
// loader's gather (gather_lines, memory.hpp) with a checking line policy.
//
// float32 rows on x86: 16-byte moves (NumPy's buffers are 16- but rarely 64-byte
// aligned, and half of 32-byte loads would straddle two cache lines; with 16-byte
// moves the check measures as free, docs/models.md). NaN/inf have every exponent
// bit set: a row holds one exactly when some element's exponent field equals the
// mask. SSE2 only, so the policy inlines into the gather on any x86-64.
#if defined(__x86_64__) || defined(__i386__)
struct FiniteF32Lines {
  struct State {
    __m128i hit = _mm_setzero_si128();
  };
  static void line(State& st, char* dst, const char* src) {
    const __m128i exponent = _mm_set1_epi32(0x7f800000);
    const auto* in = reinterpret_cast<const __m128i*>(src);
    auto* out = reinterpret_cast<__m128i*>(dst);
    __m128i h = st.hit;
    for (int q = 0; q < 4; ++q) {
      const __m128i v = _mm_loadu_si128(in + q);
      _mm_storeu_si128(out + q, v);
      h = _mm_or_si128(h, _mm_cmpeq_epi32(_mm_and_si128(v, exponent), exponent));
    }
    st.hit = h;
  }
  static bool finish(State& st, char* out_row, const char* in_row, int64_t off, int64_t row_bytes) {
    const auto* in = reinterpret_cast<const float*>(in_row);
    auto* out = reinterpret_cast<float*>(out_row);
    int ok = 1;
    for (int64_t t = off / 4; t < row_bytes / 4; ++t) {
      out[t] = in[t];
      ok &= (in[t] - in[t]) == 0.0f;
    }
    return ok && _mm_movemask_epi8(st.hit) == 0;
  }
};
#endif

// Other rows: copied as they are, then checked by row_finite while in cache.
template <class T>
struct FiniteLines {
  struct State {};
  static void line(State&, char* dst, const char* src) { std::memcpy(dst, src, 64); }
  static bool finish(State&, char* out_row, const char* in_row, int64_t off, int64_t row_bytes) {
    std::memcpy(out_row + off, in_row + off, static_cast<size_t>(row_bytes - off));
    return row_finite(reinterpret_cast<const T*>(out_row), row_bytes / static_cast<int64_t>(sizeof(T)));
  }
};

#if defined(__x86_64__) || defined(__i386__)
FASTREG_TARGET_AVX2 int64_t gather_finite_f32_avx2(const float* x, int64_t d, const int64_t* idx, Span rows,
                                                   float* xb) {
  FiniteF32Lines lines;
  return gather_lines(lines, x, d * 4, idx, rows.begin, rows.end, xb);
}
#endif

// Copies rows idx[b, e) of X into xb rows [b, e) (row-major T), scaling u8, on
// the calling thread only, so X itself is read once per epoch and the copy
// stays in this core's cache for the GEMMs that follow.
// With check_finite, returns the X row of a gathered row holding NaN/inf, or -1.
template <class T>
int64_t gather_rows_of(const EpochArgs<T>& a, const int64_t* idx, Span rows, T* xb) {
  if (a.d == 0) return -1;  // nothing to copy (and the empty buffer may be a null pointer)
  if (a.source != Source::u8 && a.check_finite) {
    int64_t bad = -1;
#if defined(__x86_64__) || defined(__i386__)
    if constexpr (std::is_same_v<T, float>) {
      if (simd_at_least(Simd::avx2)) {  // avx512 too: a copy bound by memory, not by width
        bad = gather_finite_f32_avx2(static_cast<const float*>(a.x), a.d, idx, rows, xb);
        return bad < 0 ? -1 : idx[bad];
      }
    }
#endif
    FiniteLines<T> lines;
    bad = gather_lines(lines, a.x, a.d * static_cast<int64_t>(sizeof(T)), idx, rows.begin, rows.end, xb);
    return bad < 0 ? -1 : idx[bad];
  }
  if (a.source != Source::u8) {  // rows as they are: the loader's gather
    gather_range(a.x, a.d * static_cast<int64_t>(sizeof(T)), idx, rows.begin, rows.end, xb);
    return -1;
  }
  // uint8 rows scaled to float32 by the loader's conversion, in groups (a few lines
  // each), the next group prefetched as a whole first: short rows give the loader's
  // line-by-line prefetch too little time.
  LoaderColumn col;
  col.src = a.x;
  col.row_len = a.d;
  col.itemsize = 1;
  col.u8_to_f32 = true;
  col.scale = a.scale;
  for (int64_t i = rows.begin; i < rows.end; i += kRowPrefetchAhead) {
    const int64_t group = std::min(kRowPrefetchAhead, rows.end - i);
    for (int64_t j = i + group; j < std::min(rows.end, i + group + kRowPrefetchAhead); ++j)
      prefetch_row(static_cast<const uint8_t*>(a.x) + idx[j] * a.d, a.d);
    col.gather(idx + i, group, xb + i * a.d, false);
  }
  return -1;
}

// Softmax rows z [m, c] (X rows idx[0, m) of a batch of bs): their targets into t,
// right predictions added to *correct (taken from the logits before the loss kernel
// overwrites them; first maximum wins, as torch.argmax), then the summed loss, with
// d(batch mean)/d(z) written over z. Shared by the epoch team and the per-step path.
// With per-row weights sw (X's rows), row i's loss and gradient are scaled by sw[idx[i]];
// rl [m] then receives the unweighted row losses (scratch).
template <class T>
double softmax_rows(T* z, const int64_t* y, const int64_t* idx, int64_t m, int64_t c, int64_t bs, int64_t* t,
                    int64_t* correct, const T* sw = nullptr, T* rl = nullptr) {
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
  xa.reduction = Reduction::sum;                  // a batch may span several members' rows:
  xa.grad_scale = 1.0 / static_cast<double>(bs);  // d(sum)/d(z) / bs = d(batch mean)/d(z)
  xa.grad = z;                                    // in place
  if (!sw) return softmax_cross_entropy<T>(xa);
  xa.row_loss = rl;
  softmax_cross_entropy<T>(xa);
  double loss = 0.0;
  for (int64_t i = 0; i < m; ++i) {
    const T wi = sw[idx[i]];
    loss += static_cast<double>(wi) * static_cast<double>(rl[i]);
    for (T *g = z + i * c, *e = g + c; g < e; ++g) *g *= wi;
  }
  return loss;
}

// Regression rows pred [m] (X rows idx[0, m) of a batch of bs): the summed loss, with
// d(batch mean)/d(pred) written over pred.
template <class T>
double regression_rows(T* pred, const T* y, const int64_t* idx, int64_t m, int64_t bs, RegressionLoss kind,
                       const T* sw = nullptr) {
  double loss = 0.0;
  const T inv = T(1) / static_cast<T>(bs);
  for (int64_t i = 0; i < m; ++i) {
    const T res = pred[i] - y[idx[i]], ares = std::abs(res);
    T g;
    double l;
    if (kind == RegressionLoss::squared || (kind == RegressionLoss::huber && ares <= T(1))) {
      l = 0.5 * double(res) * double(res);
      g = res;
    } else {
      l = kind == RegressionLoss::l1 ? double(ares) : double(ares) - 0.5;
      g = res > T(0) ? T(1) : res < T(0) ? T(-1) : T(0);  // sign, 0 at 0 as torch
    }
    if (sw) {  // weighted rows (see EpochArgs::sample_weight)
      l *= static_cast<double>(sw[idx[i]]);
      g *= sw[idx[i]];
    }
    loss += l;
    pred[i] = g * inv;
  }
  return loss;
}

// The batch loop shared by both models: an EpochTeam whose members run its
// phases (batch k, chunks of rows R; the methods of the same names):
//   rows of k     for each block of R: gather its rows (into the member's own      chunks: rows
//                 buffer, which stays in L2), z = X @ W^T + b, the loss and
//                 d(mean loss)/d(z) in place over z (row_loss), then add the
//                 block's G^T @ X to R's partial weight gradient
//   step          check the gathered rows and the batch loss are finite; bias
//                 gradient and update, bookkeeping
//   update of k   sum the partials in chunk order and update W (and momentum)  chunks: elements of W
//                 (for a small W, one chunk: done in the step above instead, so
//                 a batch costs the team a single hand-off)
// The chunks are fixed by the shapes (plan_chunks), and every sum runs in a
// fixed order, so the result does not depend on the team size or on which
// member ran which chunk.
//
// row_loss(z, idx, r0, m, bs, correct) gets logits z [m, c] of rows r0..r0+m of
// a batch of bs (X rows idx[0..m)); returns their summed loss, writes the
// gradient of the batch mean over z, and adds right predictions to *correct.
template <class T, class RowLoss>
class EpochTeam {
 public:
  EpochTeam(const EpochArgs<T>& a, RowLoss& row_loss, int64_t bmax)
      : a_(a),
        row_loss_(row_loss),
        nt_(epoch_team_size(bmax, a.d, a.c)),
        plan_(plan_chunks(bmax, a.d, a.c)),
        n_batches_(n_chunks(a.n_order, a.batch_size)),
        wsize_(a.c * a.d),
        // Few outputs: fastreg's own SIMD products, whose speed does not depend on
        // the kernel the BLAS picked (linear.hpp); more: the BLAS.
        few_(few_outputs_supported<T>(a.c)),
        // float32/64 rows: the gather and the first class block's forward in one pass,
        // while each row is in registers (uint8 rows are scaled as they are gathered).
        fused_(few_ && a.source != Source::u8 && a.d > 0),
        // Phase s belongs to batch s / per_batch_; its rows phase comes first. A small
        // W (one update chunk) is updated in the sequential step: one phase per batch.
        per_batch_(plan_.update_chunks == 1 ? 1 : 2),
        z_(static_cast<size_t>(bmax * a.c)),
        gb_(static_cast<size_t>(a.c)),
        slots_(static_cast<size_t>(plan_.parts)),
        first_(a.first_step) {
    // The few-outputs forward reads W with full-width vector loads, one per two
    // rows: from a copy on whole cache lines when W is not (the estimators allocate
    // theirs on one; NumPy aligns small arrays to 16 bytes), since a load straddling
    // two lines costs two. Refreshed after every update of W.
    if (few_ && wsize_ > 0 && reinterpret_cast<uintptr_t>(a.w) % 64 != 0) {
      w_copy_ = allocate_buffer(wsize_ * static_cast<int64_t>(sizeof(T)));
      std::memcpy(w_copy_.get(), a.w, static_cast<size_t>(wsize_) * sizeof(T));
    }
    wf_ = w_copy_ ? static_cast<T*>(w_copy_.get()) : a.w;
    // One gathered block per member, on whole cache lines: BLAS reads it with
    // 64-byte loads, each of which would straddle two lines in a 16-byte-aligned vector.
    for (int m = 0; m < nt_; ++m) xb_.push_back(allocate_buffer(plan_.block * a.d * static_cast<int64_t>(sizeof(T))));
    // One [c, d] weight gradient per chunk (BLAS's output: on whole lines too; each
    // chunk's first block overwrites its partial, so no zeroing).
    parts_buf_ = allocate_buffer(plan_.parts * wsize_ * static_cast<int64_t>(sizeof(T)));
    parts_ = static_cast<T*>(parts_buf_.get());
    no_decay_ = a.opt;  // weight decay applies to w only
    no_decay_.weight_decay = 0.0;
  }

  EpochResult run() {
    run_team(nt_, phases_, [&](int rank) { member(rank); });
    return r_;
  }

 private:
  // Small W (one phase per batch): the partials are summed into the first one in
  // chunk order as they complete, partly by a member that has no chunk left to
  // claim (it would otherwise wait), so that less of the sum is left to the
  // sequential step, which the team waits for. The order never changes, so
  // neither do the results.
  struct Fold {
    std::atomic<bool> busy{false};  // a short spin lock: held while a member folds
    int64_t batch = 0, next = 0;    // partials [0, next) of `batch` are summed in parts_[0]
  };

  int64_t batch_rows(int64_t k) const { return std::min(a_.batch_size, a_.n_order - k * a_.batch_size); }
  bool rows_phase(uint64_t s) const { return s % per_batch_ == 0; }
  int64_t chunks_of(uint64_t s) const {
    return rows_phase(s) ? plan_.count(batch_rows(static_cast<int64_t>(s / per_batch_))) : plan_.update_chunks;
  }
  void refresh_w(Span el) {
    if (w_copy_) std::memcpy(wf_ + el.begin, a_.w + el.begin, static_cast<size_t>(el.size()) * sizeof(T));
  }

  // Gathers the block of batch k's rows [r0, r0 + m) into x; false if one is not finite.
  bool gather_block(int64_t k, int64_t r0, int64_t m, T* x) {
    const int64_t bad = gather_rows_of(a_, a_.order + k * a_.batch_size + r0, Span{0, m}, x);
    if (bad >= 0) bad_row_[k & 1].store(bad, std::memory_order_relaxed);  // published by the chunk's finish()
    return bad < 0;
  }

  // Phase "rows", chunk i of batch k; `gathered`: its first block is in x already
  // (claimed ahead).
  void rows(int64_t k, int64_t i, T* x, bool gathered) {
    const int64_t bs = batch_rows(k), *idx = a_.order + k * a_.batch_size;
    const Span span = plan_.span(bs, i);
    T* part = parts_ + i * wsize_;
    ChunkSlot& slot = slots_[static_cast<size_t>(i)];
    slot.loss = 0.0;
    slot.correct = 0;
    for (int64_t r0 = span.begin; r0 < span.end; r0 += plan_.block) {
      const int64_t m = std::min(span.end - r0, plan_.block);
      T* zr = z_.data() + r0 * a_.c;
      const bool have = gathered && r0 == span.begin;  // claimed ahead: in x already
      if (fused_ && !have) {
        // The gather and the forward in one pass over the rows.
        const int64_t bad = few_outputs_gather_forward<T>(static_cast<const T*>(a_.x), idx + r0, m, a_.d, wf_, a_.b,
                                                          a_.c, x, zr, a_.check_finite);
        if (bad >= 0) {
          bad_row_[k & 1].store(idx[r0 + bad], std::memory_order_relaxed);  // published by the chunk's finish()
          return;
        }
      } else {
        if (!have && !gather_block(k, r0, m, x)) return;  // the step after this phase stops the epoch before any update
        if (few_)
          few_outputs_forward<T>(x, wf_, a_.b, m, a_.d, a_.c, zr);
        else
          linear_forward<T>(x, a_.w, a_.b, m, a_.d, a_.c, zr);
      }
      slot.loss += row_loss_(zr, idx + r0, r0, m, bs, &slot.correct);
      if (few_)
        few_outputs_weight_grad<T>(x, zr, m, a_.d, a_.c, part, r0 != span.begin);
      else
        gemm<T>(true, false, a_.c, a_.d, m, T(1), zr, a_.c, x, a_.d, r0 == span.begin ? T(0) : T(1), part, a_.d);
    }
    slot.done.store(k, std::memory_order_release);  // its partial is complete: the fold may read it
  }

  // Phase "update" (large W), chunk i of batch k: sums the partials over W's
  // elements e (in chunk order, into the first partial) and applies the SGD update
  // to those elements.
  void update(int64_t k, int64_t i) {
    const Span el = chunk(wsize_, plan_.update, i);
    if (el.size() <= 0) return;
    const int64_t used = plan_.count(batch_rows(k));
    T* g = parts_ + el.begin;
    for (int64_t p = 1; p < used; ++p) add_into(g, parts_ + p * wsize_ + el.begin, el.size());
    sgd_update<T>(a_.w + el.begin, g, a_.w_buf ? a_.w_buf + el.begin : nullptr, el.size(), a_.opt, first_);
    refresh_w(el);
  }

  // Folds the completed prefix of batch k's partials (small W). step: the step's
  // call (every chunk is done): waits for the lock, completes the sum and readies
  // the fold for batch k + 1 (no member folds k + 1 before the step opens it).
  // Otherwise gives up at once if another member holds the lock.
  void fold_partials(int64_t k, bool step) {
    for (int spins = 0;; ++spins) {
      bool free = false;
      if (fold_.busy.compare_exchange_weak(free, true, std::memory_order_acquire)) break;
      if (!step) return;
      if (spins < 4096)
        Phases::pause();
      else
        std::this_thread::yield();  // the holder was descheduled: let it run
    }
    if (fold_.batch == k) {
      const int64_t used = plan_.count(batch_rows(k));
      for (; fold_.next < used && slots_[static_cast<size_t>(fold_.next)].done.load(std::memory_order_acquire) == k;
           ++fold_.next) {
        if (fold_.next == 0) continue;  // the sum starts as partial 0 (complete once done)
        add_into(parts_, parts_ + fold_.next * wsize_, wsize_);
      }
    }
    if (step) {
      fold_.batch = k + 1;
      fold_.next = 0;
    }
    fold_.busy.store(false, std::memory_order_release);
  }

  // The sequential step after phase s, run by whoever finished its last chunk;
  // false ends the epoch.
  bool step(uint64_t s) {
    const auto k = static_cast<int64_t>(s / per_batch_);
    if (!rows_phase(s)) {
      first_ = false;
      return k + 1 < n_batches_;
    }
    r_.nonfinite_row = bad_row_[k & 1].load(std::memory_order_relaxed);
    if (r_.nonfinite_row >= 0) return false;  // a gathered row holds NaN/inf: stop before any update
    const int64_t bs = batch_rows(k), used = plan_.count(bs);
    double loss = 0.0;  // summed in chunk order: the same for any team size
    for (int64_t i = 0; i < used; ++i) loss += slots_[static_cast<size_t>(i)].loss;
    if (!std::isfinite(loss)) {
      r_.finite = false;
      return false;
    }
    column_sums(z_.data(), bs, a_.c, gb_.data(), false);
    sgd_update<T>(a_.b, gb_.data(), a_.b_buf, a_.c, no_decay_, first_);
    r_.loss_sum += loss;
    for (int64_t i = 0; i < used; ++i) r_.correct += slots_[static_cast<size_t>(i)].correct;
    r_.rows += bs;
    if (per_batch_ == 2) return true;
    fold_partials(k, true);
    sgd_update<T>(a_.w, parts_, a_.w_buf, wsize_, a_.opt, first_);
    refresh_w(Span{0, wsize_});
    first_ = false;
    return k + 1 < n_batches_;
  }

  // One member's loop over the phases.
  void member(int rank) {
    const BlasThreads single(1);  // thread-local in OpenBLAS: every member pins its own calls
    T* x = static_cast<T*>(xb_[static_cast<size_t>(rank)].get());
    int64_t ahead = -1;    // a chunk of phase s claimed while s - 1 ran, its first block in x
    bool ahead_ok = true;  // ... and that block is finite
    for (uint64_t s = 0; !phases_.stopped(); s = phases_.wait_past(s)) {
      const int64_t n = chunks_of(s);
      const auto k = static_cast<int64_t>(s / per_batch_);
      auto run = [&](int64_t i, bool gathered) {
        if (!rows_phase(s))
          update(k, i);
        else if (ahead_ok || !gathered)
          rows(k, i, x, gathered);
        if (phases_.finish(n)) {
          if (step(s))
            phases_.open(s + 1);
          else
            phases_.stop();
        }
      };
      if (ahead >= 0) run(std::exchange(ahead, -1), true);
      for (int64_t i; (i = phases_.claim(s, n)) >= 0;) run(i, false);
      if (per_batch_ == 1 && nt_ > 1) fold_partials(k, false);
      // Nothing left here: while the others finish s (and the update runs), gather
      // the first block of a chunk of the next batch. Its rows do not depend on W.
      if (per_batch_ == 1 && nt_ > 1 && k + 1 < n_batches_ && (ahead = phases_.claim_next(s, chunks_of(s + 1))) >= 0) {
        const Span span = plan_.span(batch_rows(k + 1), ahead);
        ahead_ok = gather_block(k + 1, span.begin, std::min(plan_.block, span.size()), x);
      }
    }
  }

  const EpochArgs<T>& a_;
  RowLoss& row_loss_;
  const int nt_;
  const ChunkPlan plan_;
  const int64_t n_batches_, wsize_;
  const bool few_;
  const bool fused_;
  const uint64_t per_batch_;
  Buffer w_copy_;
  T* wf_ = nullptr;  // W as the forward reads it
  std::vector<Buffer> xb_;
  std::vector<T> z_, gb_;
  Buffer parts_buf_;
  T* parts_ = nullptr;
  std::vector<ChunkSlot> slots_;
  SgdOptions no_decay_;
  bool first_;                                  // written only in the sequential steps
  std::atomic<int64_t> bad_row_[2] = {-1, -1};  // gathered NaN/inf: a row of batch k (index k & 1)
  Fold fold_;
  Phases phases_;
  EpochResult r_;
};

template <class T, class RowLoss>
EpochResult run_epoch(const EpochArgs<T>& a, RowLoss&& row_loss) {
  const int64_t bmax = std::min(a.batch_size, a.n_order);
  if (bmax <= 0) return EpochResult{};
  EpochTeam<T, std::remove_reference_t<RowLoss>> team(a, row_loss, bmax);
  return team.run();
}

}  // namespace

namespace {

// Many classes: each batch through the fused linear + cross-entropy kernel (it
// threads its own vocabulary tiles and keeps the logits of one chunk of rows at a
// time), then the SGD update. The team path above would keep one [c, d] weight
// gradient per row chunk (four or more: a 32000 x 512 model in float32 needs
// 65 MB each); this one keeps a single weight gradient.
template <class T>
EpochResult softmax_epoch_many_classes(const EpochArgs<T>& a, const int64_t* y) {
  EpochResult r;
  const int64_t bmax = std::min(a.batch_size, a.n_order);
  if (bmax <= 0) return r;
  const int64_t wsize = a.c * a.d;
  const Buffer xb_buf = allocate_buffer(std::max<int64_t>(1, bmax * a.d) * static_cast<int64_t>(sizeof(T)));
  const Buffer gw_buf = allocate_buffer(std::max<int64_t>(1, wsize) * static_cast<int64_t>(sizeof(T)));
  T* const xb = static_cast<T*>(xb_buf.get());
  T* const gw = static_cast<T*>(gw_buf.get());
  std::vector<T> gb(static_cast<size_t>(a.c));
  std::vector<int64_t> yb(static_cast<size_t>(bmax)), argmax(static_cast<size_t>(bmax));
  SgdOptions no_decay = a.opt;  // weight decay applies to w only
  no_decay.weight_decay = 0.0;
  bool first = a.first_step;
  for (int64_t start = 0; start < a.n_order; start += a.batch_size) {
    const int64_t bs = std::min(a.batch_size, a.n_order - start);
    const int64_t* idx = a.order + start;
    r.nonfinite_row = gather_rows_of(a, idx, Span{0, bs}, xb);
    if (r.nonfinite_row >= 0) return r;  // before any update uses the row
    for (int64_t i = 0; i < bs; ++i) yb[static_cast<size_t>(i)] = y[idx[i]];
    LinearXentArgs<T> la;
    la.h = xb;
    la.weight = a.w;
    la.bias = a.b;
    la.target = yb.data();
    la.n = bs;
    la.d = a.d;
    la.v = a.c;
    la.ignore_index = -1;  // labels are in [0, c) (checked by the caller): none is ignored
    la.reduction = Reduction::sum;
    la.grad_scale = 1.0 / static_cast<double>(bs);  // the gradients of the batch mean
    la.argmax = argmax.data();
    la.grad_weight = gw;
    la.grad_bias = a.b ? gb.data() : nullptr;
    const double loss = linear_cross_entropy<T>(la);
    if (!std::isfinite(loss)) {
      r.finite = false;
      return r;
    }
    for (int64_t i = 0; i < bs; ++i) r.correct += argmax[static_cast<size_t>(i)] == yb[static_cast<size_t>(i)];
    sgd_update<T>(a.w, gw, a.w_buf, wsize, a.opt, first);
    if (a.b) sgd_update<T>(a.b, gb.data(), a.b_buf, a.c, no_decay, first);
    first = false;
    r.loss_sum += loss;
    r.rows += bs;
  }
  return r;
}

}  // namespace

bool epoch_many_classes(int64_t c, bool weighted) { return c >= kManyClasses && !weighted; }

template <class T>
EpochResult softmax_epoch(const EpochArgs<T>& a, const int64_t* y) {
  if (epoch_many_classes(a.c, a.sample_weight != nullptr)) return softmax_epoch_many_classes(a, y);
  const auto bmax = static_cast<size_t>(std::min(a.batch_size, a.n_order));
  std::vector<int64_t> yb(bmax);
  std::vector<T> rl(a.sample_weight ? bmax : 0);  // weighted: the row losses
  return run_epoch(a, [&](T* z, const int64_t* idx, int64_t r0, int64_t m, int64_t bs, int64_t* correct) {
    // members write disjoint rows of yb and rl
    return softmax_rows(z, y, idx, m, a.c, bs, yb.data() + r0, correct, a.sample_weight,
                        a.sample_weight ? rl.data() + r0 : nullptr);
  });
}

template <class T>
EpochResult regression_epoch(const EpochArgs<T>& a, const T* y, RegressionLoss kind) {
  return run_epoch(a, [&](T* pred, const int64_t* idx, int64_t, int64_t m, int64_t bs, int64_t*) {
    return regression_rows(pred, y, idx, m, bs, kind, a.sample_weight);
  });
}

// ---- one minibatch at a time (data-parallel training) ----------------------
// The data-parallel path in Python runs these per step so it can all-reduce the
// gradient in between; the epoch loops above do the same work in team phases.

namespace {

// The products as the epoch computes them (the few-outputs kernels where it uses
// them), so that a data-parallel step on one rank equals the epoch bit for bit.
template <class T>
void linear_forward_as_epoch(const T* x, const T* w, const T* b, int64_t n, int64_t d, int64_t c, T* y) {
  if (few_outputs_supported<T>(c))
    few_outputs_forward<T>(x, w, b, n, d, c, y);
  else
    linear_forward<T>(x, w, b, n, d, c, y);
}
// grad[0, c*d) = gy^T x, grad[c*d, c*d + c) = column sums of gy.
template <class T>
void linear_backward_as_epoch(const T* x, const T* gy, int64_t n, int64_t d, int64_t c, T* grad) {
  if (!few_outputs_supported<T>(c))
    return linear_backward<T>(x, nullptr, gy, n, d, c, grad, grad + c * d, nullptr, false);
  few_outputs_weight_grad<T>(x, gy, n, d, c, grad, false);
  column_sums(gy, n, c, grad + c * d, false);
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
  gather_rows_of(a, idx, Span{0, bs}, xb);
  linear_forward_as_epoch<T>(xb, a.w, a.b, bs, a.d, a.c, logits);
  const double loss = softmax_rows(logits, y, idx, bs, a.c, bs, s.yb.data(), &r.correct);
  if (!std::isfinite(loss)) {
    r.finite = false;
    return r;
  }
  r.loss_sum = loss;
  linear_backward_as_epoch<T>(xb, logits, bs, a.d, a.c, grad);
  return r;
}

template <class T>
BatchResult regression_batch_grad(const EpochArgs<T>& a, const T* y, RegressionLoss kind, T* grad, BatchScratch<T>& s) {
  BatchResult r;
  const int64_t bs = a.n_order;
  const int64_t* idx = a.order;
  ensure_scratch(s, bs, a.d, 1);
  T* xb = s.xb.data();
  T* pred = s.out.data();
  gather_rows_of(a, idx, Span{0, bs}, xb);
  linear_forward_as_epoch<T>(xb, a.w, a.b, bs, a.d, 1, pred);
  const double loss = regression_rows(pred, y, idx, bs, bs, kind);
  if (!std::isfinite(loss)) {
    r.finite = false;
    return r;
  }
  r.loss_sum = loss;
  linear_backward_as_epoch<T>(xb, pred, bs, a.d, 1, grad);
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
template BatchResult softmax_batch_grad<double>(const EpochArgs<double>&, const int64_t*, double*,
                                                BatchScratch<double>&);
template BatchResult regression_batch_grad<float>(const EpochArgs<float>&, const float*, RegressionLoss, float*,
                                                  BatchScratch<float>&);
template BatchResult regression_batch_grad<double>(const EpochArgs<double>&, const double*, RegressionLoss, double*,
                                                   BatchScratch<double>&);
template void linear_sgd_step<float>(const EpochArgs<float>&, const float*, bool);
template void linear_sgd_step<double>(const EpochArgs<double>&, const double*, bool);
template int64_t first_nonfinite_row<float>(const float*, int64_t, int64_t);
template int64_t first_nonfinite_row<double>(const double*, int64_t, int64_t);

}  // namespace fastreg
