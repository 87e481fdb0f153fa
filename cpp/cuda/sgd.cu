// Multi-tensor SGD on the GPU: the CUDA side of cpp/sgd.cpp. One launch updates up to
// kMaxTensors tensors: their pointers and sizes travel in the kernel's parameter block
// (no device-side table to allocate or copy; ~5.6 KB, which needs CUDA >= 12.1 and sm_70+),
// and each block takes chunks of 16384 elements, finding a chunk's tensor by binary search
// over the cumulative chunk counts.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <type_traits>

#include "sgd.cuh"

namespace fastreg::cuda {
namespace {

constexpr int kMaxTensors = 128;
constexpr int kThreads = 512;
constexpr int64_t kChunk = 16 * 1024;  // elements a block takes at a time

struct TensorList {
  void* p[kMaxTensors];
  const void* g[kMaxTensors];
  void* buf[kMaxTensors];
  int64_t n[kMaxTensors];
  int64_t chunk_end[kMaxTensors];  // cumulative chunk counts
  unsigned char first[kMaxTensors];
  int count;
};

struct Hyper {
  float lr, momentum, dampening, weight_decay;
  bool nesterov, maximize, use_momentum;
};

template <class T>
__device__ __forceinline__ float ld(const T* ptr) {
  if constexpr (sizeof(T) == 4)
    return *ptr;
  else if constexpr (std::is_same_v<T, __half>)
    return __half2float(*ptr);
  else
    return __bfloat162float(*ptr);
}

template <class T>
__device__ __forceinline__ T cvt(float v) {
  if constexpr (sizeof(T) == 4)
    return v;
  else if constexpr (std::is_same_v<T, __half>)
    return __float2half_rn(v);
  else
    return __float2bfloat16_rn(v);
}

// torch.optim.SGD's update of one element, in float.
__device__ __forceinline__ float step(float p, float g, float* b, bool first, const Hyper& h) {
  if (h.maximize) g = -g;
  if (h.weight_decay != 0.f) g += h.weight_decay * p;
  if (h.use_momentum) {
    const float nb = first ? g : h.momentum * *b + (1.f - h.dampening) * g;
    *b = nb;
    g = h.nesterov ? g + h.momentum * nb : nb;
  }
  return p - h.lr * g;
}

template <class T>
struct alignas(16) Pack {
  static constexpr int kN = 16 / sizeof(T);
  T v[kN];
};

template <class T>
__global__ void __launch_bounds__(kThreads, 1) sgd_kernel(TensorList tl, Hyper h) {
  constexpr int V = Pack<T>::kN;
  const int64_t total = tl.chunk_end[tl.count - 1];
  for (int64_t chunk = blockIdx.x; chunk < total; chunk += gridDim.x) {
    int lo = 0, hi = tl.count - 1;  // first tensor whose chunk_end > chunk
    while (lo < hi) {
      const int mid = (lo + hi) / 2;
      if (tl.chunk_end[mid] > chunk)
        hi = mid;
      else
        lo = mid + 1;
    }
    const int t = lo;
    const int64_t start = (chunk - (t == 0 ? 0 : tl.chunk_end[t - 1])) * kChunk;
    const int64_t n = tl.n[t];
    const int64_t end = start + kChunk < n ? start + kChunk : n;
    T* p = static_cast<T*>(tl.p[t]);
    const T* g = static_cast<const T*>(tl.g[t]);
    T* b = static_cast<T*>(tl.buf[t]);
    const bool first = tl.first[t] != 0;
    const bool vec = (reinterpret_cast<uintptr_t>(p) | reinterpret_cast<uintptr_t>(g) |
                      (h.use_momentum ? reinterpret_cast<uintptr_t>(b) : 0)) %
                         16 ==
                     0;
    if (vec) {
      for (int64_t i = start + static_cast<int64_t>(threadIdx.x) * V; i < end; i += kThreads * V) {
        if (i + V <= end) {
          Pack<T> pv = *reinterpret_cast<const Pack<T>*>(p + i);
          const Pack<T> gv = *reinterpret_cast<const Pack<T>*>(g + i);
          Pack<T> bv;
          if (h.use_momentum && !first) bv = *reinterpret_cast<const Pack<T>*>(b + i);
#pragma unroll
          for (int k = 0; k < V; ++k) {
            float bf = h.use_momentum && !first ? ld(&bv.v[k]) : 0.f;
            pv.v[k] = cvt<T>(step(ld(&pv.v[k]), ld(&gv.v[k]), &bf, first, h));
            bv.v[k] = cvt<T>(bf);
          }
          *reinterpret_cast<Pack<T>*>(p + i) = pv;
          if (h.use_momentum) *reinterpret_cast<Pack<T>*>(b + i) = bv;
        } else {
          for (int64_t k = i; k < end; ++k) {
            float bf = h.use_momentum && !first ? ld(b + k) : 0.f;
            p[k] = cvt<T>(step(ld(p + k), ld(g + k), &bf, first, h));
            if (h.use_momentum) b[k] = cvt<T>(bf);
          }
        }
      }
    } else {
      for (int64_t k = start + threadIdx.x; k < end; k += kThreads) {
        float bf = h.use_momentum && !first ? ld(b + k) : 0.f;
        p[k] = cvt<T>(step(ld(p + k), ld(g + k), &bf, first, h));
        if (h.use_momentum) b[k] = cvt<T>(bf);
      }
    }
  }
}

template <class T>
cudaError_t run(const SgdLaunch& a, cudaStream_t stream) {
  const Hyper h{a.lr, a.momentum, a.dampening, a.weight_decay, a.nesterov, a.maximize, a.momentum != 0.f};
  int dev = 0, sms = 108;
  if (cudaGetDevice(&dev) == cudaSuccess) cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev);
  for (int at = 0; at < a.count;) {
    TensorList tl{};
    int64_t chunks = 0;
    while (at < a.count && tl.count < kMaxTensors) {
      if (a.sizes[at] > 0) {
        const int k = tl.count++;
        tl.p[k] = a.params[at];
        tl.g[k] = a.grads[at];
        tl.buf[k] = a.bufs != nullptr ? a.bufs[at] : nullptr;
        tl.n[k] = a.sizes[at];
        tl.first[k] = a.first != nullptr ? a.first[at] : 0;
        chunks += (a.sizes[at] + kChunk - 1) / kChunk;
        tl.chunk_end[k] = chunks;
      }
      ++at;
    }
    if (tl.count == 0) continue;
    const int64_t cap = static_cast<int64_t>(sms) * 4;
    const unsigned grid = static_cast<unsigned>(chunks < cap ? chunks : cap);
    sgd_kernel<T><<<grid, kThreads, 0, stream>>>(tl, h);
    const cudaError_t err = cudaGetLastError();
    if (err != cudaSuccess) return err;
  }
  return cudaSuccess;
}

}  // namespace

cudaError_t sgd_update(const SgdLaunch& a, cudaStream_t stream) {
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
