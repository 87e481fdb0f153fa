// Fused softmax cross-entropy on the GPU: the CUDA side of cpp/cross_entropy.cpp.
//
// Three launches on the caller's stream, none of which synchronises the host or
// allocates: (1) one block checks the class indices and sums the mean's denominator
// and the class weights; (2) a group of threads per row (8 or 32 lanes for short rows,
// a 512-thread block for long ones) reads the row once for the online max/sum, then
// once more to write the gradient (the second read mostly hits L2); (3) one block sums
// the row losses in a fixed order (deterministic) for mean/sum.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

#include "cross_entropy.cuh"
#include "cross_entropy_math.hpp"

namespace fastreg::cuda {
namespace {

using xent::Lse;

template <class T>
__device__ __forceinline__ float to_f(T v);
template <>
__device__ __forceinline__ float to_f(float v) {
  return v;
}
template <>
__device__ __forceinline__ float to_f(__half v) {
  return __half2float(v);
}
template <>
__device__ __forceinline__ float to_f(__nv_bfloat16 v) {
  return __bfloat162float(v);
}

template <class T>
__device__ __forceinline__ T from_f(float v);
template <>
__device__ __forceinline__ float from_f(float v) {
  return v;
}
template <>
__device__ __forceinline__ __half from_f(float v) {
  return __float2half_rn(v);
}
template <>
__device__ __forceinline__ __nv_bfloat16 from_f(float v) {
  return __float2bfloat16_rn(v);
}

// 16 bytes of T: one load or store instruction.
template <class T>
struct alignas(16) Vec {
  static constexpr int kN = 16 / sizeof(T);
  T v[kN];
};

constexpr int kBlock = 512;  // threads per block, every kernel here

// ---- reductions over a group of G threads (G <= 32: lanes of one warp; G = kBlock: the block)

template <int G>
__device__ __forceinline__ float group_sum(float v, float* smem) {
  if constexpr (G <= 32) {
#pragma unroll
    for (int o = G / 2; o > 0; o /= 2) v += __shfl_xor_sync(0xffffffffu, v, o, G);
    return v;
  } else {
#pragma unroll
    for (int o = 16; o > 0; o /= 2) v += __shfl_xor_sync(0xffffffffu, v, o);
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    __syncthreads();  // smem may still be read by the previous reduction
    if (lane == 0) smem[warp] = v;
    __syncthreads();
    v = lane < G / 32 ? smem[lane] : 0.f;
#pragma unroll
    for (int o = 16; o > 0; o /= 2) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;  // every warp summed the same partials in the same order
  }
}

template <int G>
__device__ __forceinline__ void group_sync() {
  if constexpr (G <= 32)
    __syncwarp();
  else
    __syncthreads();
}

template <int G>
__device__ __forceinline__ Lse<float> group_lse(Lse<float> st, float* smem) {
  if constexpr (G <= 32) {
#pragma unroll
    for (int o = G / 2; o > 0; o /= 2) {
      const Lse<float> other{__shfl_xor_sync(0xffffffffu, st.m, o, G), __shfl_xor_sync(0xffffffffu, st.s, o, G)};
      st = xent::lse_merge(st, other);
    }
    return st;
  } else {
#pragma unroll
    for (int o = 16; o > 0; o /= 2) {
      const Lse<float> other{__shfl_xor_sync(0xffffffffu, st.m, o), __shfl_xor_sync(0xffffffffu, st.s, o)};
      st = xent::lse_merge(st, other);
    }
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    __syncthreads();
    if (lane == 0) {
      smem[warp] = st.m;
      smem[32 + warp] = st.s;
    }
    __syncthreads();
    st = lane < G / 32 ? Lse<float>{smem[lane], smem[32 + lane]} : xent::lse_empty<float>();
#pragma unroll
    for (int o = 16; o > 0; o /= 2) {
      const Lse<float> other{__shfl_xor_sync(0xffffffffu, st.m, o), __shfl_xor_sync(0xffffffffu, st.s, o)};
      st = xent::lse_merge(st, other);
    }
    return st;
  }
}

struct Params {
  const void* logits;
  int64_t n, c;
  const int64_t* target;
  const void* probs;
  const void* weight;
  int64_t ignore_index;
  float eps, z;
  int reduction;
  void* loss;
  float* rows;
  const float* stats;
  void* grad;
  float* lse_out;
  const float* lse_in;
  const void* gscale;
  float grad_scale;
};

// ---- (1) labels: checked, and the mean's denominator and the weight sum, in one block

template <class T>
__global__ void __launch_bounds__(kBlock) xent_prepare(Params p, float* stats, int64_t* error) {
  __shared__ float smem[64];
  __shared__ unsigned long long bad_row;
  if (threadIdx.x == 0) bad_row = ~0ull;
  const T* w = static_cast<const T*>(p.weight);
  float wsum = 0.f;
  if (w != nullptr)
    for (int64_t j = threadIdx.x; j < p.c; j += kBlock) wsum += to_f(w[j]);
  float den = 0.f;
  __syncthreads();
  if (p.target != nullptr) {
    for (int64_t i = threadIdx.x; i < p.n; i += kBlock) {
      const int64_t y = p.target[i];
      if (y == p.ignore_index) continue;
      if (y < 0 || y >= p.c) {
        atomicMin(&bad_row, static_cast<unsigned long long>(i));
        continue;
      }
      den += w != nullptr ? to_f(w[y]) : 1.f;
    }
  } else {
    den = threadIdx.x == 0 ? static_cast<float>(p.n) : 0.f;
  }
  wsum = group_sum<kBlock>(wsum, smem);
  den = group_sum<kBlock>(den, smem);
  if (threadIdx.x == 0) {
    stats[0] = den;
    stats[1] = w != nullptr ? wsum : static_cast<float>(p.c);
    if (bad_row != ~0ull && error[0] < 0) {  // keep the first error until it is read
      error[0] = static_cast<int64_t>(bad_row);
      error[1] = p.target[bad_row];
      error[2] = p.c;
    }
  }
}

// ---- (2) rows

template <class T, int G, bool kVec>
__global__ void __launch_bounds__(kBlock, 1) xent_rows(Params p) {
  constexpr int V = kVec ? Vec<T>::kN : 1;
  constexpr int kRowsPerBlock = kBlock / G;
  __shared__ float smem[64];
  const int lane = threadIdx.x % G;
  const int group = threadIdx.x / G;
  const T* x_all = static_cast<const T*>(p.logits);  // may alias grad (in place)
  const T* __restrict__ t_all = static_cast<const T*>(p.probs);
  const T* __restrict__ w = static_cast<const T*>(p.weight);
  const float c = static_cast<float>(p.c);
  const float wsum = p.stats[1];
  const float den = p.reduction == 1 ? p.stats[0] : 1.f;
  const bool want_loss = p.loss != nullptr;
  const bool probs = t_all != nullptr;

  // Every thread runs the same number of iterations (rows past n are empty), so the
  // group reductions always see all their threads.
  for (int64_t base = static_cast<int64_t>(blockIdx.x) * kRowsPerBlock; base < p.n;
       base += static_cast<int64_t>(gridDim.x) * kRowsPerBlock) {
    const int64_t i = base + group;
    const bool live = i < p.n;
    const T* x = x_all + (live ? i : 0) * p.c;
    const T* t = probs ? t_all + (live ? i : 0) * p.c : nullptr;
    int64_t y = 0;
    bool ignored = !live, bad = false;
    if (live && !probs) {
      y = p.target[i];
      ignored = y == p.ignore_index;
      bad = !ignored && (y < 0 || y >= p.c);
    }
    const bool work = !ignored && !bad;
    // The target's logit, read before pass 2 may overwrite it (gradient in place); the
    // group reduction or sync below orders this read before any lane's write.
    const float x_y = lane == 0 && work && !probs && want_loss ? to_f(x[y]) : 0.f;

    // Pass 1: the online max/sum (unless the lse was saved) and, for probability
    // targets, A = sum_j w_j t'_j.
    Lse<float> st = xent::lse_empty<float>();
    float wt_sum = 0.f;
    const bool need_lse = p.lse_in == nullptr;
    if (work && (need_lse || probs)) {
      for (int64_t j = static_cast<int64_t>(lane) * V; j < p.c; j += static_cast<int64_t>(G) * V) {
        if constexpr (kVec) {
          if (need_lse) {
            const Vec<T> xv = *reinterpret_cast<const Vec<T>*>(x + j);
#pragma unroll
            for (int k = 0; k < V; ++k) xent::lse_push(st, to_f(xv.v[k]));
          }
          if (probs) {
            const Vec<T> tv = *reinterpret_cast<const Vec<T>*>(t + j);
#pragma unroll
            for (int k = 0; k < V; ++k)
              wt_sum += (w ? to_f(w[j + k]) : 1.f) * xent::smooth_target(to_f(tv.v[k]), p.eps, c);
          }
        } else {
          if (need_lse) xent::lse_push(st, to_f(x[j]));
          if (probs) wt_sum += (w ? to_f(w[j]) : 1.f) * xent::smooth_target(to_f(t[j]), p.eps, c);
        }
      }
    }
    float lse;
    if (need_lse) {
      st = group_lse<G>(st, smem);
      lse = xent::lse_value(st);
    } else {
      lse = live ? p.lse_in[i] : 0.f;
    }
    if (probs) wt_sum = group_sum<G>(wt_sum, smem);
    if (!need_lse && !probs) group_sync<G>();

    // The row's scale: upstream gradient, the mean's denominator.
    float scale = p.grad_scale / den;
    if (p.gscale != nullptr && live) scale *= to_f(static_cast<const T*>(p.gscale)[p.reduction == 0 ? i : 0]);
    const float w_y = work && !probs && w ? to_f(w[y]) : 1.f;
    const xent::RowCoef<float> k =
        probs ? xent::coef_probs(lse, wt_sum, p.z) : xent::coef_class(lse, w_y, p.eps, c, wsum, p.z);

    // Pass 2: the gradient, and the loss terms that need every element.
    const bool loss_sum = want_loss && (probs || p.eps != 0.f);
    float part = 0.f;
    T* g = p.grad != nullptr ? static_cast<T*>(p.grad) + (live ? i : 0) * p.c : nullptr;
    if (live && (g != nullptr || loss_sum)) {
      const float nan = __int_as_float(0x7fffffff);
      for (int64_t j = static_cast<int64_t>(lane) * V; j < p.c; j += static_cast<int64_t>(G) * V) {
        float xs[V], ts[V], ws[V], out[V];
        if constexpr (kVec) {
          const Vec<T> xv = *reinterpret_cast<const Vec<T>*>(x + j);
#pragma unroll
          for (int q = 0; q < V; ++q) xs[q] = to_f(xv.v[q]);
          if (probs) {
            const Vec<T> tv = *reinterpret_cast<const Vec<T>*>(t + j);
#pragma unroll
            for (int q = 0; q < V; ++q) ts[q] = to_f(tv.v[q]);
          }
        } else {
          xs[0] = to_f(x[j]);
          if (probs) ts[0] = to_f(t[j]);
        }
#pragma unroll
        for (int q = 0; q < V; ++q) {
          ws[q] = w ? to_f(w[j + q]) : 1.f;
          const float u = probs ? ws[q] * xent::smooth_target(ts[q], p.eps, c) : ws[q];
          if (work) {
            out[q] = scale * xent::grad_elem(k, xs[q], lse, !probs && j + q == y, u);
            if (loss_sum) part += xent::loss_elem(u, xs[q], lse);
          } else {
            out[q] = ignored ? 0.f : nan;
          }
        }
        if (g != nullptr) {
          if constexpr (kVec) {
            Vec<T> gv;
#pragma unroll
            for (int q = 0; q < V; ++q) gv.v[q] = from_f<T>(out[q]);
            *reinterpret_cast<Vec<T>*>(g + j) = gv;
          } else {
            g[j] = from_f<T>(out[0]);
          }
        }
      }
    }
    if (loss_sum) part = group_sum<G>(part, smem);

    if (lane == 0 && live) {
      if (p.lse_out != nullptr) p.lse_out[i] = work ? lse : 0.f;
      if (want_loss) {
        float r;
        if (ignored) {
          r = 0.f;
        } else if (bad) {
          r = __int_as_float(0x7fffffff);
        } else if (probs) {
          r = xent::row_loss_probs(lse, part, p.z);
        } else {
          r = xent::row_loss_class(lse, x_y, w_y, p.eps, c, part, p.z);
        }
        if (p.reduction == 0)
          static_cast<T*>(p.loss)[i] = from_f<T>(r);
        else
          p.rows[i] = r;
      }
    }
  }
}

// ---- (3) mean/sum of the row losses, one block, fixed order

template <class T>
__global__ void __launch_bounds__(kBlock)
    xent_reduce(const float* rows, int64_t n, const float* stats, int mean, T* loss) {
  __shared__ float smem[64];
  float s = 0.f;
  for (int64_t i = threadIdx.x; i < n; i += kBlock) s += rows[i];
  s = group_sum<kBlock>(s, smem);
  if (threadIdx.x == 0) *loss = from_f<T>(mean ? s / stats[0] : s);  // 0 / 0 = NaN, as torch
}

// ---- backward of a gradient computed in the forward pass: grad *= grad_output, read on
// the device. A scale of exactly 1 (loss.backward()'s implicit one) leaves the gradient
// untouched without reading it, so that backward costs a launch, not a pass, and still
// never synchronises the host.

template <class T>
__global__ void __launch_bounds__(kBlock) xent_scale_grad(T* grad, int64_t n, int64_t c, const T* gout, int per_row) {
  if (!per_row && to_f(gout[0]) == 1.f) return;
  const int64_t total = n * c;
  for (int64_t e = blockIdx.x * static_cast<int64_t>(kBlock) + threadIdx.x; e < total;
       e += static_cast<int64_t>(gridDim.x) * kBlock) {
    const float s = to_f(gout[per_row ? e / c : 0]);
    if (s != 1.f) grad[e] = from_f<T>(to_f(grad[e]) * s);
  }
}

int sm_count() {
  int dev = 0, sms = 0;
  if (cudaGetDevice(&dev) != cudaSuccess ||
      cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess)
    return 108;
  return sms;
}

template <class T, int G, bool kVec>
void launch_rows(const Params& p, cudaStream_t stream) {
  constexpr int kRowsPerBlock = kBlock / G;
  const int64_t want = (p.n + kRowsPerBlock - 1) / kRowsPerBlock;
  // Enough resident blocks to fill the device several times over; each loops over rows.
  const int64_t cap = static_cast<int64_t>(sm_count()) * 8;
  const unsigned grid = static_cast<unsigned>(want < cap ? want : cap);
  xent_rows<T, G, kVec><<<grid, kBlock, 0, stream>>>(p);
}

template <class T>
cudaError_t run(const XentLaunch& a, cudaStream_t stream) {
  Params p{a.logits,
           a.n,
           a.c,
           a.target,
           a.target_probs,
           a.weight,
           a.ignore_index,
           a.label_smoothing,
           a.lse_square_scale,
           static_cast<int>(a.reduction),
           a.loss,
           a.rows,
           a.stats,
           a.grad,
           a.lse_out,
           a.lse_in,
           a.grad_scale_dev,
           a.grad_scale};
  xent_prepare<T><<<1, kBlock, 0, stream>>>(p, a.stats, a.error);
  if (a.n > 0) {
    auto aligned = [](const void* ptr) { return ptr == nullptr || reinterpret_cast<uintptr_t>(ptr) % 16 == 0; };
    const bool vec = a.c % Vec<T>::kN == 0 && aligned(a.logits) && aligned(a.grad) && aligned(a.target_probs);
    if (a.c <= 64) {
      vec ? launch_rows<T, 8, true>(p, stream) : launch_rows<T, 8, false>(p, stream);
    } else if (a.c <= 4096) {
      vec ? launch_rows<T, 32, true>(p, stream) : launch_rows<T, 32, false>(p, stream);
    } else {
      vec ? launch_rows<T, kBlock, true>(p, stream) : launch_rows<T, kBlock, false>(p, stream);
    }
  }
  if (a.loss != nullptr && a.reduction != XentReduction::none)
    xent_reduce<T>
        <<<1, kBlock, 0, stream>>>(a.rows, a.n, a.stats, a.reduction == XentReduction::mean, static_cast<T*>(a.loss));
  return cudaGetLastError();
}

template <class T>
cudaError_t scale(void* grad, int64_t n, int64_t c, const void* gout, bool per_row, cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  const int64_t want = (n * c + kBlock - 1) / kBlock;
  const int64_t cap = static_cast<int64_t>(sm_count()) * 8;
  xent_scale_grad<T><<<static_cast<unsigned>(want < cap ? want : cap), kBlock, 0, stream>>>(
      static_cast<T*>(grad), n, c, static_cast<const T*>(gout), per_row ? 1 : 0);
  return cudaGetLastError();
}

}  // namespace

cudaError_t cross_entropy_scale_grad(DType dtype, void* grad, int64_t n, int64_t c, const void* grad_output,
                                     bool per_row, cudaStream_t stream) {
  switch (dtype) {
    case DType::f32:
      return scale<float>(grad, n, c, grad_output, per_row, stream);
    case DType::f16:
      return scale<__half>(grad, n, c, grad_output, per_row, stream);
    case DType::bf16:
      return scale<__nv_bfloat16>(grad, n, c, grad_output, per_row, stream);
  }
  return cudaErrorInvalidValue;
}

cudaError_t cross_entropy(const XentLaunch& a, cudaStream_t stream) {
  switch (a.dtype) {
    case DType::f32:
      return run<float>(a, stream);
    case DType::f16:
      return run<__half>(a, stream);
    case DType::bf16:
      return run<__nv_bfloat16>(a, stream);
  }
  return cudaErrorInvalidValue;
}

}  // namespace fastreg::cuda
