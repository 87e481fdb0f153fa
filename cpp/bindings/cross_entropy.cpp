// Binding of the fused softmax cross-entropy (fastreg.ops.cross_entropy[_with_grad],
// fastreg.torch.cross_entropy), the op's one entry. Every argument is converted
// (inputs only: layout, label dtype, torch's unbatched form) and checked here with
// the GIL held, cheap checks first; the kernel then runs with the GIL released.
// Outputs are checked, never copied, so a bad `out` is an error rather than a
// silent copy.
#include <cmath>
#include <optional>
#include <string>
#include <vector>

#include "array_view.hpp"
#include "checks.hpp"
#include "cross_entropy.hpp"
#include "register.hpp"

namespace fastreg::bindings {

namespace {

// Below this many bytes of logits a call is a few microseconds of work: the GIL
// is kept (releasing and taking it back would cost a sizeable part of it).
constexpr int64_t kReleaseGilBytes = int64_t{1} << 16;

template <class T>
double run_xent(const py::array& logits, const py::array& target, bool prob, const py::object& weight,
                int64_t ignore_index, Reduction red, double smoothing, py::object& grad, py::object& row_loss,
                double grad_scale) {
  XentArgs<T> a;
  a.logits = ptr<T>(logits);
  a.n = logits.shape(0);
  a.c = logits.shape(1);
  if (prob)
    a.target_probs = ptr<T>(target);
  else
    a.target = ptr<int64_t>(target);
  if (!weight.is_none()) a.weight = ptr<T>(py::reinterpret_borrow<py::array>(weight));
  a.ignore_index = ignore_index;
  a.label_smoothing = smoothing;
  a.reduction = red;
  a.grad_scale = grad_scale;
  if (!grad.is_none()) {
    py::array g = py::reinterpret_borrow<py::array>(grad);
    a.grad = mptr<T>(g);
  }
  if (!row_loss.is_none()) {
    py::array r = py::reinterpret_borrow<py::array>(row_loss);
    a.row_loss = mptr<T>(r);
  }
  py::gil_scoped_release release;
  return softmax_cross_entropy<T>(a);
}

double checked_cross_entropy(const py::object& logits_obj, const py::object& target_obj, const py::object& weight_obj,
                             int64_t ignore_index, const std::string& reduction, double label_smoothing,
                             const py::object& grad_obj, const py::object& row_loss_obj, double grad_scale) {
  const Reduction red = parse_reduction(reduction);
  if (!(label_smoothing >= 0.0 && label_smoothing <= 1.0))
    throw py::value_error("label_smoothing must be in [0.0, 1.0], got " + std::to_string(label_smoothing));
  require_finite(grad_scale, "grad_scale");
  py::array logits = check_float_input(logits_obj, "input");
  require_ndim(logits, "input", 2);
  const py::ssize_t n = logits.shape(0), c = logits.shape(1);
  if (c < 1)
    throw py::value_error("input must have at least one class (shape (N, C) with C >= 1), got " + shape_str(logits));
  py::array target = as_array(target_obj, "target");
  const char kind = target.dtype().kind();
  bool prob = false;
  if (kind == 'f') {
    prob = true;
    require_same_dtype(logits, "input", target, "target (class probabilities)");
    require_same_shape(logits, "input", target, "target (class probabilities)");
  } else if (has_dtype<int64_t>(target)) {
    require_len(target, "target", n, "one class index per row of input");
  } else {
    throw py::type_error("target must hold int64 class indices or float class probabilities, got dtype " +
                         dtype_str(target));
  }
  require_c_contiguous(target, "target");
  // Optional arrays as std::optional: a default-constructed py::array allocates
  // an empty NumPy array (three per call, ~10% of a small batch's call).
  std::optional<py::array> weight, g, r;
  if (!weight_obj.is_none()) {
    weight = as_array(weight_obj, "weight");
    require_same_dtype(logits, "input", *weight, "weight");
    require_len(*weight, "weight", c, "one weight per class");
    require_c_contiguous(*weight, "weight");
  }
  const py::array* w = weight ? &*weight : nullptr;
  py::object grad = py::none(), row_loss = py::none();
  if (!grad_obj.is_none()) {
    g = check_out(grad_obj, "out", logits, {{&logits, "input"}, {&target, "target"}, {w, "weight"}}, &logits);
    require_same_shape(logits, "input", *g, "out");
    grad = *g;
  }
  if (!row_loss_obj.is_none()) {
    r = check_out(row_loss_obj, "row_loss", logits,
                  {{&logits, "input"}, {&target, "target"}, {w, "weight"}, {g ? &*g : nullptr, "out"}});
    require_len(*r, "row_loss", n, "one loss per row");
    row_loss = *r;
  }
  py::object weight_arg = w ? py::object(*weight) : py::object(py::none());
  if (is_float32(logits))
    return run_xent<float>(logits, target, prob, weight_arg, ignore_index, red, label_smoothing, grad, row_loss,
                           grad_scale);
  return run_xent<double>(logits, target, prob, weight_arg, ignore_index, red, label_smoothing, grad, row_loss,
                          grad_scale);
}

// The most common call, mean or sum of class-index targets without class
// weights, checked on the arrays' headers alone: on a (256, 10) batch the
// general checks (dtype objects, overlap tests through NumPy) cost about as much
// as the kernel. Anything unusual, including every error, returns nullopt and
// the binding takes its general path, which raises the precise exception.
template <class T>
std::optional<py::object> cross_entropy_lean(const ArrayView& x, const ArrayView& y, py::handle out, int64_t ignore,
                                             Reduction red, double smoothing, bool want_grad) {
  const bool compute_grad = want_grad || !out.is_none();
  const int64_t n = x.dim(0), c = x.dim(1);
  if (c < 1 || y.ndim != 1 || y.dim(0) != n || !y.c_contiguous || y.dt != Dt::i64 ||
      !(smoothing >= 0.0 && smoothing <= 1.0))
    return std::nullopt;
  const size_t bytes = static_cast<size_t>(n) * static_cast<size_t>(c) * sizeof(T);
  py::object grad = py::none();
  T* g = nullptr;
  if (want_grad && out.is_none()) {
    auto fresh = py::array_t<T>({n, c});
    g = fresh.mutable_data();
    grad = std::move(fresh);
  } else if (compute_grad) {
    const ArrayView o = ndarray_view(out);
    if (o.ndim != 2 || o.dim(0) != n || o.dim(1) != c || o.dt != x.dt || !o.c_contiguous || !o.writeable ||
        o.overlaps(y) || (o.data != x.data && o.overlaps(x)))
      return std::nullopt;
    g = reinterpret_cast<T*>(o.data);
    grad = py::reinterpret_borrow<py::object>(out);
  }
  XentArgs<T> a;
  a.logits = reinterpret_cast<const T*>(x.data);
  a.n = n;
  a.c = c;
  a.target = reinterpret_cast<const int64_t*>(y.data);
  a.ignore_index = ignore;
  a.label_smoothing = smoothing;
  a.reduction = red;
  a.grad = g;
  double loss;
  if (static_cast<int64_t>(bytes) >= kReleaseGilBytes) {
    py::gil_scoped_release release;
    loss = softmax_cross_entropy<T>(a);
  } else {  // a few microseconds of work: handing the GIL over would cost more
    loss = softmax_cross_entropy<T>(a);
  }
  py::object res = numpy_scalar<T>(loss);
  return want_grad ? py::object(py::make_tuple(res, grad)) : res;
}

// ---- The general path: conversions and checks for everything else ----------------
// fastreg.ops hands plain ndarrays over as the caller gave them (and tensors as NumPy
// views of them); the conversions below are the ones it documents: torch's unbatched
// form, any integer label dtype, non-contiguous inputs. The scalar options are
// checked with fastreg._checks' rules and messages (check_int, check_real).

[[noreturn]] void throw_overflow(const std::string& msg) {
  PyErr_SetString(PyExc_OverflowError, msg.c_str());
  throw py::error_already_set();
}

int64_t int_arg(py::handle v, const char* name) {
  if (PyBool_Check(v.ptr()))
    throw py::type_error(std::string(name) + " must be an int, got bool (" + py::repr(v).cast<std::string>() + ")");
  PyObject* index = PyNumber_Index(v.ptr());
  if (index == nullptr) {
    PyErr_Clear();
    throw py::type_error(std::string(name) + " must be an int, got " + type_name(v) + " (" +
                         py::repr(v).cast<std::string>() + ")");
  }
  const auto i = py::reinterpret_steal<py::int_>(index);
  int overflow = 0;
  const long long x = PyLong_AsLongLongAndOverflow(i.ptr(), &overflow);
  if (overflow)
    throw_overflow(std::string(name) + " must fit in a signed 64-bit integer, got " + py::str(i).cast<std::string>());
  return x;
}

double real_arg(py::handle v, const char* name) {
  const bool real = !PyBool_Check(v.ptr()) && (PyFloat_Check(v.ptr()) || PyLong_Check(v.ptr()) ||
                                               py::isinstance(v, py::module_::import("numbers").attr("Real")));
  if (!real) throw py::type_error(std::string(name) + " must be a real number, got " + type_name(v));
  const double x = PyFloat_AsDouble(v.ptr());
  if (x == -1.0 && PyErr_Occurred()) throw py::error_already_set();
  return x;
}

std::string reduction_arg(py::handle v) {
  if (PyUnicode_Check(v.ptr())) {
    std::string s = py::reinterpret_borrow<py::str>(v).cast<std::string>();
    if (s == "mean" || s == "sum" || s == "none") return s;
  }
  throw py::value_error("reduction must be 'mean', 'sum' or 'none', got " + py::repr(v).cast<std::string>());
}

py::array contiguous(py::array a) {
  if (a.flags() & py::array::c_style) return a;
  return py::module_::import("numpy").attr("ascontiguousarray")(a);
}

// Integer class labels as int64 (the kernel's type), without wrapping: an unsigned
// label past int64 is reported as itself, in the kernel's words.
py::array labels_as_int64(const py::array& y, py::ssize_t n_classes, int64_t ignore_index) {
  if (has_dtype<int64_t>(y)) return y;
  const py::dtype i64 = py::dtype::of<int64_t>();
  if (y.dtype().kind() == 'u' && y.dtype().itemsize() == 8 && y.size() > 0) {
    py::object flat = y.attr("reshape")(-1);
    py::array big = py::module_::import("numpy").attr("flatnonzero")(flat.attr("__gt__")(py::int_(INT64_MAX)));
    if (big.size() > 0) {
      py::object row = big.attr("__getitem__")(0);
      throw py::index_error("Target " + py::str(py::int_(flat.attr("__getitem__")(row))).cast<std::string>() +
                            " at row " + py::str(py::int_(row)).cast<std::string>() +
                            " is out of bounds: class indices must be in [0, " + std::to_string(n_classes) +
                            ") or equal ignore_index (" + std::to_string(ignore_index) + ")");
    }
  }
  return y.attr("astype")(i64);
}

py::object cross_entropy_general(py::handle input, py::handle target, py::handle weight, py::handle ignore_index,
                                 py::handle reduction, py::handle label_smoothing, py::handle out, py::handle row_loss,
                                 double grad_scale, bool want_grad) {
  const std::string red = reduction_arg(reduction);
  const int64_t ignore = int_arg(ignore_index, "ignore_index");
  const double smoothing = real_arg(label_smoothing, "label_smoothing");
  py::array x = as_array(input, "input");
  py::array y = as_array(target, "target");
  const bool unbatched = x.ndim() == 1;
  if (unbatched) {  // torch's unbatched form: logits [C], target [] or probabilities [C]
    x = x.reshape({py::ssize_t{1}, x.shape(0)});
    std::vector<py::ssize_t> ys{1};
    for (py::ssize_t d = 0; d < y.ndim(); ++d) ys.push_back(y.shape(d));
    y = y.reshape(ys);
  } else if (x.ndim() != 2) {
    throw py::value_error("logits must have shape (N, C) or (C,), got " + shape_str(x));
  }
  x = contiguous(x);
  const char kind = y.dtype().kind();
  if (kind == 'i' || kind == 'u') {
    y = labels_as_int64(y, x.shape(1), ignore);
  } else if (kind == 'f') {
    bool same = y.ndim() == 2 && y.shape(0) == x.shape(0) && y.shape(1) == x.shape(1);
    if (!same)
      throw py::type_error("target must hold integer class indices of shape (" + std::to_string(x.shape(0)) +
                           ",) (or float class probabilities of shape " + shape_str(x) + "), got " +
                           py::str(y.dtype()).cast<std::string>() + " of shape " + shape_str(y));
    if (ignore >= 0)  // torch's rule: a negative ignore_index cannot match a class
      throw py::value_error("ignore_index is not supported for floating point target (got " + std::to_string(ignore) +
                            ")");
  }
  y = contiguous(y);
  py::object w = py::none();
  if (!weight.is_none()) w = contiguous(as_array(weight, "weight"));
  py::object g = py::none();
  if (!out.is_none()) {
    py::array o = as_array(out, "out");
    g = unbatched ? py::object(o.attr("reshape")(1, -1)) : py::object(o);
  } else if (want_grad) {
    g = py::array(x.dtype(), std::vector<py::ssize_t>{x.shape(0), x.shape(1)});
  }
  py::object rows = py::reinterpret_borrow<py::object>(row_loss);
  if (rows.is_none() && red == "none") rows = py::array(x.dtype(), std::vector<py::ssize_t>{x.shape(0)});
  const double loss = checked_cross_entropy(x, y, w, ignore, red, smoothing, g, rows, grad_scale);
  py::object res;
  if (red != "none")
    res = is_float32(x) ? numpy_scalar<float>(loss) : numpy_scalar<double>(loss);
  else if (!row_loss.is_none())
    res = rows;
  else if (unbatched)
    res = rows.attr("__getitem__")(0);
  else
    res = rows;
  if (!want_grad) return res;
  if (!out.is_none()) return py::make_tuple(res, out);
  return py::make_tuple(res, unbatched ? py::object(g.attr("reshape")(-1)) : g);
}

// fastreg.ops.cross_entropy[_with_grad] and fastreg.torch.cross_entropy's one
// entry. The common call (plain C-contiguous native float32/float64 [N, C] logits,
// int64 labels, no weight, mean or sum, an int ignore_index and a float
// label_smoothing) is checked on the arrays' headers and run without making
// Python objects (a small batch's call is mostly overhead); everything else takes
// the general path above. Returns the loss (a NumPy scalar of the logits' dtype,
// or the row losses for 'none'); with want_grad, (loss, grad), grad being `out`
// when given.
py::object cross_entropy(py::handle input, py::handle target, py::handle weight, py::handle ignore_index,
                         py::handle reduction, py::handle label_smoothing, py::handle out, py::handle row_loss,
                         double grad_scale, bool want_grad) {
  if (weight.is_none() && row_loss.is_none() && grad_scale == 1.0 && is_plain_ndarray(input) &&
      is_plain_ndarray(target) && (out.is_none() || is_plain_ndarray(out)) && PyLong_CheckExact(ignore_index.ptr()) &&
      PyFloat_CheckExact(label_smoothing.ptr()) && PyUnicode_Check(reduction.ptr())) {
    int overflow = 0;
    const long long ignore = PyLong_AsLongLongAndOverflow(ignore_index.ptr(), &overflow);
    const ArrayView x = ndarray_view(input), y = ndarray_view(target);
    const bool mean = PyUnicode_CompareWithASCIIString(reduction.ptr(), "mean") == 0;
    const bool sum = !mean && PyUnicode_CompareWithASCIIString(reduction.ptr(), "sum") == 0;
    if (!overflow && (mean || sum) && x.ndim == 2 && x.c_contiguous) {
      const Reduction red = mean ? Reduction::mean : Reduction::sum;
      const double eps = PyFloat_AS_DOUBLE(label_smoothing.ptr());
      std::optional<py::object> res;
      if (x.dt == Dt::f32)
        res = cross_entropy_lean<float>(x, y, out, ignore, red, eps, want_grad);
      else if (x.dt == Dt::f64)
        res = cross_entropy_lean<double>(x, y, out, ignore, red, eps, want_grad);
      if (res) return *res;
    }
  }
  return cross_entropy_general(input, target, weight, ignore_index, reduction, label_smoothing, out, row_loss,
                               grad_scale, want_grad);
}

}  // namespace

void register_cross_entropy(py::module_& m) {
  m.def("cross_entropy", &cross_entropy, py::arg("input"), py::arg("target"), py::arg("weight") = py::none(),
        py::arg("ignore_index") = -100, py::arg("reduction") = "mean", py::arg("label_smoothing") = 0.0,
        py::arg("out") = py::none(), py::arg("row_loss") = py::none(), py::arg("grad_scale") = 1.0,
        py::arg("want_grad") = false,
        "Fused softmax cross-entropy of [N, C] (or unbatched [C]) logits: returns the loss (a NumPy scalar of "
        "the logits' dtype, or the [N] row losses for reduction='none', written into `row_loss` when given); "
        "writes d(loss)/d(input) * grad_scale into `out` (may be `input` itself) when given; with want_grad "
        "returns (loss, grad), grad being `out` or a new array.");
}

}  // namespace fastreg::bindings
