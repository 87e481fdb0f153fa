// Binding of the element-wise regression losses (squared, l1, huber, smooth_l1):
// arguments checked with the GIL held, the kernel run with it released.
#include <optional>
#include <string>

#include "checks.hpp"
#include "register.hpp"
#include "regression_loss.hpp"

namespace fastreg::bindings {

namespace {

RegressionKind parse_kind(const std::string& s) {
  if (s == "squared") return RegressionKind::squared;
  if (s == "l1") return RegressionKind::l1;
  if (s == "huber") return RegressionKind::huber;
  if (s == "smooth_l1") return RegressionKind::smooth_l1;
  throw py::value_error("unknown regression loss '" + s + "'");
}

template <class T>
double run_regression(RegressionArgs<T> a, const py::array& pred, const py::array& target, py::object& loss,
                      py::object& grad) {
  a.pred = ptr<T>(pred);
  a.target = ptr<T>(target);
  a.n = pred.size();
  if (!loss.is_none()) {
    py::array l = py::reinterpret_borrow<py::array>(loss);
    a.loss = mptr<T>(l);
  }
  if (!grad.is_none()) {
    py::array g = py::reinterpret_borrow<py::array>(grad);
    a.grad = mptr<T>(g);
  }
  py::gil_scoped_release release;
  return regression_loss<T>(a);
}

double regression(const std::string& kind_name, const py::object& pred_obj, const py::object& target_obj, double param,
                  const std::string& reduction, const py::object& loss_obj, const py::object& grad_obj,
                  double grad_scale) {
  RegressionArgs<double> opts;  // only the scalar options; pointers are set per dtype
  opts.kind = parse_kind(kind_name);
  opts.reduction = parse_reduction(reduction);
  opts.param = param;
  opts.grad_scale = grad_scale;
  require_finite(grad_scale, "grad_scale");
  if (opts.kind == RegressionKind::huber) checked_hyper(param, "delta", true);
  if (opts.kind == RegressionKind::smooth_l1) checked_hyper(param, "beta");
  py::array pred = check_float_input(pred_obj, "input");
  py::array target = check_float_input(target_obj, "target");
  require_same_dtype(pred, "input", target, "target");
  require_same_shape(pred, "input", target, "target");
  py::object loss = py::none(), grad = py::none();
  std::optional<py::array> l, g;  // not py::array: its default constructor allocates
  if (!grad_obj.is_none()) {
    g = check_out(grad_obj, "out", pred, {{&pred, "input"}, {&target, "target"}}, &pred);
    require_same_shape(pred, "input", *g, "out");
    grad = *g;
  }
  if (!loss_obj.is_none()) {
    l = check_out(loss_obj, "loss", pred, {{&pred, "input"}, {&target, "target"}, {g ? &*g : nullptr, "out"}});
    require_same_shape(pred, "input", *l, "loss");
    loss = *l;
  }
  auto with_type = [&](auto zero) {
    using T = decltype(zero);
    RegressionArgs<T> a;
    a.kind = opts.kind;
    a.param = opts.param;
    a.reduction = opts.reduction;
    a.grad_scale = opts.grad_scale;
    return run_regression<T>(a, pred, target, loss, grad);
  };
  return is_float32(pred) ? with_type(0.0f) : with_type(0.0);
}

}  // namespace

void register_regression_loss(py::module_& m) {
  m.def("regression_loss", &regression, py::arg("kind"), py::arg("input"), py::arg("target"), py::arg("param"),
        py::arg("reduction"), py::arg("loss"), py::arg("out"), py::arg("grad_scale") = 1.0,
        "Element-wise regression loss ('squared', 'l1', 'huber', 'smooth_l1') of same-shape C-contiguous "
        "arrays: returns the reduced loss, writes element losses into `loss` and the gradient into `out`.");
}

}  // namespace fastreg::bindings
