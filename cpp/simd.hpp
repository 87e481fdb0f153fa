// How kernels get AVX2 and AVX-512 variants without -march=native: the loop body
// is a plain template marked always_inline, instantiated once in a default-target
// function and once per target-attributed function; the compiler vectorises each
// for its ISA, and the caller picks one with active_simd() at run time.
#pragma once

#include "runtime.hpp"

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#define FASTREG_TARGET_AVX2 __attribute__((target("avx2,fma")))
// F, BW, VL, DQ (what cpu_simd() checks), and AVX2+FMA so AVX2 helpers inline
// into AVX-512 functions. prefer-vector-width=512: the auto-vectorised loops use
// zmm registers (some -mtune settings would keep them at 256 bits).
#define FASTREG_AVX512_ISA "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma"
#define FASTREG_TARGET_AVX512 __attribute__((target(FASTREG_AVX512_ISA ",prefer-vector-width=512")))
#else
#define FASTREG_TARGET_AVX2
#define FASTREG_TARGET_AVX512
#endif

#define FASTREG_INLINE inline __attribute__((always_inline))

namespace fastreg {
// True when the active level includes `level` (avx512 includes avx2).
inline bool simd_at_least(Simd level) { return static_cast<int>(active_simd()) >= static_cast<int>(level); }
}  // namespace fastreg
