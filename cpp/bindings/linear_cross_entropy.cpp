// Binding of the fused linear + cross-entropy. Every argument is checked here
// with the GIL held (the targets' range included); the kernel then runs with the
// GIL released. fastreg._linear_cross_entropy has already turned tensors into
// arrays, made inputs C-contiguous and allocated the outputs it wants.
#include <cmath>
#include <cstdint>
#include <optional>
#include <string>

#include "checks.hpp"
#include "linear_cross_entropy.hpp"
#include "register.hpp"

namespace fastreg::bindings {

namespace {

Reduction reduction_of(const std::string& s) {
  if (s == "mean") return Reduction::mean;
  if (s == "sum") return Reduction::sum;
  if (s == "none") return Reduction::none;
  throw py::value_error("reduction must be 'mean', 'sum' or 'none', got '" + s + "'");
}

py::array float_input(const py::handle& obj, const char* name, py::ssize_t ndim) {
  py::array a = as_array(obj, name);
  require_float(a, name);
  require_c_contiguous(a, name);
  if (a.ndim() != ndim)
    throw py::value_error(std::string(name) + " must be " + std::to_string(ndim) + "-dimensional, got shape " +
                          shape_str(a));
  return a;
}

std::string shape_of(std::initializer_list<py::ssize_t> dims) {
  std::string s = "(";
  for (auto it = dims.begin(); it != dims.end(); ++it) s += (it == dims.begin() ? "" : ", ") + std::to_string(*it);
  return s + (dims.size() == 1 ? ",)" : ")");
}

// An output buffer: the given dtype and shape, C-contiguous, writeable, sharing no
// memory with any input or other output.
std::optional<py::array> output(const py::object& obj, const char* name, const py::dtype& dtype,
                                std::initializer_list<py::ssize_t> shape,
                                std::initializer_list<const py::array*> others) {
  if (obj.is_none()) return std::nullopt;
  py::array a = as_array(obj, name);
  if (!a.dtype().is(dtype))
    throw py::type_error(std::string(name) + " must have dtype " + py::str(dtype).cast<std::string>() + ", got " +
                         dtype_str(a));
  bool same = a.ndim() == static_cast<py::ssize_t>(shape.size());
  py::ssize_t k = 0;
  for (auto it = shape.begin(); same && it != shape.end(); ++it, ++k) same = a.shape(k) == *it;
  if (!same) throw py::value_error(std::string(name) + " must have shape " + shape_of(shape) + ", got " + shape_str(a));
  require_c_contiguous(a, name);
  require_writeable(a, name);
  for (const py::array* o : others)
    if (o && may_overlap(a, *o))
      throw py::value_error(std::string(name) + " must not share memory with another argument");
  return a;
}

template <class T>
T* data(std::optional<py::array>& a) {
  return a ? static_cast<T*>(a->mutable_data()) : nullptr;
}

template <class T>
double run(LinearXentArgs<T> a, const py::array& h, const py::array& w, const std::optional<py::array>& b,
           const py::array& y, std::optional<py::array>& gh, std::optional<py::array>& gw, std::optional<py::array>& gb,
           std::optional<py::array>& rows, std::optional<py::array>& lse, std::optional<py::array>& am,
           LinearXentTiles tiles) {
  a.h = static_cast<const T*>(h.data());
  a.weight = static_cast<const T*>(w.data());
  a.bias = b ? static_cast<const T*>(b->data()) : nullptr;
  a.target = static_cast<const int64_t*>(y.data());
  a.grad_h = data<T>(gh);
  a.grad_weight = data<T>(gw);
  a.grad_bias = data<T>(gb);
  a.row_loss = data<T>(rows);
  a.lse = data<T>(lse);
  a.argmax = data<int64_t>(am);
  py::gil_scoped_release release;
  return linear_cross_entropy<T>(a, tiles);
}

double linear_cross_entropy_py(const py::object& h_obj, const py::object& w_obj, const py::object& y_obj,
                               const py::object& b_obj, int64_t ignore_index, const std::string& reduction,
                               double label_smoothing, double lse_square_scale, const py::object& softcap,
                               const py::object& grad_h_obj, const py::object& grad_weight_obj,
                               const py::object& grad_bias_obj, const py::object& row_loss_obj,
                               const py::object& lse_obj, const py::object& argmax_obj, double grad_scale,
                               int64_t tile_rows, int64_t tile_cols) {
  const Reduction red = reduction_of(reduction);
  if (!(label_smoothing >= 0.0 && label_smoothing <= 1.0))
    throw py::value_error("label_smoothing must be in [0.0, 1.0], got " + std::to_string(label_smoothing));
  if (!std::isfinite(lse_square_scale))
    throw py::value_error("lse_square_scale must be finite, got " + std::to_string(lse_square_scale));
  double cap = 0.0;
  if (!softcap.is_none()) {
    cap = softcap.cast<double>();
    if (!(cap > 0.0) || std::isinf(cap))
      throw py::value_error("softcap must be a finite number > 0 (or None), got " + std::to_string(cap));
  }
  if (!std::isfinite(grad_scale)) throw py::value_error("grad_scale must be finite, got " + std::to_string(grad_scale));
  if (tile_rows < 0 || tile_cols < 0) throw py::value_error("tile sizes must be >= 0 (0: the default)");

  py::array h = float_input(h_obj, "input", 2);
  const py::ssize_t n = h.shape(0), d = h.shape(1);
  py::array w = as_array(w_obj, "weight");
  require_same_dtype(h, "input", w, "weight");
  require_c_contiguous(w, "weight");
  if (w.ndim() != 2 || w.shape(1) != d)
    throw py::value_error("weight must have shape (V, " + std::to_string(d) + ") (V classes by input's " +
                          std::to_string(d) + " features), got " + shape_str(w));
  const py::ssize_t v = w.shape(0);
  py::array y = as_array(y_obj, "target");
  if (!y.dtype().is(py::dtype::of<int64_t>()))
    throw py::type_error("target must hold int64 class indices, got dtype " + dtype_str(y));
  if (y.ndim() != 1 || y.shape(0) != n)
    throw py::value_error("target must have shape (" + std::to_string(n) +
                          ",) (one class index per row of input), got " + shape_str(y));
  require_c_contiguous(y, "target");
  std::optional<py::array> b;
  if (!b_obj.is_none()) {
    b = as_array(b_obj, "bias");
    require_same_dtype(h, "input", *b, "bias");
    if (b->ndim() != 1 || b->shape(0) != v)
      throw py::value_error("bias must have shape (" + std::to_string(v) + ",) (one per row of weight), got " +
                            shape_str(*b));
    require_c_contiguous(*b, "bias");
  }
  if (!grad_bias_obj.is_none() && !b) throw py::value_error("grad_bias was given but there is no bias");
  if (!argmax_obj.is_none() && v == 0 && n > 0)
    throw py::value_error("argmax of an empty vocabulary (weight has 0 rows) is undefined");

  // Targets: the same check (and message) as the kernel's, but here, before the GIL is released.
  const auto* yp = static_cast<const int64_t*>(y.data());
  for (py::ssize_t i = 0; i < n; ++i)
    if (yp[i] != ignore_index && (yp[i] < 0 || yp[i] >= v))
      throw py::index_error("Target " + std::to_string(yp[i]) + " at row " + std::to_string(i) +
                            " is out of bounds: class indices must be in [0, " + std::to_string(v) +
                            ") or equal ignore_index (" + std::to_string(ignore_index) + ")");

  const py::array* bp = b ? &*b : nullptr;
  const py::dtype dt = h.dtype();
  auto gh = output(grad_h_obj, "grad_input", dt, {n, d}, {&h, &w, bp, &y});
  auto gw = output(grad_weight_obj, "grad_weight", dt, {v, d}, {&h, &w, bp, &y, gh ? &*gh : nullptr});
  auto gb = output(grad_bias_obj, "grad_bias", dt, {v}, {&h, &w, bp, &y, gh ? &*gh : nullptr, gw ? &*gw : nullptr});
  auto rows = output(row_loss_obj, "row_loss", dt, {n},
                     {&h, &w, bp, &y, gh ? &*gh : nullptr, gw ? &*gw : nullptr, gb ? &*gb : nullptr});
  auto lse =
      output(lse_obj, "lse", dt, {n},
             {&h, &w, bp, &y, gh ? &*gh : nullptr, gw ? &*gw : nullptr, gb ? &*gb : nullptr, rows ? &*rows : nullptr});
  auto am = output(argmax_obj, "argmax", py::dtype::of<int64_t>(), {n},
                   {&h, &w, bp, &y, gh ? &*gh : nullptr, gw ? &*gw : nullptr, gb ? &*gb : nullptr,
                    rows ? &*rows : nullptr, lse ? &*lse : nullptr});

  const LinearXentTiles tiles{tile_rows, tile_cols};
  if (is_float32(h)) {
    LinearXentArgs<float> a;
    a.n = n, a.d = d, a.v = v, a.ignore_index = ignore_index, a.label_smoothing = label_smoothing;
    a.lse_square_scale = lse_square_scale, a.softcap = cap, a.reduction = red, a.grad_scale = grad_scale;
    return run<float>(a, h, w, b, y, gh, gw, gb, rows, lse, am, tiles);
  }
  LinearXentArgs<double> a;
  a.n = n, a.d = d, a.v = v, a.ignore_index = ignore_index, a.label_smoothing = label_smoothing;
  a.lse_square_scale = lse_square_scale, a.softcap = cap, a.reduction = red, a.grad_scale = grad_scale;
  return run<double>(a, h, w, b, y, gh, gw, gb, rows, lse, am, tiles);
}

}  // namespace

void register_linear_cross_entropy(py::module_& m) {
  m.def("linear_cross_entropy", &linear_cross_entropy_py, py::arg("input"), py::arg("weight"), py::arg("target"),
        py::arg("bias"), py::arg("ignore_index"), py::arg("reduction"), py::arg("label_smoothing"),
        py::arg("lse_square_scale"), py::arg("softcap"), py::arg("grad_input"), py::arg("grad_weight"),
        py::arg("grad_bias"), py::arg("row_loss"), py::arg("lse"), py::arg("argmax"), py::arg("grad_scale") = 1.0,
        py::arg("tile_rows") = 0, py::arg("tile_cols") = 0,
        "Fused linear + cross-entropy (see fastreg.ops.linear_cross_entropy); fills the given outputs and "
        "returns the reduced loss (for reduction='none', the sum of the row losses).");
  m.def(
      "linear_cross_entropy_tiles",
      [](int64_t n, int64_t v, int64_t rows, int64_t cols) {
        const LinearXentTiles t = fastreg::linear_cross_entropy_tiles(n, v, {rows, cols});
        return py::make_tuple(t.rows, t.cols);
      },
      py::arg("n"), py::arg("v"), py::arg("rows") = 0, py::arg("cols") = 0,
      "(rows per chunk, vocabulary columns per tile) the kernel uses for these shapes.");
}

}  // namespace fastreg::bindings
