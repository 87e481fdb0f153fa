#include "batch_iter.hpp"

#include <stdexcept>
#include <string>

#include "runtime.hpp"

namespace fastreg {

void check_rows(const int64_t* idx, int64_t n, int64_t rows, const char* name) {
  for (int64_t i = 0; i < n; ++i)
    if (idx[i] < 0 || idx[i] >= rows)
      throw std::out_of_range(std::string(name) + "[" + std::to_string(i) + "] = " + std::to_string(idx[i]) +
                              " is out of range for " + std::to_string(rows) + " rows");
}

LoaderPool::LoaderPool() : pid(getpid()) {}

LoaderPool::~LoaderPool() {
  if (pid != getpid()) new std::shared_ptr<BufferPool>(std::move(pool));  // a child's copy: never freed
}

BatchSchedule::BatchSchedule(std::vector<LoaderColumn> columns, int64_t rows, const LoaderOptions& options,
                             const LoaderPool* pool)
    : columns_(std::move(columns)),
      rows_(rows),
      row_bytes_(0),
      batch_size_(options.batch_size),
      drop_last_(options.drop_last),
      unbatched_(options.unbatched),
      prefetch_(options.prefetch),
      worker_delay_(options.worker_delay),
      next_(options.first_batch) {
  if (options.batch_size <= 0)
    throw std::invalid_argument("batch_size must be a positive integer, got " + std::to_string(options.batch_size));
  if (options.prefetch < -1 || options.prefetch > 1) throw std::invalid_argument("prefetch must be -1 (auto), 0 or 1");
  if (options.worker_delay.count() < 0) throw std::invalid_argument("worker_delay_us must be >= 0");
  if (options.unbatched && options.batch_size != 1) throw std::invalid_argument("unbatched takes batch_size 1");
  if (options.first_batch < 0) throw std::invalid_argument("first_batch must be >= 0");
  if (pool && pool->pid == getpid()) {
    pool_ = pool->pool;
    pool_pid_ = pool->pid;
  }
  for (const auto& c : columns_) row_bytes_ += c.out_row_bytes();
}

// No lock to release here: the workers never take one the caller holds.
BatchSchedule::~BatchSchedule() { close(); }

void BatchSchedule::set_order(const int64_t* idx, int64_t n) {
  check_rows(idx, n, rows_, "order");
  order_ = std::make_shared<const std::vector<int64_t>>(idx, idx + n);
  total_ = n;
  end_ = drop_last_ ? n / batch_size_ : (n + batch_size_ - 1) / batch_size_;
  if (next_ > end_)
    throw std::invalid_argument("first_batch " + std::to_string(next_) + " is past the last batch (" +
                                std::to_string(end_) + " batches)");
}

std::shared_ptr<BatchPipeline> BatchSchedule::pipeline() {
  if (pipeline_) return pipeline_;
  if (pool_ && pool_pid_ != getpid())  // inherited through fork(): see LoaderPool
    new std::shared_ptr<BufferPool>(std::move(pool_));
  const int workers = std::clamp(num_threads() - 1, 1, 4);
  const int64_t bytes = std::max<int64_t>(batch_bytes(), 1);
  const int depth = static_cast<int>(std::clamp<int64_t>(kPrefetchBytes / bytes, 1, 2 * (workers + 1)));
  pipeline_ =
      std::make_shared<BatchPipeline>(columns_, order_, batch_size_, next_, end_, workers, depth, pool_, worker_delay_);
  pipeline_pid_ = getpid();
  return pipeline_;
}

ChunkSpan BatchSchedule::plan_chunk() const {
  ChunkSpan s;
  const int64_t per_batch = std::max<int64_t>(batch_bytes(), 1);
  s.first = next_;
  s.batches = std::clamp<int64_t>(kChunkBytes / per_batch, 1, end_ - next_);
  s.first_row = next_ * batch_size_;
  s.rows = std::min(total_, (next_ + s.batches) * batch_size_) - s.first_row;
  s.threads = s.rows * row_bytes_ >= kReleaseGilBytes;
  return s;
}

void BatchSchedule::gather_chunk(const ChunkSpan& span, void* const* dst) const {
  const int64_t* idx = order_->data() + span.first_row;
  for (size_t c = 0; c < columns_.size(); ++c) columns_[c].gather(idx, span.rows, dst[c], span.threads);
}

std::shared_ptr<BatchPipeline> BatchSchedule::close() {
  done_ = true;
  chunk_end_ = 0;
  if (!pipeline_) return nullptr;
  if (pipeline_pid_ != getpid()) {
    abandon_inherited_pipeline();
    return nullptr;
  }
  pipeline_->stop();
  return std::move(pipeline_);
}

// After fork() the child holds a copy of the parent's pipeline but none of its
// threads: joining them throws (std::terminate in a destructor), and its mutex may
// have been copied while a worker held it. Such a pipeline is leaked on purpose (at
// most `depth` batches, in the child only); pipeline() then starts a fresh one from
// next_batch(), so the iteration goes on correctly in the child.
void BatchSchedule::abandon_inherited_pipeline() {
  new std::shared_ptr<BatchPipeline>(std::move(pipeline_));  // intentionally never freed
}

}  // namespace fastreg
