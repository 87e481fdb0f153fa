// Element types of fastreg's CUDA kernels; the binding maps dtype names to these.
#pragma once

namespace fastreg::cuda {

enum class DType : int { f32 = 0, f16 = 1, bf16 = 2 };

}  // namespace fastreg::cuda
