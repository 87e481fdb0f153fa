#include "sgd.hpp"

#include "simd.hpp"

namespace fastreg {
namespace {

template <class T>
struct SgdArgs {
  T* __restrict param;
  const T* __restrict grad;
  T* __restrict buf;
  T lr, wd, momentum, one_minus_dampening, sign;
};

template <class T, bool kDecay, bool kMomentum, bool kNesterov, bool kFirst>
FASTREG_INLINE void sgd_loop(const SgdArgs<T>& a, int64_t begin, int64_t end) {
  T* __restrict p = a.param;
  const T* __restrict g = a.grad;
  T* __restrict buf = a.buf;
  for (int64_t i = begin; i < end; ++i) {
    T d = a.sign * g[i];
    if constexpr (kDecay) d += a.wd * p[i];
    if constexpr (kMomentum) {
      T v;
      if constexpr (kFirst) {
        v = d;
      } else {
        v = a.momentum * buf[i] + a.one_minus_dampening * d;
      }
      buf[i] = v;
      d = kNesterov ? d + a.momentum * v : v;
    }
    p[i] -= a.lr * d;
  }
}

// Turns the run-time options into template flags so each loop is branch-free.
template <class T>
FASTREG_INLINE void sgd_dispatch(const SgdArgs<T>& a, bool decay, bool momentum, bool nesterov, bool first, int64_t b,
                                 int64_t e) {
  if (!momentum) {
    if (decay)
      sgd_loop<T, true, false, false, false>(a, b, e);
    else
      sgd_loop<T, false, false, false, false>(a, b, e);
    return;
  }
#define FASTREG_SGD_CASE(D, N, F) \
  if (decay == D && nesterov == N && first == F) return sgd_loop<T, D, true, N, F>(a, b, e);
  FASTREG_SGD_CASE(false, false, false)
  FASTREG_SGD_CASE(false, false, true)
  FASTREG_SGD_CASE(false, true, false)
  FASTREG_SGD_CASE(false, true, true)
  FASTREG_SGD_CASE(true, false, false)
  FASTREG_SGD_CASE(true, false, true)
  FASTREG_SGD_CASE(true, true, false)
  FASTREG_SGD_CASE(true, true, true)
#undef FASTREG_SGD_CASE
}

template <class T>
void sgd_range_scalar(const SgdArgs<T>& a, bool decay, bool mom, bool nest, bool first, int64_t b, int64_t e) {
  sgd_dispatch(a, decay, mom, nest, first, b, e);
}

template <class T>
FASTREG_TARGET_AVX2 void sgd_range_avx2(const SgdArgs<T>& a, bool decay, bool mom, bool nest, bool first, int64_t b,
                                        int64_t e) {
  sgd_dispatch(a, decay, mom, nest, first, b, e);
}

// Elements per block claimed by a thread: 256 KB of float32 per stream, large
// enough that claiming costs nothing, small enough to balance the tail.
constexpr int64_t kBlock = int64_t{1} << 16;

}  // namespace

template <class T>
void sgd_update(T* param, const T* grad, T* momentum_buffer, int64_t n, const SgdOptions& opt, bool first_step) {
  const SgdArgs<T> a{param,
                     grad,
                     momentum_buffer,
                     static_cast<T>(opt.lr),
                     static_cast<T>(opt.weight_decay),
                     static_cast<T>(opt.momentum),
                     static_cast<T>(1.0 - opt.dampening),
                     static_cast<T>(opt.maximize ? -1.0 : 1.0)};
  const bool decay = opt.weight_decay != 0.0, mom = opt.momentum != 0.0;
  // avx512 runs the AVX2 loop: the update is bound by memory, and a 512-bit variant
  // measured within 4% of it (docs/build.md), below the 5% a variant must gain.
  const bool avx2 = simd_at_least(Simd::avx2);
  parallel_for(n, kBlock, [&](int64_t b, int64_t e) {
    if (avx2)
      sgd_range_avx2(a, decay, mom, opt.nesterov, first_step, b, e);
    else
      sgd_range_scalar(a, decay, mom, opt.nesterov, first_step, b, e);
  });
}

template void sgd_update<float>(float*, const float*, float*, int64_t, const SgdOptions&, bool);
template void sgd_update<double>(double*, const double*, double*, int64_t, const SgdOptions&, bool);

}  // namespace fastreg
