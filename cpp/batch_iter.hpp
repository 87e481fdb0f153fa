// The rules behind _core.BatchIter, the iterator over one epoch of a DataLoader:
// which rows the next batch holds, when the epoch ends, when torch's sampler would
// draw its extra permutation, whether a batch comes from the prefetch pipeline or
// from an inline-gathered chunk (and how big that chunk is), and what an iterator
// or a loader's buffer pool inherited through fork() does. Plain C++, no Python:
// the binding makes the arrays (and holds the Python callbacks) and asks this class.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <memory>
#include <vector>

#include <sys/types.h>
#include <unistd.h>

#include "loader.hpp"
#include "memory.hpp"

namespace fastreg {

// Throws std::out_of_range naming the first of idx[0..n) outside [0, rows), as
// name[i] = value: the kernels trust their indices.
void check_rows(const int64_t* idx, int64_t n, int64_t rows, const char* name);

// What an iterator is asked to do; checked by BatchSchedule's constructor.
struct LoaderOptions {
  int64_t batch_size = 1;
  bool drop_last = false;                     // leave out a last, short batch
  int64_t first_batch = 0;                    // batches already yielded (resuming mid-epoch)
  int prefetch = -1;                          // 1: always through the prefetch pipeline, 0: never, -1: by batch size
  bool unbatched = false;                     // single samples without the row dimension (batch_size 1)
  std::chrono::microseconds worker_delay{0};  // tests only: see BatchPipeline
};

// Batch buffers a DataLoader's iterators share, one epoch after another. Remembers
// its process: after fork() its mutex may have been copied locked, so a child
// leaves it alone (and never frees it).
struct LoaderPool {
  std::shared_ptr<BufferPool> pool = std::make_shared<BufferPool>(0);
  pid_t pid;
  LoaderPool();
  ~LoaderPool();
  LoaderPool(const LoaderPool&) = delete;
  LoaderPool& operator=(const LoaderPool&) = delete;
};

// Rows [first_row, first_row + rows) of the order, batches [first, first + batches),
// gathered at once; `threads`: big enough to gather with threads (and, in the
// binding, without the GIL).
struct ChunkSpan {
  int64_t first = 0, batches = 0, first_row = 0, rows = 0;
  bool threads = false;
};

// One epoch's batches over `columns` (each `rows` rows), in the order set_order
// gives: batch k holds order[k*batch_size .. min((k+1)*batch_size, n)).
// Per batch the caller asks, in turn: exhaust_draw_due(), at_end(), prefetch_next(),
// then takes the batch from pipeline() or from the current chunk (chunk_needed(),
// plan_chunk(), gather_chunk(), chunk_filled()), and calls advance().
// Not thread-safe: the caller serialises the calls (the binding, with the GIL),
// except that gather_chunk() and the pipeline pipeline() returned may run while
// another thread calls close(): they read only the columns and the order, which
// stay as they are until the schedule is destroyed.
class BatchSchedule {
 public:
  // Throws std::invalid_argument for options out of range. `pool` (may be null)
  // lends its buffers unless it was made in another process.
  BatchSchedule(std::vector<LoaderColumn> columns, int64_t rows, const LoaderOptions& options,
                const LoaderPool* pool = nullptr);
  ~BatchSchedule();
  BatchSchedule(const BatchSchedule&) = delete;
  BatchSchedule& operator=(const BatchSchedule&) = delete;

  // Copies the epoch's order (rows of the columns). Throws std::out_of_range for a
  // row outside [0, rows) (the kernels trust their indices), std::invalid_argument
  // when first_batch is past its last batch.
  void set_order(const int64_t* idx, int64_t n);
  bool has_order() const { return static_cast<bool>(order_); }

  // torch's sampler draws (and discards) one more permutation as soon as a batch asks
  // for an index past the end: true once, at the batch where that happens.
  bool exhaust_draw_due() {
    if (exhaust_drawn_ || (next_ + 1) * batch_size_ <= total_) return false;
    exhaust_drawn_ = true;
    return true;
  }
  bool at_end() const { return next_ >= end_; }
  int64_t batch_rows() const { return std::min(batch_size_, total_ - next_ * batch_size_); }

  // Whether the next batch comes from the prefetch pipeline. The pipeline pays a
  // thread hand-off per batch: worth it for batches of kReleaseGilBytes and more, or
  // when asked for. First drops a pipeline inherited through fork() (see pipeline()).
  bool prefetch_next() {
    if (pipeline_ && pipeline_pid_ != getpid()) abandon_inherited_pipeline();
    if (prefetch_ == 0) return false;
    if (prefetch_ == 1) return true;
    return batch_bytes() >= kReleaseGilBytes && end_ - next_ > 1;
  }
  // The pipeline serving batches from next_batch(), started on first use. The caller
  // waits on it without holding a lock of its own (it may be closed meanwhile).
  std::shared_ptr<BatchPipeline> pipeline();

  // Small batches are gathered a chunk at a time (~kChunkBytes, all columns), which
  // the batches are then views of: per batch no allocation and no thread hand-off.
  bool chunk_needed() const { return next_ >= chunk_end_; }
  ChunkSpan plan_chunk() const;
  // Gathers the span into dst[c] (one per column, span.rows rows of its output).
  void gather_chunk(const ChunkSpan& span, void* const* dst) const;
  void chunk_filled(const ChunkSpan& span) {
    chunk_first_ = span.first;
    chunk_end_ = span.first + span.batches;
  }
  // Where the next batch starts in the current chunk, in rows.
  int64_t chunk_row() const { return (next_ - chunk_first_) * batch_size_; }
  // The chunk holds the next batch and nothing else: it can be handed out as is.
  bool batch_is_chunk() const { return next_ == chunk_first_ && chunk_end_ - chunk_first_ == 1 && !unbatched_; }

  void advance() { ++next_; }

  // Ends the iteration. Returns the pipeline, stopped, for the caller to drop where
  // joining its threads suits it (null when there is none, or it was inherited
  // through fork(): that one is left alone).
  std::shared_ptr<BatchPipeline> close();

  int64_t next_batch() const { return next_; }
  int64_t end_batch() const { return end_; }
  bool done() const { return done_; }
  bool prefetching() const { return static_cast<bool>(pipeline_); }
  bool unbatched() const { return unbatched_; }
  size_t num_columns() const { return columns_.size(); }
  const LoaderColumn& column(size_t c) const { return columns_[c]; }

  // Below this many bytes a gather takes well under a microsecond of copying, less
  // than releasing and re-taking the GIL or handing a batch between threads.
  static constexpr int64_t kReleaseGilBytes = int64_t{1} << 16;
  // Small batches are gathered about this many bytes at a time (all columns): enough
  // to make the per-chunk costs (arrays, a GIL release) negligible per batch, small
  // enough to stay in L2 until the caller reads it.
  static constexpr int64_t kChunkBytes = int64_t{128} << 10;
  // Prefetching keeps at most this many bytes of batches ready ahead of the consumer.
  static constexpr int64_t kPrefetchBytes = int64_t{64} << 20;

 private:
  int64_t batch_bytes() const { return batch_size_ * row_bytes_; }
  void abandon_inherited_pipeline();

  std::vector<LoaderColumn> columns_;
  int64_t rows_;       // rows of every column
  int64_t row_bytes_;  // one output row, all columns
  int64_t batch_size_;
  bool drop_last_, unbatched_;
  int prefetch_;
  std::chrono::microseconds worker_delay_;
  std::shared_ptr<const std::vector<int64_t>> order_;
  int64_t total_ = 0, end_ = 0;              // rows in the order, batches in the epoch
  int64_t next_;                             // next batch to yield
  int64_t chunk_first_ = 0, chunk_end_ = 0;  // batches [first, end) live in the current chunk
  bool done_ = false, exhaust_drawn_ = false;
  std::shared_ptr<BatchPipeline> pipeline_;
  pid_t pipeline_pid_ = 0;            // process that started pipeline_ (its threads live only there)
  std::shared_ptr<BufferPool> pool_;  // shared with the loader's other iterators, or null
  pid_t pool_pid_ = 0;
};

}  // namespace fastreg
