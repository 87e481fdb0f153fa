// Process-wide runtime settings shared by every kernel: which SIMD variant to
// dispatch to, and how many threads a kernel may use. Plain C++, no Python.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <exception>
#include <thread>
#include <type_traits>
#include <vector>

namespace fastreg {

// Ordered: each level implies the ones below it.
enum class Simd : int { scalar = 0, avx2 = 1, avx512 = 2 };

// Best level this CPU and OS support: avx2 needs AVX2 and FMA; avx512 also needs
// AVX-512 F, BW, VL and DQ, and the OS saving the opmask and zmm registers.
Simd cpu_simd();
// Level kernels dispatch to: cpu_simd() unless lowered by FASTREG_SIMD or
// set_active_simd() (used by tests to compare the paths).
Simd active_simd();
// Throws std::invalid_argument when the CPU does not support `level`.
void set_active_simd(Simd level);
const char* simd_name(Simd level);
// The level named `name` ("scalar", "avx2", "avx512"); false for any other name.
bool simd_from_name(const char* name, Simd& level);

// Threads a kernel may use; defaults to the CPUs this process may run on.
int num_threads();
int default_num_threads();
void set_num_threads(int n);  // n >= 1, else std::invalid_argument

const char* compiler_info();

namespace detail {
// The blocks of one parallel_for, split into one contiguous share per thread. A
// thread takes its own share front to back, then helps with the others' shares, so
// a thread that starts late (waking an idle vCPU, or the other core busy) has its
// blocks taken by the rest instead of being waited for. Contiguous shares keep each
// thread's memory stream sequential (blocks taken in turn measured slower).
class BlockShares {
 public:
  static constexpr int kMaxShares = 64;

  // The blocks of `grain` items (the last may be shorter) covering [0, n).
  void reset(int64_t n, int64_t grain, int threads) {
    n_ = n;
    grain_ = grain;
    const int64_t blocks = (n + grain - 1) / grain;
    shares_ = std::max(1, std::min(threads, kMaxShares));
    for (int s = 0; s < shares_; ++s) {
      share_[s].next.store(blocks * s / shares_, std::memory_order_relaxed);
      share_[s].end = blocks * (s + 1) / shares_;
    }
  }
  // Calls run(begin, end) for every block `thread` claims, own share first.
  template <class Run>
  void take(int thread, Run&& run) {
    for (int k = 0; k < shares_; ++k) {
      Share& sh = share_[(thread + k) % shares_];
      for (int64_t b; (b = sh.next.fetch_add(1, std::memory_order_relaxed)) < sh.end;)
        run(b * grain_, std::min(n_, (b + 1) * grain_));
    }
  }
  // After an exception: nobody claims another block.
  void stop() {
    for (int s = 0; s < shares_; ++s) share_[s].next.store(share_[s].end, std::memory_order_relaxed);
  }

 private:
  struct alignas(64) Share {  // one cache line each: threads claim without sharing one
    std::atomic<int64_t> next{0};
    int64_t end = 0;
  };
  Share share_[kMaxShares];
  int shares_ = 1;
  int64_t n_ = 0, grain_ = 1;
};

using BlockFn = void (*)(void* ctx, int64_t begin, int64_t end);
// Runs fn(ctx, ...) over the blocks of [0, n) on the caller and up to `helpers`
// workers of the process's pool (see runtime.cpp); false, having run nothing, when
// the pool is in use by another call (or could not start a thread).
bool run_on_pool(int64_t n, int64_t grain, int helpers, BlockFn fn, void* ctx);
// Workers the pool has started so far (tests).
int pool_workers();
}  // namespace detail

// Runs fn(begin, end) over [0, n) on up to num_threads() threads, in consecutive
// blocks of `grain` items (the last may be shorter); each thread takes a contiguous
// share of the blocks and then helps with the others' (BlockShares), so fn may be
// called several times per thread. Small work runs inline on the caller's thread.
// The helpers come from a small process-wide pool whose workers spin briefly after
// a call (so back-to-back calls find them awake, as OpenMP's do) and then sleep;
// when the pool is busy (another thread's parallel_for), threads are started for
// the call and joined before it returns.
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
  using Fn = std::remove_reference_t<F>;
  const detail::BlockFn call = [](void* ctx, int64_t b, int64_t e) { (*static_cast<Fn*>(ctx))(b, e); };
  if (detail::run_on_pool(n, grain, static_cast<int>(threads - 1), call,
                          const_cast<void*>(static_cast<const void*>(&fn))))
    return;
  detail::BlockShares shares;
  shares.reset(n, grain, static_cast<int>(threads));
  std::vector<std::exception_ptr> errors(static_cast<size_t>(threads));
  auto work = [&](int64_t t) {
    try {
      shares.take(static_cast<int>(t), fn);
    } catch (...) {
      errors[static_cast<size_t>(t)] = std::current_exception();
      shares.stop();  // the others stop claiming
    }
  };
  std::vector<std::thread> workers;
  workers.reserve(static_cast<size_t>(threads - 1));
  try {
    for (int64_t t = 1; t < threads; ++t) workers.emplace_back(work, t);
  } catch (...) {  // no more threads: the ones started and the caller take every share
  }
  work(0);
  for (auto& w : workers) w.join();
  for (auto& err : errors)
    if (err) std::rethrow_exception(err);
}

// sum_i v[i] with four interleaved partial sums (a short dependency chain), then the
// tail: one association whatever the thread count, so reductions over per-chunk
// partials give identical results for any number of threads.
inline double ordered_sum(const double* v, int64_t n) {
  double s0 = 0, s1 = 0, s2 = 0, s3 = 0;
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) {
    s0 += v[i];
    s1 += v[i + 1];
    s2 += v[i + 2];
    s3 += v[i + 3];
  }
  for (; i < n; ++i) s0 += v[i];
  return (s0 + s1) + (s2 + s3);
}

}  // namespace fastreg
