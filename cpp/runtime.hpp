// Process-wide runtime settings shared by every kernel: which SIMD variant to
// dispatch to, and how many threads a kernel may use. Plain C++, no Python.
#pragma once

#include <algorithm>
#include <cstdint>
#include <exception>
#include <thread>
#include <vector>

namespace fastreg {

enum class Simd : int { scalar = 0, avx2 = 1 };

// Best level this CPU supports (AVX2 and FMA both required for avx2).
Simd cpu_simd();
// Level kernels dispatch to: cpu_simd() unless lowered by FASTREG_SIMD=scalar
// or set_active_simd() (used by tests to compare the two paths).
Simd active_simd();
// Throws std::invalid_argument when the CPU does not support `level`.
void set_active_simd(Simd level);
const char* simd_name(Simd level);

// Threads a kernel may use; defaults to the CPUs this process may run on.
int num_threads();
int default_num_threads();
void set_num_threads(int n);  // n >= 1, else std::invalid_argument

const char* compiler_info();

// Runs fn(begin, end) over [0, n) in at most num_threads() contiguous chunks of
// at least `grain` items. Small work runs inline on the caller's thread, so tiny
// calls pay no thread start-up. Threads are started per call and joined before
// return: no pool survives a call, which keeps fork() and interpreter shutdown safe.
template <class F>
void parallel_for(int64_t n, int64_t grain, F&& fn) {
  if (n <= 0) return;
  grain = std::max<int64_t>(grain, 1);
  int64_t chunks = std::min<int64_t>(num_threads(), (n + grain - 1) / grain);
  if (chunks <= 1) {
    fn(int64_t{0}, n);
    return;
  }
  std::vector<std::thread> workers;
  std::vector<std::exception_ptr> errors(static_cast<size_t>(chunks));
  workers.reserve(static_cast<size_t>(chunks - 1));
  const int64_t step = (n + chunks - 1) / chunks;
  for (int64_t c = 1; c < chunks; ++c) {
    const int64_t b = c * step, e = std::min(n, b + step);
    workers.emplace_back([&fn, &errors, b, e, c] {
      try {
        if (b < e) fn(b, e);
      } catch (...) {
        errors[static_cast<size_t>(c)] = std::current_exception();
      }
    });
  }
  try {
    fn(int64_t{0}, std::min(n, step));
  } catch (...) {
    errors[0] = std::current_exception();
  }
  for (auto& w : workers) w.join();
  for (auto& err : errors)
    if (err) std::rethrow_exception(err);
}

}  // namespace fastreg
