// Host-callable launcher of the CUDA multi-tensor SGD update (sgd.cu).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "dtype.cuh"

namespace fastreg::cuda {

// Multi-tensor SGD (sgd.cu): torch.optim.SGD's update over `count` tensors of one dtype
// in as few launches as fit the kernel's parameter block (128 tensors a launch).
// bufs[i] may be nullptr when momentum == 0; first[i] != 0 makes the step write the new
// momentum buffer (torch's first step: buf = d_p) instead of reading it.
struct SgdLaunch {
  DType dtype = DType::f32;
  int count = 0;
  void* const* params = nullptr;
  const void* const* grads = nullptr;
  void* const* bufs = nullptr;
  const int64_t* sizes = nullptr;
  const unsigned char* first = nullptr;
  float lr = 0.f, momentum = 0.f, dampening = 0.f, weight_decay = 0.f;
  bool nesterov = false, maximize = false;
};

cudaError_t sgd_update(const SgdLaunch& a, cudaStream_t stream);

}  // namespace fastreg::cuda
