// Process-wide runtime settings shared by every kernel: which SIMD variant to
// dispatch to, and how many threads a kernel may use. Plain C++, no Python.
#pragma once

#include <algorithm>
#include <atomic>
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

// Runs fn(begin, end) over [0, n) on up to num_threads() threads, in consecutive
// blocks of `grain` items (the last may be shorter) that the threads claim from a
// shared counter, so fn may be called several times per thread. Claiming rather
// than fixed shares matters because threads start per call and one may begin late
// (~0.1 ms to wake an idle vCPU, ms when the other core is busy): the others then
// take its blocks instead of waiting for it. Small work runs inline on the caller's
// thread, so tiny calls pay no thread start-up. Threads are joined before return:
// no pool survives a call, which keeps fork() and interpreter shutdown safe.
template <class F>
void parallel_for(int64_t n, int64_t grain, F&& fn) {
  if (n <= 0) return;
  grain = std::max<int64_t>(grain, 1);
  const int64_t blocks = (n + grain - 1) / grain;
  const int64_t threads = std::min<int64_t>(num_threads(), blocks);
  if (threads <= 1) {
    fn(int64_t{0}, n);
    return;
  }
  std::atomic<int64_t> next{0};
  std::vector<std::exception_ptr> errors(static_cast<size_t>(threads));
  auto work = [&](int64_t t) {
    try {
      for (int64_t k; (k = next.fetch_add(1, std::memory_order_relaxed)) < blocks;)
        fn(k * grain, std::min(n, (k + 1) * grain));
    } catch (...) {
      errors[static_cast<size_t>(t)] = std::current_exception();
      next.store(blocks);  // the others stop claiming
    }
  };
  std::vector<std::thread> workers;
  workers.reserve(static_cast<size_t>(threads - 1));
  for (int64_t t = 1; t < threads; ++t) workers.emplace_back(work, t);
  work(0);
  for (auto& w : workers) w.join();
  for (auto& err : errors)
    if (err) std::rethrow_exception(err);
}

}  // namespace fastreg
