#include "register.hpp"

PYBIND11_MODULE(_core, m) {
  m.doc() = "fastreg's compiled kernels. Use the Python API in fastreg.* rather than this module.";
  fastreg::bindings::register_runtime(m);
  fastreg::bindings::register_sgd(m);
  fastreg::bindings::register_linear(m);
  fastreg::bindings::register_epoch(m);
  fastreg::bindings::register_loader(m);
  fastreg::bindings::register_cross_entropy(m);
  fastreg::bindings::register_softmax(m);
  fastreg::bindings::register_regression_loss(m);
  fastreg::bindings::register_linear_cross_entropy(m);
}
