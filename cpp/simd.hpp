// How kernels get an AVX2+FMA variant without -march=native: the loop body is a
// plain template marked always_inline, instantiated once in a default-target
// function and once in a target("avx2,fma") function; the compiler vectorises
// each for its ISA, and the caller picks one with active_simd() at run time.
#pragma once

#include "runtime.hpp"

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#define FASTREG_TARGET_AVX2 __attribute__((target("avx2,fma")))
#else
#define FASTREG_TARGET_AVX2
#endif

#define FASTREG_INLINE inline __attribute__((always_inline))
