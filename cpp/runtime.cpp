#include "runtime.hpp"

#include <sched.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>

namespace fastreg {
namespace {

Simd detect_cpu_simd() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return Simd::avx2;
#endif
  return Simd::scalar;
}

Simd initial_simd() {
  const Simd best = detect_cpu_simd();
  const char* env = std::getenv("FASTREG_SIMD");
  if (env && std::strcmp(env, "scalar") == 0) return Simd::scalar;
  return best;  // unset, "auto", or a level: never above what the CPU has
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
    throw std::invalid_argument(std::string("this CPU does not support SIMD level '") +
                                simd_name(level) + "' (best available: '" + simd_name(cpu_simd()) + "')");
  simd_state().store(static_cast<int>(level));
}

const char* simd_name(Simd level) { return level == Simd::avx2 ? "avx2" : "scalar"; }

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

const char* compiler_info() {
#ifdef FASTREG_COMPILER
  return FASTREG_COMPILER;
#else
  return __VERSION__;
#endif
}

}  // namespace fastreg
