// Fused SGD update with torch.optim.SGD's exact equations, one pass per tensor:
//   d = maximize ? -grad : grad
//   d += weight_decay * param                       (if weight_decay != 0)
//   buf = first_step ? d : momentum*buf + (1-dampening)*d   (if momentum != 0)
//   d = nesterov ? d + momentum*buf : buf           (if momentum != 0)
//   param -= lr * d
#pragma once

#include <cstdint>

namespace fastreg {

struct SgdOptions {
  double lr = 0.0;
  double momentum = 0.0;
  double dampening = 0.0;
  double weight_decay = 0.0;
  bool nesterov = false;
  bool maximize = false;
};

// Updates param[0..n) in place. momentum_buffer may be null when momentum == 0;
// first_step fills it with the (undampened) direction, as torch does. The three
// arrays must not overlap. Multi-threaded for large n.
template <class T>
void sgd_update(T* param, const T* grad, T* momentum_buffer, int64_t n, const SgdOptions& opt, bool first_step);

}  // namespace fastreg
