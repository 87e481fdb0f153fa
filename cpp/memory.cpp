#include "memory.hpp"

#include <algorithm>
#include <cstdlib>
#include <new>

namespace fastreg {
namespace {
size_t rounded_size(int64_t bytes) {
  // aligned_alloc wants a multiple of the alignment; never 0.
  return (static_cast<size_t>(std::max<int64_t>(bytes, 1)) + 63) & ~size_t{63};
}
// Fixed-size element copies: a memcpy call per 4- or 8-byte label would cost more
// than the copy itself.
template <class T>
void gather_fixed(const void* src, const int64_t* idx, int64_t b, int64_t e, void* dst) {
  const T* s = static_cast<const T*>(src);
  T* d = static_cast<T*>(dst);
  for (int64_t i = b; i < e; ++i) d[i] = s[idx[i]];
}
}  // namespace

void gather_range(const void* src, int64_t row_bytes, const int64_t* idx, int64_t b, int64_t e, void* dst) {
  switch (row_bytes) {
    case 1:
      return gather_fixed<uint8_t>(src, idx, b, e, dst);
    case 2:
      return gather_fixed<uint16_t>(src, idx, b, e, dst);
    case 4:
      return gather_fixed<uint32_t>(src, idx, b, e, dst);
    case 8:
      return gather_fixed<uint64_t>(src, idx, b, e, dst);
    default:
      break;
  }
  if (row_bytes < kRowPrefetchMinBytes) {
    const char* s = static_cast<const char*>(src);
    char* d = static_cast<char*>(dst);
    for (int64_t i = b; i < e; ++i)
      std::memcpy(d + i * row_bytes, s + idx[i] * row_bytes, static_cast<size_t>(row_bytes));
    return;
  }
  CopyLines copy;
  gather_lines(copy, src, row_bytes, idx, b, e, dst);
}

void BufferDeleter::operator()(void* p) const noexcept {
  if (pool)
    pool->put(p, size);
  else
    std::free(p);
}

Buffer allocate_buffer(int64_t bytes) {
  const size_t size = rounded_size(bytes);
  void* p = std::aligned_alloc(64, size);
  if (!p) throw std::bad_alloc();
  return Buffer(p, BufferDeleter{nullptr, size});
}

BufferPool::~BufferPool() {
  for (auto& e : free_) std::free(e.second);
}

Buffer BufferPool::get(int64_t bytes) {
  const size_t size = rounded_size(bytes);
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto it = free_.begin(); it != free_.end(); ++it) {
      if (it->first == size) {
        void* p = it->second;
        free_.erase(it);
        return Buffer(p, BufferDeleter{shared_from_this(), size});
      }
    }
  }
  void* p = std::aligned_alloc(64, size);
  if (!p) throw std::bad_alloc();
  return Buffer(p, BufferDeleter{shared_from_this(), size});
}

void BufferPool::keep_at_least(size_t keep) {
  std::lock_guard<std::mutex> lock(mu_);
  keep_ = std::max(keep_, keep);
}

void BufferPool::put(void* p, size_t size) noexcept {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (free_.size() < keep_) {
      try {
        free_.emplace_back(size, p);
        return;
      } catch (...) {  // could not record it: free it below
      }
    }
  }
  std::free(p);
}

}  // namespace fastreg
