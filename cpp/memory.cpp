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
}  // namespace

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
