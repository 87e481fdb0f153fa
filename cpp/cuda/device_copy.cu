#include <cstdint>

#include "device_copy.cuh"

namespace fastreg::cuda {
namespace {

template <class V>
__global__ void copy_kernel(V* __restrict__ dst, const V* __restrict__ src, size_t n) {
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<size_t>(gridDim.x) * blockDim.x)
    dst[i] = src[i];
}

template <class V>
cudaError_t launch(V* dst, const V* src, size_t n, cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  constexpr int kThreads = 256;
  const size_t blocks = (n + kThreads - 1) / kThreads;
  const unsigned grid = static_cast<unsigned>(blocks < 65535 * 8 ? blocks : 65535 * 8);
  copy_kernel<V><<<grid, kThreads, 0, stream>>>(dst, src, n);
  return cudaGetLastError();
}

}  // namespace

cudaError_t device_copy(void* dst, const void* src, size_t bytes, cudaStream_t stream) {
  const bool aligned =
      (reinterpret_cast<uintptr_t>(dst) % 16 == 0) && (reinterpret_cast<uintptr_t>(src) % 16 == 0) && bytes % 16 == 0;
  if (aligned) return launch(static_cast<uint4*>(dst), static_cast<const uint4*>(src), bytes / 16, stream);
  return launch(static_cast<unsigned char*>(dst), static_cast<const unsigned char*>(src), bytes, stream);
}

}  // namespace fastreg::cuda
