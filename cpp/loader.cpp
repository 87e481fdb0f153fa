#include "loader.hpp"

#include <algorithm>
#include <chrono>
#include <new>
#include <stdexcept>
#include <system_error>

#include <pthread.h>
#include <sched.h>

#include "simd.hpp"

namespace fastreg {
namespace {

// Each thread should move at least ~1 MiB: below that, starting a thread costs
// more than the copy it takes over.
constexpr int64_t kBytesPerThread = int64_t{1} << 20;

int64_t rows_per_thread(int64_t row_bytes) {
  return std::max<int64_t>(1, kBytesPerThread / std::max<int64_t>(row_bytes, 1));
}

// uint8 -> float32 * scale. A single IEEE multiply, so both variants give results
// identical to NumPy's x.astype(float32) * float32(scale).
FASTREG_INLINE void u8_rows_body(const uint8_t* __restrict src, int64_t row_len, const int64_t* idx, int64_t b,
                                 int64_t e, float scale, float* __restrict dst) {
  for (int64_t i = b; i < e; ++i) {
    if (i + kRowPrefetchAheadU8 < e) prefetch_row(src + idx[i + kRowPrefetchAheadU8] * row_len, row_len);
    const uint8_t* __restrict s = src + idx[i] * row_len;
    float* __restrict d = dst + i * row_len;
    for (int64_t j = 0; j < row_len; ++j) d[j] = static_cast<float>(s[j]) * scale;
  }
}

void u8_rows_scalar(const uint8_t* src, int64_t row_len, const int64_t* idx, int64_t b, int64_t e, float scale,
                    float* dst) {
  u8_rows_body(src, row_len, idx, b, e, scale, dst);
}

FASTREG_TARGET_AVX2 void u8_rows_avx2(const uint8_t* src, int64_t row_len, const int64_t* idx, int64_t b, int64_t e,
                                      float scale, float* dst) {
  u8_rows_body(src, row_len, idx, b, e, scale, dst);
}

void u8_range(const uint8_t* src, int64_t row_len, const int64_t* idx, int64_t b, int64_t e, float scale, float* dst) {
  // avx512 too: a 512-bit variant measured 1-9% slower (docs/build.md).
  if (simd_at_least(Simd::avx2))
    u8_rows_avx2(src, row_len, idx, b, e, scale, dst);
  else
    u8_rows_scalar(src, row_len, idx, b, e, scale, dst);
}

uint64_t splitmix64(uint64_t& x) {
  uint64_t z = (x += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

// xoshiro256** (Blackman & Vigna): fast, 256-bit state, good statistical quality.
struct Xoshiro256 {
  uint64_t s[4];
  static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
  uint64_t next() {
    const uint64_t r = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return r;
  }
  // Unbiased integer in [0, bound) (Lemire's multiply-and-reject).
  uint64_t below(uint64_t bound) {
    __uint128_t m = static_cast<__uint128_t>(next()) * bound;
    auto low = static_cast<uint64_t>(m);
    if (low < bound) {
      const uint64_t threshold = -bound % bound;
      while (low < threshold) {
        m = static_cast<__uint128_t>(next()) * bound;
        low = static_cast<uint64_t>(m);
      }
    }
    return static_cast<uint64_t>(m >> 64);
  }
};

}  // namespace

void gather_rows(const void* src, int64_t row_bytes, const int64_t* idx, int64_t n, void* dst) {
  parallel_for(n, rows_per_thread(row_bytes),
               [&](int64_t b, int64_t e) { gather_range(src, row_bytes, idx, b, e, dst); });
}

void gather_rows_u8_to_f32(const uint8_t* src, int64_t row_len, const int64_t* idx, int64_t n, float scale,
                           float* dst) {
  // Grain counts the 5 bytes each element moves (1 read, 4 written).
  parallel_for(n, rows_per_thread(5 * row_len),
               [&](int64_t b, int64_t e) { u8_range(src, row_len, idx, b, e, scale, dst); });
}

void random_permutation(uint64_t seed, uint64_t stream, int64_t n, int64_t* out) {
  uint64_t x = seed ^ (0x6a09e667f3bcc909ULL * (stream + 1));
  Xoshiro256 rng{};
  for (auto& w : rng.s) w = splitmix64(x);
  for (int64_t i = 0; i < n; ++i) out[i] = i;
  for (int64_t i = n - 1; i > 0; --i) {
    const auto j = static_cast<int64_t>(rng.below(static_cast<uint64_t>(i) + 1));
    std::swap(out[i], out[j]);
  }
}

void LoaderColumn::gather(const int64_t* idx, int64_t n, void* dst, bool threads) const {
  if (u8_to_f32) {
    const auto* s = static_cast<const uint8_t*>(src);
    auto* d = static_cast<float*>(dst);
    if (threads)
      gather_rows_u8_to_f32(s, row_len, idx, n, scale, d);
    else
      u8_range(s, row_len, idx, 0, n, scale, d);
  } else {
    if (threads)
      gather_rows(src, row_len * itemsize, idx, n, dst);
    else
      gather_range(src, row_len * itemsize, idx, 0, n, dst);
  }
}

namespace {
int64_t batch_bytes(const std::vector<LoaderColumn>& columns, int64_t batch_size) {
  int64_t bytes = 0;
  for (const auto& c : columns) bytes += batch_size * c.out_row_bytes();
  return bytes;
}
}  // namespace

BatchPipeline::BatchPipeline(std::vector<LoaderColumn> columns, std::shared_ptr<const std::vector<int64_t>> order,
                             int64_t batch_size, int64_t first_batch, int64_t end_batch, int workers, int depth,
                             std::shared_ptr<BufferPool> pool, std::chrono::microseconds worker_delay)
    : columns_(std::move(columns)),
      order_(std::move(order)),
      batch_size_(batch_size),
      end_(end_batch),
      depth_(std::max(depth, 1)),
      worker_delay_(worker_delay),
      next_claim_(first_batch),
      consumed_(first_batch),
      // A first guess until a gather is timed: 4 bytes a nanosecond, below what a
      // row-by-row copy reaches, so the first batches are prefetched rather than not.
      gather_time_(std::chrono::microseconds(10 + batch_bytes(columns_, batch_size) / 4000)),
      slots_(static_cast<size_t>(std::max(depth, 1))),
      pool_(pool ? std::move(pool) : std::make_shared<BufferPool>(0)) {
  // Enough buffers for the batches in flight plus a few the caller still holds.
  pool_->keep_at_least(columns_.size() * static_cast<size_t>(2 * depth_ + 4));
  threads_.reserve(static_cast<size_t>(std::max(workers, 0)));
  for (int w = 0; w < workers; ++w) {
    try {
      threads_.emplace_back([this] { worker_loop(); });
    } catch (const std::system_error&) {  // no more threads: fewer workers (with none, next() gathers each batch)
      break;
    }
#ifdef SCHED_IDLE
    // Idle priority: a worker only uses a core nobody else wants. At normal priority
    // it competes with the caller's own threads (OpenBLAS's or OpenMP's, which spin
    // while they wait for each other), and one of them descheduled stalls a whole
    // GEMM for longer than the gather saves. Set here, so it holds before the worker
    // runs; unprivileged, and a failure just leaves the normal priority.
    sched_param param{};
    pthread_setschedparam(threads_.back().native_handle(), SCHED_IDLE, &param);
#endif
  }
}

BatchPipeline::~BatchPipeline() {
  stop();
  for (auto& t : threads_) t.join();
}

void BatchPipeline::stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  work_cv_.notify_all();
  ready_cv_.notify_all();
}

std::vector<Buffer> BatchPipeline::gather(int64_t k) const {
  const int64_t begin = k * batch_size_;
  const int64_t rows = std::min<int64_t>(batch_size_, static_cast<int64_t>(order_->size()) - begin);
  std::vector<Buffer> buffers;
  buffers.reserve(columns_.size());
  for (const auto& c : columns_) {
    buffers.push_back(pool_->get(rows * c.out_row_bytes()));
    c.gather(order_->data() + begin, rows, buffers.back().get(), /*threads=*/false);
  }
  return buffers;
}

// Called with `lock` held; gathers without it so workers and the consumer overlap.
void BatchPipeline::produce(int64_t k, std::unique_lock<std::mutex>& lock) {
  lock.unlock();
  const auto start = std::chrono::steady_clock::now();
  std::vector<Buffer> buffers;
  std::exception_ptr error;
  try {
    buffers = gather(k);
  } catch (...) {
    error = std::current_exception();
  }
  const auto took = std::chrono::steady_clock::now() - start;
  lock.lock();
  if (!error) gather_time_ = took;
  if (k < consumed_) return;  // the consumer gathered it itself meanwhile: drop this copy
  Slot& slot = slots_[static_cast<size_t>(k % depth_)];
  slot.batch = k;
  slot.buffers = std::move(buffers);
  slot.error = error;
  ready_cv_.notify_all();
}

void BatchPipeline::worker_loop() {
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    work_cv_.wait(lock, [this] { return stop_ || can_claim(); });
    if (stop_) return;
    const int64_t k = next_claim_++;
    if (worker_delay_.count() > 0 && work_cv_.wait_for(lock, worker_delay_, [this] { return stop_; })) return;
    produce(k, lock);
  }
}

std::vector<Buffer> BatchPipeline::next() {
  std::unique_lock<std::mutex> lock(mu_);
  const int64_t k = consumed_;
  if (k >= end_) throw std::logic_error("BatchPipeline::next past the last batch");
  Slot& slot = slots_[static_cast<size_t>(k % depth_)];
  bool helped = false;
  for (;;) {
    if (stop_) throw std::logic_error("BatchPipeline::next after stop");
    if (slot.batch == k) {
      std::vector<Buffer> out = std::move(slot.buffers);
      std::exception_ptr error = slot.error;
      slot = Slot{};
      ++consumed_;
      work_cv_.notify_all();  // a slot is free: workers may run further ahead
      if (error) std::rethrow_exception(error);
      return out;
    }
    // Nobody has started batch k: gather it here. Else, rather than idle while a
    // worker finishes it, gather one further ahead (once).
    if (next_claim_ == k || (!helped && can_claim())) {
      helped = next_claim_ != k;
      produce(next_claim_++, lock);
      continue;
    }
    // A worker is on batch k. Give it about one gather's time (already spent if we
    // helped): a worker that has not finished by then is not getting a core (idle
    // priority on a busy machine), and waiting for it could take milliseconds.
    // Gather k here instead; the worker's copy is dropped when it finishes.
    if (!helped) {
      const auto deadline = std::chrono::steady_clock::now() + gather_time_;
      helped = true;  // one wait at most
      if (ready_cv_.wait_until(lock, deadline, [&] { return stop_ || slot.batch == k; })) continue;
    }
    ++consumed_;
    work_cv_.notify_all();
    lock.unlock();
    return gather(k);
  }
}

}  // namespace fastreg
