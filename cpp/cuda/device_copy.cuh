// Host-callable launchers of fastreg's CUDA kernels. Plain C++ types only, so the
// pybind11 binding (compiled by the host compiler) needs no CUDA headers beyond
// the runtime's error type.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>

namespace fastreg::cuda {

// Copies `bytes` bytes between two device buffers on `stream` with a
// grid-stride kernel (16-byte vectors when both pointers are aligned).
cudaError_t device_copy(void* dst, const void* src, size_t bytes, cudaStream_t stream);

}  // namespace fastreg::cuda
