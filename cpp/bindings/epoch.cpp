// Bindings for the whole-epoch loops and the per-batch steps of data-parallel
// training. Every argument is checked here with the GIL held; the kernels then
// run with it released.
#include <string>

#include <pybind11/stl.h>  // epoch_chunk_rows returns a std::vector

#include "blas.hpp"
#include "checks.hpp"
#include "epoch.hpp"
#include "register.hpp"

namespace fastreg::bindings {

namespace {

// ---- whole epochs ----------------------------------------------------------

// Everything an epoch needs, checked with the GIL held.
struct EpochInputs {
  py::array x, order, w, b;
  py::object w_buf, b_buf;
  Source source = Source::f32;
  bool f64 = false;
};

// weight [c, d], bias [c] (and momentum buffers like them when momentum != 0):
// dtype dt, C-contiguous, writeable, no two sharing memory.
void check_params(EpochInputs& in, const py::object& w_obj, const py::object& b_obj, const py::object& wbuf_obj,
                  const py::object& bbuf_obj, double momentum, const py::dtype& dt, const char* dt_name,
                  py::ssize_t d) {
  in.w = as_array(w_obj, "weight");
  require_ndim(in.w, "weight", 2, "[n_outputs, n_features]");
  const py::ssize_t c = in.w.shape(0);
  if (c < 1) throw py::value_error("weight must have at least one row (output)");
  in.w = checked_out(in.w, "weight", dt, dt_name, {c, d});
  in.b = checked_out(b_obj, "bias", dt, dt_name, {c});
  if (may_overlap(in.w, in.b)) throw py::value_error("weight and bias must not share memory");
  if (momentum != 0) {
    if (wbuf_obj.is_none() || bbuf_obj.is_none())
      throw py::value_error("momentum buffers for weight and bias are required when momentum != 0");
    py::array wb = checked_out(wbuf_obj, "weight_buffer", dt, dt_name, {c, d});
    py::array bb = checked_out(bbuf_obj, "bias_buffer", dt, dt_name, {c});
    for (const py::array* o : {&in.w, &in.b})
      if (may_overlap(*o, wb) || may_overlap(*o, bb) || may_overlap(wb, bb))
        throw py::value_error("momentum buffers must not share memory with weight, bias or each other");
    in.w_buf = wb;
    in.b_buf = bb;
  }
}

EpochInputs check_epoch_inputs(const py::object& x_obj, const py::object& order_obj, const py::object& w_obj,
                               const py::object& b_obj, const py::object& wbuf_obj, const py::object& bbuf_obj,
                               double momentum) {
  EpochInputs in;
  in.x = as_array(x_obj, "X");
  if (has_dtype<uint8_t>(in.x))
    in.source = Source::u8;
  else if (is_float64(in.x))
    in.source = Source::f64;
  else if (!is_float32(in.x))
    throw py::type_error("X must have dtype float32, float64 or uint8, got " + dtype_str(in.x));
  require_ndim(in.x, "X", 2, "[n_samples, n_features]");
  require_c_contiguous(in.x, "X");
  in.f64 = in.source == Source::f64;
  const py::dtype dt = in.f64 ? py::dtype::of<double>() : py::dtype::of<float>();
  const char* dt_name = in.f64 ? "float64 (X is float64)" : "float32 (X is float32 or uint8)";
  const py::ssize_t n = in.x.shape(0);
  check_params(in, w_obj, b_obj, wbuf_obj, bbuf_obj, momentum, dt, dt_name, in.x.shape(1));
  in.order = as_array(order_obj, "order");
  require_dtype(in.order, "order", py::dtype::of<int64_t>(), "int64");
  require_ndim(in.order, "order", 1, "[n_steps]");
  require_c_contiguous(in.order, "order");
  const int64_t* o = static_cast<const int64_t*>(in.order.data());
  for (py::ssize_t i = 0; i < in.order.shape(0); ++i)
    if (o[i] < 0 || o[i] >= n)
      throw py::index_error("order[" + std::to_string(i) + "] = " + std::to_string(o[i]) +
                            " is out of range for X with " + std::to_string(n) + " rows");
  return in;
}

template <class T>
EpochArgs<T> make_args(const EpochInputs& in, double lr, double momentum, double weight_decay, int64_t batch_size,
                       double scale, bool first_step, bool check_finite = false) {
  EpochArgs<T> a;
  a.x = in.x.data();
  a.source = in.source;
  a.scale = static_cast<float>(scale);
  a.n_rows = in.x.shape(0);
  a.d = in.x.shape(1);
  a.c = in.w.shape(0);
  a.order = static_cast<const int64_t*>(in.order.data());
  a.n_order = in.order.shape(0);
  a.batch_size = batch_size;
  a.w = static_cast<T*>(const_cast<void*>(in.w.data()));
  a.b = static_cast<T*>(const_cast<void*>(in.b.data()));
  if (in.w_buf) {
    a.w_buf = static_cast<T*>(py::reinterpret_borrow<py::array>(in.w_buf).mutable_data());
    a.b_buf = static_cast<T*>(py::reinterpret_borrow<py::array>(in.b_buf).mutable_data());
  }
  a.first_step = first_step;
  a.check_finite = check_finite;
  a.opt = SgdOptions{lr, momentum, 0.0, weight_decay, false, false};
  return a;
}

// A per-row array of X (y, sample_weight): [n_samples], C-contiguous. Its dtype is
// the caller's rule.
void require_per_row(const py::array& a, const char* name, const EpochInputs& in) {
  if (a.ndim() != 1 || a.shape(0) != in.x.shape(0))
    throw py::value_error(std::string(name) + " must have shape (" + std::to_string(in.x.shape(0)) +
                          ",) like X's rows, got " + shape_str(a));
  require_c_contiguous(a, name);
}

// Softmax labels: int64 [n_samples]; y[rows[i]] (y[i] when rows is null), i < n, are
// checked to be class indices in [0, c).
const int64_t* checked_labels(py::array& y, const py::object& y_obj, const EpochInputs& in, const int64_t* rows,
                              int64_t n) {
  y = as_array(y_obj, "y");
  require_dtype(y, "y", py::dtype::of<int64_t>(), "int64 (class indices)");
  require_per_row(y, "y", in);
  const int64_t c = in.w.shape(0), *yp = static_cast<const int64_t*>(y.data());
  for (int64_t i = 0; i < n; ++i) {
    const int64_t row = rows ? rows[i] : i;
    if (yp[row] < 0 || yp[row] >= c)
      throw py::value_error("y must hold class indices in [0, " + std::to_string(c) + "), got " +
                            std::to_string(yp[row]) + " at row " + std::to_string(row));
  }
  return yp;
}

// Regression targets: [n_samples] of weight's dtype, for a weight of one row.
py::array checked_targets(const py::object& y_obj, const EpochInputs& in) {
  if (in.w.shape(0) != 1) throw py::value_error("weight must have shape (1, n_features) for regression");
  py::array y = as_array(y_obj, "y");
  require_same_dtype(in.w, "weight", y, "y");
  require_per_row(y, "y", in);
  return y;
}

RegressionLoss regression_loss_named(const std::string& loss) {
  if (loss == "squared") return RegressionLoss::squared;
  if (loss == "huber") return RegressionLoss::huber;
  if (loss == "l1") return RegressionLoss::l1;
  throw py::value_error("loss must be 'squared', 'huber' or 'l1', got '" + loss + "'");
}

// Optional per-row weights [n_rows] of the model's dtype (values checked by the caller:
// the estimators check they are finite and >= 0); null when None.
template <class T>
const T* checked_sample_weight(const py::object& obj, const EpochInputs& in) {
  if (obj.is_none()) return nullptr;
  py::array sw = as_array(obj, "sample_weight");
  require_same_dtype(in.w, "weight", sw, "sample_weight");
  require_per_row(sw, "sample_weight", in);
  return cdata_of<T>(sw);
}

py::tuple result_tuple(const EpochResult& r) {
  return py::make_tuple(r.loss_sum, r.correct, r.rows, r.finite, r.nonfinite_row);
}

void check_common(double lr, double momentum, double weight_decay, int64_t batch_size, double scale) {
  checked_lr(lr);
  checked_hyper(momentum, "momentum");
  checked_hyper(weight_decay, "weight_decay");
  checked_hyper(scale, "scale");
  if (batch_size < 1) throw py::value_error("batch_size must be >= 1, got " + std::to_string(batch_size));
}

// ---- one batch at a time (data-parallel fit) --------------------------------

// The flat gradient buffer [c*d + c] (w's gradient, then b's), of the model's
// dtype; it is written, so it must not overlap anything the kernel reads.
py::array checked_grad(const py::object& g_obj, const EpochInputs& in, const py::array* y) {
  const py::dtype dt = in.w.dtype();
  const char* dt_name = in.f64 ? "float64 (like weight)" : "float32 (like weight)";
  const py::ssize_t c = in.w.shape(0), d = in.w.shape(1);
  py::array g = as_array(g_obj, "grad");
  if (!same_dtype(g.dtype(), dt))
    throw py::type_error(std::string("grad must have dtype ") + dt_name + ", got " + dtype_str(g));
  if (g.ndim() != 1 || g.shape(0) != c * d + c)
    throw py::value_error("grad must have shape (" + std::to_string(c * d + c) +
                          ",) = (n_outputs * n_features + n_outputs,), got " + shape_str(g));
  require_c_contiguous(g, "grad");
  require_writeable(g, "grad");
  bool overlap = may_overlap(g, in.w) || may_overlap(g, in.b) || (y && may_overlap(g, *y));
  if (in.x) overlap = overlap || may_overlap(g, in.x) || may_overlap(g, in.order);
  if (overlap) throw py::value_error("grad must not share memory with X, y, order, weight or bias");
  return g;
}

// A batch's row indices: at least one (a mean over no rows is undefined).
void require_batch(const EpochInputs& in) {
  if (in.order.shape(0) == 0) throw py::value_error("order (the batch's rows) must hold at least one row index");
}

py::tuple batch_tuple(const BatchResult& r) { return py::make_tuple(r.loss_sum, r.correct, r.finite); }

template <class T>
void sgd_step_t(const EpochInputs& in, const py::array& g, const SgdOptions& opt, bool first_step) {
  EpochArgs<T> a;
  a.d = in.w.shape(1);
  a.c = in.w.shape(0);
  a.w = static_cast<T*>(const_cast<void*>(in.w.data()));
  a.b = static_cast<T*>(const_cast<void*>(in.b.data()));
  if (in.w_buf) {
    a.w_buf = static_cast<T*>(py::reinterpret_borrow<py::array>(in.w_buf).mutable_data());
    a.b_buf = static_cast<T*>(py::reinterpret_borrow<py::array>(in.b_buf).mutable_data());
  }
  a.opt = opt;
  const T* gp = cdata_of<T>(g);
  py::gil_scoped_release release;
  linear_sgd_step<T>(a, gp, first_step);
}

}  // namespace

void register_epoch(py::module_& m) {
  m.def(
      "softmax_epoch",
      [](const py::object& x, const py::object& y_obj, const py::object& order, const py::object& w,
         const py::object& b, const py::object& w_buf, const py::object& b_buf, double lr, double momentum,
         double weight_decay, int64_t batch_size, double scale, bool first_step, bool check_finite,
         const py::object& sample_weight) -> py::tuple {
        check_common(lr, momentum, weight_decay, batch_size, scale);
        EpochInputs in = check_epoch_inputs(x, order, w, b, w_buf, b_buf, momentum);
        py::array y;
        const int64_t* yp = checked_labels(y, y_obj, in, nullptr, in.x.shape(0));
        EpochResult r;
        if (in.f64) {
          auto a = make_args<double>(in, lr, momentum, weight_decay, batch_size, scale, first_step, check_finite);
          a.sample_weight = checked_sample_weight<double>(sample_weight, in);
          py::gil_scoped_release release;
          r = softmax_epoch<double>(a, yp);
        } else {
          auto a = make_args<float>(in, lr, momentum, weight_decay, batch_size, scale, first_step, check_finite);
          a.sample_weight = checked_sample_weight<float>(sample_weight, in);
          py::gil_scoped_release release;
          r = softmax_epoch<float>(a, yp);
        }
        return result_tuple(r);
      },
      py::arg("X"), py::arg("y"), py::arg("order"), py::arg("weight"), py::arg("bias"), py::arg("weight_buffer"),
      py::arg("bias_buffer"), py::kw_only(), py::arg("lr"), py::arg("momentum"), py::arg("weight_decay"),
      py::arg("batch_size"), py::arg("scale") = 1.0, py::arg("first_step") = false, py::arg("check_finite") = false,
      py::arg("sample_weight") = py::none(),
      "One epoch of softmax regression in C++; returns (loss_sum, correct, rows, finite, nonfinite_row).\n"
      "check_finite: stop before using a row of X with NaN/inf and return its index (else -1).\n"
      "sample_weight: None or [n_samples] of the model's dtype; a batch's loss is sum_i w_i l_i / rows.");

  m.def(
      "regression_epoch",
      [](const py::object& x, const py::object& y_obj, const py::object& order, const py::object& w,
         const py::object& b, const py::object& w_buf, const py::object& b_buf, double lr, double momentum,
         double weight_decay, int64_t batch_size, double scale, bool first_step, bool check_finite,
         const std::string& loss, const py::object& sample_weight) {
        check_common(lr, momentum, weight_decay, batch_size, scale);
        const RegressionLoss kind = regression_loss_named(loss);
        EpochInputs in = check_epoch_inputs(x, order, w, b, w_buf, b_buf, momentum);
        py::array y = checked_targets(y_obj, in);
        EpochResult r;
        if (in.f64) {
          auto a = make_args<double>(in, lr, momentum, weight_decay, batch_size, scale, first_step, check_finite);
          a.sample_weight = checked_sample_weight<double>(sample_weight, in);
          const double* yp = static_cast<const double*>(y.data());
          py::gil_scoped_release release;
          r = regression_epoch<double>(a, yp, kind);
        } else {
          auto a = make_args<float>(in, lr, momentum, weight_decay, batch_size, scale, first_step, check_finite);
          a.sample_weight = checked_sample_weight<float>(sample_weight, in);
          const float* yp = static_cast<const float*>(y.data());
          py::gil_scoped_release release;
          r = regression_epoch<float>(a, yp, kind);
        }
        return result_tuple(r);
      },
      py::arg("X"), py::arg("y"), py::arg("order"), py::arg("weight"), py::arg("bias"), py::arg("weight_buffer"),
      py::arg("bias_buffer"), py::kw_only(), py::arg("lr"), py::arg("momentum"), py::arg("weight_decay"),
      py::arg("batch_size"), py::arg("scale") = 1.0, py::arg("first_step") = false, py::arg("check_finite") = false,
      py::arg("loss") = "squared", py::arg("sample_weight") = py::none(),
      "One epoch of linear regression in C++; returns (loss_sum, 0, rows, finite, nonfinite_row).\n"
      "check_finite: stop before using a row of X with NaN/inf and return its index (else -1).\n"
      "sample_weight: None or [n_samples] of the model's dtype; a batch's loss is sum_i w_i l_i / rows.");

  m.def(
      "epoch_team_size",
      [](int64_t batch, int64_t d, int64_t c) {
        if (batch < 1 || d < 1 || c < 1)
          throw py::value_error("batch, d and c must be >= 1, got " + std::to_string(batch) + ", " + std::to_string(d) +
                                ", " + std::to_string(c));
        return epoch_team_size(batch, d, c);
      },
      py::arg("batch"), py::arg("d"), py::arg("c"),
      "Threads an epoch uses for batches of `batch` rows, d features, c outputs (1: the single-thread loop).");

  m.def("epoch_many_classes", &epoch_many_classes, py::arg("c"), py::arg("weighted"),
        "Whether a softmax epoch with c classes (and sample weights or not) runs each batch through the "
        "fused linear + cross-entropy kernel.");

  m.def(
      "epoch_chunk_rows",
      [](int64_t rows, int64_t batch, int64_t d, int64_t c) {
        if (batch < 1 || d < 1 || c < 1 || rows < 0 || rows > batch)
          throw py::value_error("need 0 <= rows <= batch and batch, d, c >= 1, got rows=" + std::to_string(rows) +
                                ", batch=" + std::to_string(batch) + ", d=" + std::to_string(d) +
                                ", c=" + std::to_string(c));
        return epoch_chunk_rows(rows, batch, d, c);
      },
      py::arg("rows"), py::arg("batch"), py::arg("d"), py::arg("c"),
      "Rows of each chunk (the unit an epoch's threads claim) of a batch of `rows` rows, in an epoch "
      "whose batches have `batch` rows, d features and c outputs.");

  // Data-parallel training runs these per batch, all-reducing grad in between.
  m.def(
      "softmax_batch_grad",
      [](const py::object& x, const py::object& y_obj, const py::object& order, const py::object& w,
         const py::object& b, const py::object& grad_obj, double scale) -> py::tuple {
        checked_hyper(scale, "scale");
        EpochInputs in = check_epoch_inputs(x, order, w, b, py::none(), py::none(), 0.0);
        require_batch(in);
        // Only this batch's labels are read, so only they are checked (O(batch), not O(n) per step).
        py::array y;
        const int64_t* yp =
            checked_labels(y, y_obj, in, static_cast<const int64_t*>(in.order.data()), in.order.shape(0));
        py::array g = checked_grad(grad_obj, in, &y);
        BatchResult r;
        if (in.f64) {
          auto a = make_args<double>(in, 1.0, 0.0, 0.0, 1, scale, false);
          double* gp = data_of<double>(g);
          py::gil_scoped_release release;
          const BlasThreads single(1);
          BatchScratch<double> s;
          r = softmax_batch_grad<double>(a, yp, gp, s);
        } else {
          auto a = make_args<float>(in, 1.0, 0.0, 0.0, 1, scale, false);
          float* gp = data_of<float>(g);
          py::gil_scoped_release release;
          const BlasThreads single(1);
          BatchScratch<float> s;
          r = softmax_batch_grad<float>(a, yp, gp, s);
        }
        return batch_tuple(r);
      },
      py::arg("X"), py::arg("y"), py::arg("order"), py::arg("weight"), py::arg("bias"), py::arg("grad"), py::kw_only(),
      py::arg("scale") = 1.0,
      "Gradient of the mean cross-entropy over the rows `order` (one batch) into grad [c*d + c] (weight's, then "
      "bias's); returns (loss_sum, correct, finite). grad is not written when finite is False.");

  m.def(
      "regression_batch_grad",
      [](const py::object& x, const py::object& y_obj, const py::object& order, const py::object& w,
         const py::object& b, const py::object& grad_obj, const std::string& loss) -> py::tuple {
        const RegressionLoss kind = regression_loss_named(loss);
        EpochInputs in = check_epoch_inputs(x, order, w, b, py::none(), py::none(), 0.0);
        if (in.source == Source::u8)
          throw py::type_error("X must have dtype float32 or float64 for regression, got uint8");
        py::array y = checked_targets(y_obj, in);
        require_batch(in);
        py::array g = checked_grad(grad_obj, in, &y);
        BatchResult r;
        if (in.f64) {
          auto a = make_args<double>(in, 1.0, 0.0, 0.0, 1, 1.0, false);
          const double* yp = cdata_of<double>(y);
          double* gp = data_of<double>(g);
          py::gil_scoped_release release;
          const BlasThreads single(1);
          BatchScratch<double> s;
          r = regression_batch_grad<double>(a, yp, kind, gp, s);
        } else {
          auto a = make_args<float>(in, 1.0, 0.0, 0.0, 1, 1.0, false);
          const float* yp = cdata_of<float>(y);
          float* gp = data_of<float>(g);
          py::gil_scoped_release release;
          const BlasThreads single(1);
          BatchScratch<float> s;
          r = regression_batch_grad<float>(a, yp, kind, gp, s);
        }
        return batch_tuple(r);
      },
      py::arg("X"), py::arg("y"), py::arg("order"), py::arg("weight"), py::arg("bias"), py::arg("grad"), py::kw_only(),
      py::arg("loss") = "squared",
      "Gradient of the mean regression loss over the rows `order` (one batch) into grad [d + 1]; returns "
      "(loss_sum, 0, finite). grad is not written when finite is False.");

  m.def(
      "linear_sgd_step",
      [](const py::object& w, const py::object& b, const py::object& grad_obj, const py::object& w_buf,
         const py::object& b_buf, double lr, double momentum, double weight_decay, bool first_step) {
        check_common(lr, momentum, weight_decay, 1, 1.0);
        EpochInputs in;
        py::array w_arr = as_array(w, "weight");
        require_float(w_arr, "weight");
        require_ndim(w_arr, "weight", 2, "[n_outputs, n_features]");
        in.f64 = is_float64(w_arr);
        in.source = in.f64 ? Source::f64 : Source::f32;
        check_params(in, w, b, w_buf, b_buf, momentum, w_arr.dtype(),
                     in.f64 ? "float64 (like weight)" : "float32 (like weight)", w_arr.shape(1));
        py::array g = checked_grad(grad_obj, in, nullptr);
        if (in.w_buf) {
          const auto wb = py::reinterpret_borrow<py::array>(in.w_buf), bb = py::reinterpret_borrow<py::array>(in.b_buf);
          if (may_overlap(g, wb) || may_overlap(g, bb))
            throw py::value_error("grad must not share memory with the momentum buffers");
        }
        const SgdOptions opt{lr, momentum, 0.0, weight_decay, false, false};
        if (in.f64)
          sgd_step_t<double>(in, g, opt, first_step);
        else
          sgd_step_t<float>(in, g, opt, first_step);
      },
      py::arg("weight"), py::arg("bias"), py::arg("grad"), py::arg("weight_buffer"), py::arg("bias_buffer"),
      py::kw_only(), py::arg("lr"), py::arg("momentum"), py::arg("weight_decay"), py::arg("first_step") = false,
      "torch.optim.SGD's update of weight [c, d] and bias [c] from a flat grad [c*d + c] (weight decay on weight "
      "only); momentum buffers as for softmax_epoch.");

  m.def(
      "first_nonfinite_row",
      [](const py::object& x_obj) -> int64_t {
        py::array x = as_array(x_obj, "X");
        require_float(x, "X");
        require_ndim(x, "X", 2, "[n_samples, n_features]");
        require_c_contiguous(x, "X");
        const int64_t n = x.shape(0), d = x.shape(1);
        const void* p = x.data();
        const bool f32 = is_float32(x);
        py::gil_scoped_release release;
        return f32 ? first_nonfinite_row(static_cast<const float*>(p), n, d)
                   : first_nonfinite_row(static_cast<const double*>(p), n, d);
      },
      py::arg("X"), "Index of the first row of X (2-D float) with a NaN or infinity, or -1.");
}

}  // namespace fastreg::bindings
