// Bindings of the softmax family: row-wise (log_)softmax and logsumexp, and the
// row kernels' own exp / log1p over a whole array (for accuracy tests). Arguments
// are checked with the GIL held; the kernels run with it released.
#include "softmax.hpp"
#include "checks.hpp"
#include "register.hpp"
#include "vexp.hpp"
#include "vlog.hpp"

namespace fastreg::bindings {

namespace {

void softmax(const py::object& x_obj, const py::object& out_obj, bool log) {
  py::array x = check_float_input(x_obj, "x");
  require_ndim(x, "x", 2);
  py::array out = check_out(out_obj, "out", x, {{&x, "x"}}, &x);
  require_same_shape(x, "x", out, "out");
  const int64_t n = x.shape(0), c = x.shape(1);
  if (is_float32(x)) {
    const float* xp = ptr<float>(x);
    float* op = mptr<float>(out);
    py::gil_scoped_release release;
    softmax_rows<float>(xp, op, n, c, log);
  } else {
    const double* xp = ptr<double>(x);
    double* op = mptr<double>(out);
    py::gil_scoped_release release;
    softmax_rows<double>(xp, op, n, c, log);
  }
}

void logsumexp(const py::object& x_obj, const py::object& out_obj, double temperature) {
  checked_hyper(temperature, "temperature");
  py::array x = check_float_input(x_obj, "x");
  require_ndim(x, "x", 2);
  py::array out = check_out(out_obj, "out", x, {{&x, "x"}});
  require_len(out, "out", x.shape(0), "one value per row of x");
  const int64_t n = x.shape(0), c = x.shape(1);
  if (is_float32(x)) {
    const float* xp = ptr<float>(x);
    float* op = mptr<float>(out);
    py::gil_scoped_release release;
    logsumexp_rows<float>(xp, op, n, c, temperature);
  } else {
    const double* xp = ptr<double>(x);
    double* op = mptr<double>(out);
    py::gil_scoped_release release;
    logsumexp_rows<double>(xp, op, n, c, temperature);
  }
}

// exp (or the kernels' exp of shifted logits, or log1p for x >= 0) of a whole
// array with the active SIMD level.
enum class Elementwise { exp, exp_shifted, log1p };
void elementwise(const py::object& x_obj, const py::object& out_obj, Elementwise f) {
  py::array x = check_float_input(x_obj, "x");
  py::array out = check_out(out_obj, "out", x, {{&x, "x"}}, &x);
  require_same_shape(x, "x", out, "out");
  const int64_t n = x.size();
  if (is_float32(x)) {
    const float* xp = ptr<float>(x);
    float* op = mptr<float>(out);
    py::gil_scoped_release release;
    f == Elementwise::log1p ? vlog1p<float>(xp, op, n) : vexp<float>(xp, op, n, f == Elementwise::exp_shifted);
  } else {
    const double* xp = ptr<double>(x);
    double* op = mptr<double>(out);
    py::gil_scoped_release release;
    f == Elementwise::log1p ? vlog1p<double>(xp, op, n) : vexp<double>(xp, op, n, f == Elementwise::exp_shifted);
  }
}

}  // namespace

void register_softmax(py::module_& m) {
  m.def("softmax", &softmax, py::arg("x"), py::arg("out"), py::arg("log") = false,
        "Row-wise (log_)softmax of a C-contiguous [N, C] array into `out` (may be `x`).");
  m.def("logsumexp", &logsumexp, py::arg("x"), py::arg("out"), py::arg("temperature") = 1.0,
        "Row-wise temperature * log(sum(exp(x / temperature))) of a C-contiguous [N, C] array into out [N].");
  m.def(
      "vexp", [](const py::object& x, const py::object& out) { elementwise(x, out, Elementwise::exp); }, py::arg("x"),
      py::arg("out"), "exp of a C-contiguous float array with the active SIMD level (accuracy tests).");
  m.def(
      "vexp_shifted", [](const py::object& x, const py::object& out) { elementwise(x, out, Elementwise::exp_shifted); },
      py::arg("x"), py::arg("out"),
      "The row kernels' exp of shifted logits (inputs <= 0) of a C-contiguous float array with the active SIMD "
      "level (accuracy tests).");
  m.def(
      "vlog1p", [](const py::object& x, const py::object& out) { elementwise(x, out, Elementwise::log1p); },
      py::arg("x"), py::arg("out"),
      "log1p of a C-contiguous float array of values >= 0 with the active SIMD level (accuracy tests).");
}

}  // namespace fastreg::bindings
