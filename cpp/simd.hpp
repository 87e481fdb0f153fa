// How kernels get AVX2 and AVX-512 variants without -march=native: the loop body
// is a plain template marked always_inline, instantiated once in a default-target
// function and once per target-attributed function (or #pragma GCC target region);
// the compiler vectorises each for its ISA, and the caller picks one with
// active_simd() at run time. A level runs the code of the level below where its own
// variant measured no faster (docs/build.md).
#pragma once

#include "runtime.hpp"

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#define FASTREG_TARGET_AVX2 __attribute__((target("avx2,fma")))
// F, BW, VL, DQ (what cpu_simd() checks), and AVX2+FMA so AVX2 helpers inline into
// AVX-512 functions. (cross_entropy.cpp's AVX-512 region spells the same list in its
// #pragma GCC target.)
#define FASTREG_TARGET_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")))
#else
#define FASTREG_TARGET_AVX2
#define FASTREG_TARGET_AVX512
#endif

#define FASTREG_INLINE inline __attribute__((always_inline))

namespace fastreg {
// True when the active level includes `level` (avx512 includes avx2).
inline bool simd_at_least(Simd level) { return static_cast<int>(active_simd()) >= static_cast<int>(level); }
}  // namespace fastreg
