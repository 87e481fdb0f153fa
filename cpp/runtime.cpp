#include "runtime.hpp"

#include <pthread.h>
#include <sched.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <stdexcept>
#include <string>
#include <utility>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

namespace fastreg {
namespace {

#if defined(__x86_64__) || defined(__i386__)
// XCR0: which register states the OS saves on a context switch. libgcc's
// __builtin_cpu_supports checks it too; asked here as well so the condition is
// written where the level is decided.
__attribute__((target("xsave"))) uint64_t os_saved_state() {
  unsigned eax, ebx, ecx, edx;
  __asm__("cpuid" : "=a"(eax), "=b"(ebx), "=c"(ecx), "=d"(edx) : "a"(1), "c"(0));
  if (!(ecx & (1u << 27))) return 0;  // no OSXSAVE: xgetbv would fault
  return _xgetbv(0);
}
#endif

Simd detect_cpu_simd() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  const uint64_t xcr0 = os_saved_state();
  const bool ymm = (xcr0 & 0x6) == 0x6;    // SSE and AVX state
  const bool zmm = (xcr0 & 0xe6) == 0xe6;  // and opmask, upper zmm0-15, zmm16-31
  if (!ymm || !__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma")) return Simd::scalar;
  if (zmm && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq"))
    return Simd::avx512;
  return Simd::avx2;
#endif
  return Simd::scalar;
}

// FASTREG_SIMD lowers the level at import. A name this CPU cannot run, or no
// level's name, leaves the best level here; fastreg/_config.py then raises
// ImportError saying why, so a typo or a wrong machine never passes unnoticed.
Simd initial_simd() {
  const Simd best = detect_cpu_simd();
  const char* env = std::getenv("FASTREG_SIMD");
  Simd wanted;
  if (env && simd_from_name(env, wanted) && static_cast<int>(wanted) <= static_cast<int>(best)) return wanted;
  return best;
}

std::atomic<int>& simd_state() {
  static std::atomic<int> level{static_cast<int>(initial_simd())};
  return level;
}

std::atomic<int>& thread_state() {
  static std::atomic<int> n{default_num_threads()};
  return n;
}

}  // namespace

Simd cpu_simd() {
  static const Simd best = detect_cpu_simd();
  return best;
}

Simd active_simd() { return static_cast<Simd>(simd_state().load(std::memory_order_relaxed)); }

void set_active_simd(Simd level) {
  if (static_cast<int>(level) > static_cast<int>(cpu_simd()))
    throw std::invalid_argument(std::string("this CPU does not support SIMD level '") + simd_name(level) +
                                "' (best available: '" + simd_name(cpu_simd()) + "')");
  simd_state().store(static_cast<int>(level));
}

const char* simd_name(Simd level) {
  switch (level) {
    case Simd::avx512:
      return "avx512";
    case Simd::avx2:
      return "avx2";
    case Simd::scalar:
      break;
  }
  return "scalar";
}

bool simd_from_name(const char* name, Simd& level) {
  for (Simd s : {Simd::scalar, Simd::avx2, Simd::avx512}) {
    if (std::strcmp(name, simd_name(s)) == 0) {
      level = s;
      return true;
    }
  }
  return false;
}

int default_num_threads() {
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) == 0) {
    const int n = CPU_COUNT(&set);
    if (n > 0) return n;
  }
  const unsigned hw = std::thread::hardware_concurrency();
  return hw > 0 ? static_cast<int>(hw) : 1;
}

int num_threads() { return thread_state().load(std::memory_order_relaxed); }

void set_num_threads(int n) {
  if (n < 1) throw std::invalid_argument("number of threads must be >= 1, got " + std::to_string(n));
  thread_state().store(n);
}

// ---- the worker pool behind parallel_for -------------------------------------
//
// One job at a time: the caller that owns the pool (busy_) publishes the job and a
// new generation, works on the blocks itself, then closes the job once no worker
// is inside it. A worker joins a job by raising the participant count in state_
// (generation << 32 | closed << 31 | participants) while the job is open, so a
// late worker can never enter a closed job, and the caller returns only when
// every worker that entered has left (the job's fn and ctx live on its stack).
// Workers spin for kSpin after a job, then sleep on a condition variable: waking a
// sleeping thread costs about as much as a memory-bound kernel of a 10M-parameter
// model takes in all, so a thread that had gone idle doubled such a call (a thread
// started per call was as slow). They spin politely (sched_yield now and then), so a thread of the
// user's, torch's OpenMP workers say, that becomes runnable there goes first.
// fork(): the child has none of the parent's workers; it drops the pool (kept
// reachable, never used again) and makes a new one on its first parallel call.

namespace {

class Pool {
 public:
  bool run(int64_t n, int64_t grain, int helpers, detail::BlockFn fn, void* ctx) {
    if (busy_.exchange(true, std::memory_order_acquire)) return false;
    helpers = std::min(helpers, start_workers(helpers));
    if (helpers < 1) {
      busy_.store(false, std::memory_order_release);
      return false;
    }
    fn_ = fn;
    ctx_ = ctx;
    helpers_ = helpers;
    shares_.reset(n, grain, helpers + 1);
    const uint32_t g = generation_.load(std::memory_order_relaxed) + 1;
    state_.store(uint64_t{g} << 32, std::memory_order_release);  // open, nobody inside
    generation_.store(g);                                        // seq_cst, paired with the sleepers' count
    if (sleepers_.load() > 0) {
      {
        std::lock_guard<std::mutex> lock(mu_);
      }  // a sleeper is either waiting or sees g
      cv_.notify_all();
    }
    work(0);
    for (int i = 0;; ++i) {  // close the job once no worker is inside it
      uint64_t s = state_.load(std::memory_order_acquire);
      if ((s & kInside) == 0 && state_.compare_exchange_weak(s, s | kClosed, std::memory_order_acq_rel)) break;
      if (i < 4096)
        pause();
      else
        std::this_thread::yield();  // a worker descheduled inside the job: let it run
    }
    std::exception_ptr error = std::exchange(error_, nullptr);
    busy_.store(false, std::memory_order_release);
    if (error) std::rethrow_exception(error);
    return true;
  }

  int workers() const { return workers_.load(); }

  Pool* retired_next = nullptr;  // pools dropped by fork() children, kept reachable

 private:
  static constexpr uint64_t kClosed = uint64_t{1} << 31;
  static constexpr uint64_t kInside = kClosed - 1;
  static constexpr std::chrono::microseconds kSpin{200};

  static void pause() {
#if defined(__x86_64__) || defined(__i386__)
    _mm_pause();
#endif
  }

  // Claims and runs blocks (thread 0 is the caller) until none is left; the first
  // exception stops the job.
  void work(int thread) {
    try {
      shares_.take(thread, [&](int64_t b, int64_t e) { fn_(ctx_, b, e); });
    } catch (...) {
      std::lock_guard<std::mutex> lock(error_mu_);
      if (!error_) error_ = std::current_exception();
      shares_.stop();  // the others stop claiming
    }
  }

  // Starts workers up to `wanted` (called by the pool's owner only); returns how many run.
  int start_workers(int wanted) {
    int have = workers_.load();
    for (; have < wanted; ++have) {
      try {
        std::thread worker(&Pool::worker_loop, this, have, generation_.load());
#if defined(__linux__)
        // Named here, not by the worker: until it first runs it would show the
        // process's name (a test counting pool threads right after a call saw 2 of 3).
        pthread_setname_np(worker.native_handle(), "fastreg-pool");
#endif
        worker.detach();
      } catch (...) {  // no more threads: use the ones there are
        break;
      }
      workers_.store(have + 1);
    }
    return have;
  }

  void worker_loop(int index, uint32_t seen) {
    for (;;) {
      uint32_t g;
      const auto spin_until = std::chrono::steady_clock::now() + kSpin;
      for (int i = 1; (g = generation_.load(std::memory_order_acquire)) == seen; ++i) {
        pause();
        if ((i & 31) == 0) std::this_thread::yield();  // any runnable thread goes first
        if ((i & 255) == 0 && std::chrono::steady_clock::now() > spin_until) {
          std::unique_lock<std::mutex> lock(mu_);
          sleepers_.fetch_add(1);  // seq_cst: either run() sees us, or we see its generation
          cv_.wait(lock, [&] { return generation_.load() != seen; });
          sleepers_.fetch_sub(1);
        }
      }
      seen = g;
      uint64_t s = state_.load(std::memory_order_acquire);
      bool joined = false;
      while ((s >> 32) == g && (s & kClosed) == 0) {
        if (state_.compare_exchange_weak(s, s + 1, std::memory_order_acq_rel)) {
          joined = true;
          break;
        }
      }
      if (!joined) continue;  // a job that closed (or was replaced) before this worker woke
      if (index < helpers_) work(index + 1);
      state_.fetch_sub(1, std::memory_order_release);
    }
  }

  std::atomic<bool> busy_{false};
  std::atomic<int> workers_{0};
  std::atomic<uint32_t> generation_{0};
  std::atomic<uint64_t> state_{0};
  std::atomic<int> sleepers_{0};
  std::mutex mu_;
  std::condition_variable cv_;
  // The job (written by the owner before the generation is published).
  detail::BlockFn fn_ = nullptr;
  void* ctx_ = nullptr;
  int helpers_ = 0;
  detail::BlockShares shares_;
  std::mutex error_mu_;
  std::exception_ptr error_;
};

std::atomic<Pool*> g_pool{nullptr};
Pool* g_retired_pools = nullptr;  // a parent's pools, never used again in the child

void drop_pool_in_child() {
  Pool* old = g_pool.exchange(nullptr);  // its workers do not exist here
  if (old == nullptr) return;
  old->retired_next = g_retired_pools;  // no allocation between fork() and exec()
  g_retired_pools = old;
}

Pool& pool() {
  Pool* p = g_pool.load(std::memory_order_acquire);
  if (p != nullptr) return *p;
  static std::once_flag at_fork;
  std::call_once(at_fork, [] { pthread_atfork(nullptr, nullptr, drop_pool_in_child); });
  auto* fresh = new Pool();
  if (g_pool.compare_exchange_strong(p, fresh)) return *fresh;
  delete fresh;  // another thread made one first
  return *p;
}

}  // namespace

namespace detail {
bool run_on_pool(int64_t n, int64_t grain, int helpers, BlockFn fn, void* ctx) {
  return pool().run(n, grain, helpers, fn, ctx);
}
int pool_workers() {
  Pool* p = g_pool.load();
  return p ? p->workers() : 0;
}
}  // namespace detail

const char* compiler_info() {
#ifdef FASTREG_COMPILER
  return FASTREG_COMPILER;
#else
  return __VERSION__;
#endif
}

}  // namespace fastreg
