// Minibatch gathering for the shuffled loader: copy the rows a batch names into a
// fresh contiguous buffer (optionally converting uint8 -> float32 * scale), a fast
// seeded permutation, and a prefetch pipeline that gathers the next batches on
// worker threads while the caller works. Plain C++, no Python.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdlib>
#include <exception>
#include <memory>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

#include "memory.hpp"

namespace fastreg {

// Copy rows idx[0..n) of a C-contiguous source with rows of row_bytes bytes into dst
// (n*row_bytes bytes). Indices must already be validated by the caller. Multi-threaded for big batches.
void gather_rows(const void* src, int64_t row_bytes, const int64_t* idx, int64_t n, void* dst);
// Same, converting uint8 rows of row_len elements to float32 multiplied by scale (ToTensor's /255).
void gather_rows_u8_to_f32(const uint8_t* src, int64_t row_len, const int64_t* idx, int64_t n, float scale, float* dst);

// Fills out[0..n) with a permutation of 0..n-1 that depends only on (seed, stream)
// (Fisher-Yates driven by xoshiro256**, seeded through SplitMix64). The loader uses
// stream = epoch, so every (seed, epoch) pair has its own reproducible order.
void random_permutation(uint64_t seed, uint64_t stream, int64_t n, int64_t* out);

// One array a loader serves. Rows are copied byte for byte, or converted
// uint8 -> float32 * scale when u8_to_f32 is set.
struct LoaderColumn {
  const void* src = nullptr;  // C-contiguous, rows of row_len elements
  int64_t row_len = 0;        // elements per row (product of the trailing shape)
  int64_t itemsize = 0;       // bytes per source element
  bool u8_to_f32 = false;
  float scale = 1.0f;

  int64_t out_row_bytes() const { return row_len * (u8_to_f32 ? int64_t{4} : itemsize); }
  // Gathers rows idx[0..n) into dst on the calling thread only (threads=false) or
  // with parallel_for for big batches (threads=true).
  void gather(const int64_t* idx, int64_t n, void* dst, bool threads) const;
};

// Gathers batches [first_batch, end_batch) of `order` (batch k holds rows
// order[k*batch_size .. min((k+1)*batch_size, order.size()))) into fresh buffers,
// one per column, on `workers` background threads running at most `depth` batches
// ahead of the consumer. The workers run at idle priority (Linux SCHED_IDLE), so they
// use only spare cores. The consumer never waits long: it gathers a batch nobody has
// started, helps with one further ahead, and re-gathers its batch itself when the
// worker on it has not finished within a gather's time. The destructor stops and
// joins every worker. Buffers come from `pool` (a fresh one when null).
// worker_delay is for tests: each worker then waits that long after claiming a
// batch, as a worker that gets no core would.
class BatchPipeline {
 public:
  BatchPipeline(std::vector<LoaderColumn> columns, std::shared_ptr<const std::vector<int64_t>> order,
                int64_t batch_size, int64_t first_batch, int64_t end_batch, int workers, int depth,
                std::shared_ptr<BufferPool> pool = nullptr, std::chrono::microseconds worker_delay = {});
  ~BatchPipeline();
  BatchPipeline(const BatchPipeline&) = delete;
  BatchPipeline& operator=(const BatchPipeline&) = delete;

  // The next batch's buffers, in order. Blocks until it is ready (call it without
  // holding a Python lock). Rethrows a worker's error; throws std::logic_error
  // after stop() or past end_batch.
  std::vector<Buffer> next();
  // Makes waiting and future next() calls fail and lets workers exit; idempotent.
  void stop();

 private:
  struct Slot {
    int64_t batch = -1;  // batch held, -1 when empty
    std::vector<Buffer> buffers;
    std::exception_ptr error;
  };
  bool can_claim() const { return next_claim_ < end_ && next_claim_ < consumed_ + depth_; }
  std::vector<Buffer> gather(int64_t k) const;                  // batch k's buffers (no lock needed)
  void produce(int64_t k, std::unique_lock<std::mutex>& lock);  // gathers batch k into its slot
  void worker_loop();

  std::vector<LoaderColumn> columns_;
  std::shared_ptr<const std::vector<int64_t>> order_;
  int64_t batch_size_, end_;
  int64_t depth_;
  std::chrono::microseconds worker_delay_;
  std::mutex mu_;
  std::condition_variable work_cv_;   // workers wait for room to run ahead
  std::condition_variable ready_cv_;  // the consumer waits for its batch
  int64_t next_claim_;                // first batch nobody has started
  int64_t consumed_;                  // next batch the consumer takes
  bool stop_ = false;
  std::chrono::steady_clock::duration gather_time_;  // how long the last gather took
  std::vector<Slot> slots_;                          // batch k lives in slots_[k % depth_]
  std::shared_ptr<BufferPool> pool_;
  std::vector<std::thread> threads_;
};

}  // namespace fastreg
