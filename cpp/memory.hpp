// Memory helpers shared by the loader and the epoch: 64-byte aligned buffers (pooled
// or not) and the row gather both use for rows read in random order. Plain C++.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <mutex>
#include <utility>
#include <vector>

#include "simd.hpp"  // FASTREG_INLINE

namespace fastreg {

// Rows come in random order, so the hardware prefetcher cannot guess the next one:
// each gather asks for a row a few ahead while it copies or converts this one, line
// by line, into L2 (prefetcht1): into L1 (prefetcht0) the prefetches stalled the
// copy as the misses they avoided did. The distances were measured on whole epochs
// (docs/models.md, docs/data.md).
constexpr int64_t kRowPrefetchAhead = 4;       // the epoch's uint8 rows, prefetched a group at a time
constexpr int64_t kRowPrefetchAheadU8 = 2;     // the loader's uint8 -> float32 rows (4 ahead measured slower)
constexpr int kRowsAtOnce = 4;                 // rows copied side by side (see gather_lines)
constexpr int64_t kRowPrefetchMinBytes = 256;  // shorter rows: a line or so, nothing to gain

inline void prefetch_row(const void* row, int64_t bytes) {
  const char* p = static_cast<const char*>(row);
  for (int64_t off = 0; off < bytes; off += 64) __builtin_prefetch(p + off, 0, 2);
}

// How gather_lines moves a row: CopyLines copies its bytes; the epoch's first pass
// also checks them for NaN/inf while they are in registers (epoch.cpp). A policy has
// a per-row State, line() for each whole 64-byte line, and finish() for the bytes
// [off, row_bytes) left, which says whether the row is good (all of it is in out_row).
struct CopyLines {
  struct State {};
  static void line(State&, char* dst, const char* src) { std::memcpy(dst, src, 64); }
  static bool finish(State&, char* out_row, const char* in_row, int64_t off, int64_t row_bytes) {
    std::memcpy(out_row + off, in_row + off, static_cast<size_t>(row_bytes - off));
    return true;
  }
};

// Rows at src + idx[i] * row_bytes, i in [b, e), to dst + i * row_bytes. One group
// of `rows` <= kRowsAtOnce rows, a cache line of each in turn (several row streams in
// flight keep more misses outstanding than one), prefetching the same lines of the
// rows two groups ahead (rows come in random order, so the hardware cannot guess
// them). Returns the first row of the group the policy rejects, or -1.
template <class Lines>
FASTREG_INLINE int gather_group(Lines& lines, const char* src, int64_t row_bytes, const int64_t* idx, int64_t i,
                                int rows, int64_t e, char* dst) {
  const char* in[kRowsAtOnce];
  const char* ahead[kRowsAtOnce];
  typename Lines::State state[kRowsAtOnce];
  for (int k = 0; k < rows; ++k) {
    in[k] = src + idx[i + k] * row_bytes;
    const int64_t n = i + k + 2 * kRowsAtOnce;
    ahead[k] = n < e ? src + idx[n] * row_bytes : nullptr;
  }
  char* out = dst + i * row_bytes;
  int64_t off = 0;
  for (; off + 64 <= row_bytes; off += 64)
    for (int k = 0; k < rows; ++k) {
      if (ahead[k]) __builtin_prefetch(ahead[k] + off, 0, 2);
      lines.line(state[k], out + k * row_bytes + off, in[k] + off);
    }
  int bad = -1;
  for (int k = 0; k < rows; ++k) {
    if (ahead[k] && off < row_bytes) __builtin_prefetch(ahead[k] + off, 0, 2);
    if (!lines.finish(state[k], out + k * row_bytes, in[k], off, row_bytes) && bad < 0) bad = k;
  }
  return bad;
}

// The row gather of the loader and of the epoch: rows idx[b, e) of a C-contiguous
// source with rows of row_bytes bytes into rows [b, e) of dst, on the calling
// thread, moved by `lines` (CopyLines: as they are). Returns the position i of the
// first row the policy rejects (the rows of its group are copied), or -1.
template <class Lines>
FASTREG_INLINE int64_t gather_lines(Lines& lines, const void* src, int64_t row_bytes, const int64_t* idx, int64_t b,
                                    int64_t e, void* dst) {
  const char* s = static_cast<const char*>(src);
  char* d = static_cast<char*>(dst);
  for (int64_t i = b; i < e; i += kRowsAtOnce) {
    const int rows = static_cast<int>(std::min<int64_t>(kRowsAtOnce, e - i));
    const int bad = gather_group(lines, s, row_bytes, idx, i, rows, e, d);
    if (bad >= 0) return i + bad;
  }
  return -1;
}

// gather_lines(CopyLines) for any row width: rows of 1, 2, 4 or 8 bytes (labels)
// are copied as elements and rows shorter than kRowPrefetchMinBytes row by row,
// where a memcpy call or a prefetch would cost more than the copy.
void gather_range(const void* src, int64_t row_bytes, const int64_t* idx, int64_t b, int64_t e, void* dst);

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
