// Memory helpers shared by the loader and the epoch: 64-byte aligned buffers (pooled
// or not) and the row prefetch both use for rows read in random order. Plain C++.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <utility>
#include <vector>

namespace fastreg {

// Rows come in random order, so the hardware prefetcher cannot guess the next one:
// each gather asks for a row a few ahead while it copies or converts this one, line
// by line, into L2 (prefetcht1): into L1 (prefetcht0) the prefetches stalled the
// copy as the misses they avoided did. The distances were measured on whole epochs
// (docs/models.md, docs/data.md).
constexpr int64_t kRowPrefetchAhead = 4;       // rows copied as they are
constexpr int64_t kRowPrefetchAheadU8 = 2;     // uint8 rows (4 ahead measured slower)
constexpr int kRowsAtOnce = 4;                 // rows copied side by side (see gather_range)
constexpr int64_t kRowPrefetchMinBytes = 256;  // shorter rows: a line or so, nothing to gain

inline void prefetch_row(const void* row, int64_t bytes) {
  const char* p = static_cast<const char*>(row);
  for (int64_t off = 0; off < bytes; off += 64) __builtin_prefetch(p + off, 0, 2);
}

class BufferPool;

// A 64-byte aligned heap buffer. Freeing it returns it to its pool (if any) for
// reuse, else to the heap. Ownership moves to whoever holds it: the binding hands
// it to NumPy, so a buffer is only reused after the array made from it is freed.
struct BufferDeleter {
  std::shared_ptr<BufferPool> pool;
  size_t size = 0;
  void operator()(void* p) const noexcept;
};
using Buffer = std::unique_ptr<void, BufferDeleter>;
Buffer allocate_buffer(int64_t bytes);  // unpooled; throws std::bad_alloc

// Keeps up to `keep` freed buffers per size for reuse. Fresh large allocations
// are mmapped by the allocator and page-fault on first touch, which costs more
// than the copy into them; recycled buffers are already mapped (and often cached).
// A pool may serve many pipelines one after another (a loader's epochs): buffers
// then stay mapped across epochs, and the memory in use stays flat.
class BufferPool : public std::enable_shared_from_this<BufferPool> {
 public:
  explicit BufferPool(size_t keep) : keep_(keep) {}
  ~BufferPool();
  Buffer get(int64_t bytes);  // throws std::bad_alloc
  void put(void* p, size_t size) noexcept;
  void keep_at_least(size_t keep);

 private:
  std::mutex mu_;
  size_t keep_;
  std::vector<std::pair<size_t, void*>> free_;
};

}  // namespace fastreg
