#include <cmath>
#include <string>

#include "checks.hpp"
#include "register.hpp"
#include "sgd.hpp"

namespace fastreg::bindings {

namespace {

template <class T>
void run_sgd(py::array& param, const py::array& grad, py::object& buffer, const SgdOptions& opt,
             bool first_step) {
  T* p = static_cast<T*>(param.mutable_data());
  const T* g = static_cast<const T*>(grad.data());
  T* b = buffer.is_none() ? nullptr : static_cast<T*>(py::reinterpret_borrow<py::array>(buffer).mutable_data());
  const int64_t n = static_cast<int64_t>(param.size());
  py::gil_scoped_release release;
  sgd_update<T>(p, g, b, n, opt, first_step);
}

void check_hyper(double v, const char* name, bool allow_negative = false) {
  if (!std::isfinite(v) || (!allow_negative && v < 0))
    throw py::value_error(std::string(name) + " must be a finite number >= 0, got " + std::to_string(v));
}

}  // namespace

void register_optim(py::module_& m) {
  m.def(
      "sgd_update",
      [](py::object param_obj, py::object grad_obj, py::object buffer, double lr, double momentum,
         double dampening, double weight_decay, bool nesterov, bool maximize, bool first_step) {
        py::array param = as_array(param_obj, "param");
        py::array grad = as_array(grad_obj, "grad");
        require_float(param, "param");
        require_same_dtype(param, "param", grad, "grad");
        require_same_shape(param, "param", grad, "grad");
        require_c_contiguous(param, "param");
        require_c_contiguous(grad, "grad");
        require_writeable(param, "param");
        if (may_overlap(param, grad)) throw py::value_error("param and grad must not share memory");
        check_hyper(lr, "lr");
        check_hyper(momentum, "momentum");
        check_hyper(dampening, "dampening");
        check_hyper(weight_decay, "weight_decay");
        if (nesterov && (momentum <= 0 || dampening != 0))
          throw py::value_error("nesterov momentum requires a momentum > 0 and zero dampening");
        if (momentum != 0) {
          if (buffer.is_none()) throw py::value_error("momentum_buffer is required when momentum != 0");
          py::array buf = as_array(buffer, "momentum_buffer");
          require_same_dtype(param, "param", buf, "momentum_buffer");
          require_same_shape(param, "param", buf, "momentum_buffer");
          require_c_contiguous(buf, "momentum_buffer");
          require_writeable(buf, "momentum_buffer");
          if (may_overlap(param, buf) || may_overlap(grad, buf))
            throw py::value_error("momentum_buffer must not share memory with param or grad");
        } else {
          buffer = py::none();
        }
        const SgdOptions opt{lr, momentum, dampening, weight_decay, nesterov, maximize};
        if (is_float32(param)) run_sgd<float>(param, grad, buffer, opt, first_step);
        else run_sgd<double>(param, grad, buffer, opt, first_step);
      },
      py::arg("param"), py::arg("grad"), py::arg("momentum_buffer"), py::kw_only(), py::arg("lr"),
      py::arg("momentum") = 0.0, py::arg("dampening") = 0.0, py::arg("weight_decay") = 0.0,
      py::arg("nesterov") = false, py::arg("maximize") = false, py::arg("first_step") = false,
      "In-place SGD update of one tensor (torch.optim.SGD equations). Arrays must be C-contiguous.");
}

}  // namespace fastreg::bindings
