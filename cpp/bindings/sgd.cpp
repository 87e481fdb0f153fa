// Bindings of the SGD update (fastreg.optim, fastreg.torch's optimizer): sgd_update
// for one C-contiguous array, sgd_update_many for a whole parameter list of
// ndarrays or CPU tensors (read through array_view.hpp). Convert, check, call.
#include <cmath>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "array_view.hpp"
#include "checks.hpp"
#include "register.hpp"
#include "sgd.hpp"

namespace fastreg::bindings {

namespace {

template <class T>
void run_sgd(py::array& param, const py::array& grad, py::object& buffer, const SgdOptions& opt, bool first_step) {
  T* p = static_cast<T*>(param.mutable_data());
  const T* g = static_cast<const T*>(grad.data());
  T* b = buffer.is_none() ? nullptr : static_cast<T*>(py::reinterpret_borrow<py::array>(buffer).mutable_data());
  const int64_t n = static_cast<int64_t>(param.size());
  py::gil_scoped_release release;
  sgd_update<T>(p, g, b, n, opt, first_step);
}

void check_hyper(double v, const char* name) { checked_hyper(v, name); }

}  // namespace

// ---- sgd_update_many: the whole parameter list in one call ----------------
// Everything Python-side (type checks, torch tensor introspection, shape and
// overlap checks, buffer creation) happens first with the GIL held, so a bad
// entry anywhere leaves every parameter untouched; then one GIL release runs
// all the updates. Torch tensors are read through data_ptr() rather than
// .detach().numpy(), which builds two Python objects per tensor and would be
// most of a small model's step.

namespace {

double hyper(const py::handle& v, const char* name) {
  if (PyBool_Check(v.ptr()) || !(PyFloat_Check(v.ptr()) || PyLong_Check(v.ptr()) ||
                                 py::isinstance(v, py::module_::import("numpy").attr("number"))))
    throw py::type_error(std::string(name) + " must be a number, got " + type_name(v));
  return checked_hyper(v.cast<double>(), name);
}

// Hyper-parameters arrive as Python floats almost always: skip the generic path then.
double fast_hyper(const py::handle& v, const char* name) {
  if (PyFloat_CheckExact(v.ptr())) {
    const double x = PyFloat_AS_DOUBLE(v.ptr());
    if (std::isfinite(x) && x >= 0) return x;
  }
  return hyper(v, name);
}

// Below this many elements in all, the update runs without releasing the GIL.
constexpr int64_t kReleaseGilFrom = int64_t{1} << 16;

struct Item {
  ArgView p, g, b;
  bool has_buf = false, first = false;
};

template <class T>
void run_item(const Item& it, const SgdOptions& opt) {
  sgd_update<T>(reinterpret_cast<T*>(it.p.a.data), reinterpret_cast<const T*>(it.g.a.data),
                it.has_buf ? reinterpret_cast<T*>(it.b.a.data) : nullptr, it.p.a.size, opt, it.first);
}

void sgd_update_many(const py::handle& params_obj, const py::handle& grads_obj, const py::handle& bufs_obj,
                     const py::handle& lr_obj, const py::handle& mom_obj, const py::handle& damp_obj,
                     const py::handle& wd_obj, bool nesterov, bool maximize) {
  py::list params = as_list(params_obj, "params"), grads = as_list(grads_obj, "grads");
  const size_t n = params.size();
  if (grads.size() != n)
    throw py::value_error("params and grads must have the same length, got " + std::to_string(n) + " and " +
                          std::to_string(grads.size()));
  const double lr = fast_hyper(lr_obj, "lr"), momentum = fast_hyper(mom_obj, "momentum");
  const double dampening = fast_hyper(damp_obj, "dampening"), weight_decay = fast_hyper(wd_obj, "weight_decay");
  if (nesterov && (momentum <= 0 || dampening != 0))
    throw py::value_error("Nesterov momentum requires a momentum and zero dampening");
  py::list bufs;
  if (momentum != 0) {
    if (bufs_obj.is_none())
      throw py::value_error("momentum_buffers (a list, one entry per parameter) is required when momentum != 0");
    if (!PyList_Check(bufs_obj.ptr()) || static_cast<size_t>(PyList_GET_SIZE(bufs_obj.ptr())) != n)
      throw py::value_error("momentum_buffers must be a list of length " + std::to_string(n) +
                            " (one entry per parameter)");
    bufs = py::reinterpret_borrow<py::list>(bufs_obj);
  }
  const TorchRefs& torch = torch_refs();
  std::vector<Item> items;
  items.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    auto idx = [i] { return "[" + std::to_string(i) + "]"; };  // built only for a message
    if (grads[i].is_none()) continue;                          // as torch: a parameter without a gradient is skipped
    // Built in place (a view copied right after it was written stalls the copy).
    Item it{arg_view(params[i], "params", i, torch), arg_view(grads[i], "grads", i, torch), ArgView{}, false, false};
    if (it.p.a.dt != Dt::f32 && it.p.a.dt != Dt::f64)
      throw py::type_error("params" + idx() + " must be float32 or float64, got " +
                           py::str(it.p.dtype).cast<std::string>());
    if (!it.p.dtype.equal(it.g.dtype))
      throw py::type_error("grads" + idx() + " must have dtype " + py::str(it.p.dtype).cast<std::string>() +
                           " like params" + idx() + ", got " + py::str(it.g.dtype).cast<std::string>());
    if (!it.p.shape.equal(it.g.shape))
      throw py::value_error("grads" + idx() + " must have shape " + py::str(py::tuple(it.p.shape)).cast<std::string>() +
                            " like params" + idx() + ", got " + py::str(py::tuple(it.g.shape)).cast<std::string>());
    if (!it.p.a.writeable) throw py::value_error("params" + idx() + " is read-only; it must be writeable");
    if (it.p.a.overlaps(it.g.a))
      throw py::value_error("params" + idx() + " and grads" + idx() + " must not share memory");
    if (momentum != 0 && !bufs[i].is_none()) {
      it.b = arg_view(bufs[i], "momentum_buffers", i, torch);
      if (!it.p.dtype.equal(it.b.dtype) || !it.p.shape.equal(it.b.shape))
        throw py::value_error("momentum_buffers" + idx() + " must match params" + idx() + " in dtype and shape");
      if (!it.b.a.writeable) throw py::value_error("momentum_buffers" + idx() + " is read-only; it must be writeable");
      if (it.b.a.overlaps(it.p.a) || it.b.a.overlaps(it.g.a))
        throw py::value_error("momentum_buffers" + idx() + " must not share memory with params" + idx() + " or grads" +
                              idx());
      it.has_buf = true;
    }
    items.push_back(std::move(it));
  }
  // All checks passed: now create the first step's buffers (same type as the parameter).
  if (momentum != 0) {
    size_t k = 0;
    for (size_t i = 0; i < n; ++i) {
      if (grads[i].is_none()) continue;
      Item& it = items[k++];
      if (it.has_buf) continue;
      py::object buf = py::isinstance<py::array>(it.p.obj)
                           ? py::module_::import("numpy").attr("empty")(it.p.shape, it.p.dtype)
                           : it.p.obj.attr("new_empty")(it.p.shape);
      bufs[i] = buf;
      it.b = arg_view(buf, "momentum_buffers", i, torch);
      it.has_buf = it.first = true;
    }
  }
  const SgdOptions opt{lr, momentum, dampening, weight_decay, nesterov, maximize};
  auto run_all = [&] {
    for (const Item& it : items) {
      if (it.p.a.dt == Dt::f32)
        run_item<float>(it, opt);
      else
        run_item<double>(it, opt);
    }
  };
  int64_t total = 0;
  for (const Item& it : items) total += it.p.a.size;
  // A small model's whole update is shorter than a GIL release and re-acquire,
  // and if another Python thread takes the GIL meanwhile this step waits for it
  // (up to the interpreter's switch interval). Release it for real work.
  if (total < kReleaseGilFrom) {
    run_all();
  } else {
    py::gil_scoped_release release;
    run_all();
  }
  for (Item& it : items) {  // write non-contiguous parameters/buffers back
    it.p.write_back();
    if (it.has_buf) it.b.write_back();
  }
}

}  // namespace

void register_sgd(py::module_& m) {
  m.def(
      "sgd_update",
      [](py::object param_obj, py::object grad_obj, py::object buffer, double lr, double momentum, double dampening,
         double weight_decay, bool nesterov, bool maximize, bool first_step) {
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
        if (is_float32(param))
          run_sgd<float>(param, grad, buffer, opt, first_step);
        else
          run_sgd<double>(param, grad, buffer, opt, first_step);
      },
      py::arg("param"), py::arg("grad"), py::arg("momentum_buffer"), py::kw_only(), py::arg("lr"),
      py::arg("momentum") = 0.0, py::arg("dampening") = 0.0, py::arg("weight_decay") = 0.0, py::arg("nesterov") = false,
      py::arg("maximize") = false, py::arg("first_step") = false,
      "In-place SGD update of one tensor (torch.optim.SGD equations). Arrays must be C-contiguous.");
  m.def("sgd_update_many", &sgd_update_many, py::arg("params"), py::arg("grads"), py::arg("momentum_buffers"),
        py::arg("lr"), py::arg("momentum"), py::arg("dampening"), py::arg("weight_decay"), py::arg("nesterov"),
        py::arg("maximize"),
        "In-place SGD update of every (param, grad) pair (NumPy arrays or CPU torch tensors) in one call; "
        "see fastreg.optim.sgd_step.");
}

}  // namespace fastreg::bindings
