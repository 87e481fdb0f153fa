// Bindings for the linear layer (fastreg.linear): its forward and backward
// passes and the BLAS table they run on. Arguments are checked with the GIL
// held; the kernels then run with it released.
#include <Python.h>

#include <string>

#include "blas.hpp"
#include "checks.hpp"
#include "linear.hpp"
#include "register.hpp"

namespace fastreg::bindings {

namespace {

void* capsule_pointer(const py::object& obj, const char* name) {
  if (!PyCapsule_CheckExact(obj.ptr()))
    throw py::type_error(std::string(name) + " must be a PyCapsule (scipy.linalg.cython_blas.__pyx_capi__)");
  void* p = PyCapsule_GetPointer(obj.ptr(), PyCapsule_GetName(obj.ptr()));
  if (!p) throw py::error_already_set();
  return p;
}

// Shared checks for x [n, in] and weight [out, in] (and bias [out] if given).
void check_linear_inputs(const py::array& x, const py::array& w, const py::object& bias) {
  require_float(x, "input");
  require_same_dtype(x, "input", w, "weight");
  require_ndim(x, "input", 2, "[n, in_features]");
  require_ndim(w, "weight", 2, "[out_features, in_features]");
  if (w.shape(1) != x.shape(1))
    throw py::value_error("weight must have in_features = input.shape[1] = " + std::to_string(x.shape(1)) +
                          " columns, got weight of shape " + shape_str(w));
  require_c_contiguous(x, "input");
  require_c_contiguous(w, "weight");
  if (!bias.is_none()) {
    py::array b = as_array(bias, "bias");
    require_same_dtype(x, "input", b, "bias");
    if (b.ndim() != 1 || b.shape(0) != w.shape(0))
      throw py::value_error("bias must have shape (" + std::to_string(w.shape(0)) + ",) = (out_features,), got " +
                            shape_str(b));
    require_c_contiguous(b, "bias");
  }
}

template <class T>
py::array linear_forward_t(const py::array& x, const py::array& w, const py::object& bias) {
  const int64_t n = x.shape(0), in = x.shape(1), out = w.shape(0);
  py::array_t<T> y({static_cast<py::ssize_t>(n), static_cast<py::ssize_t>(out)});
  const T* bp = bias.is_none() ? nullptr : cdata_of<T>(py::reinterpret_borrow<py::array>(bias));
  const T* xp = cdata_of<T>(x);
  const T* wp = cdata_of<T>(w);
  T* yp = y.mutable_data();
  {
    py::gil_scoped_release release;
    linear_forward<T>(xp, wp, bp, n, in, out, yp);
  }
  return std::move(y);
}

template <class T>
py::tuple linear_backward_t(const py::array& x, const py::array& w, const py::array& gy, bool need_bias,
                            bool need_input) {
  const int64_t n = x.shape(0), in = x.shape(1), out = w.shape(0);
  py::array_t<T> gw({static_cast<py::ssize_t>(out), static_cast<py::ssize_t>(in)});
  py::object gb = py::none(), gx = py::none();
  T *gbp = nullptr, *gxp = nullptr;
  if (need_bias) {
    py::array_t<T> a(static_cast<py::ssize_t>(out));
    gbp = a.mutable_data();
    gb = std::move(a);
  }
  if (need_input) {
    py::array_t<T> a({static_cast<py::ssize_t>(n), static_cast<py::ssize_t>(in)});
    gxp = a.mutable_data();
    gx = std::move(a);
  }
  const T *xp = cdata_of<T>(x), *wp = cdata_of<T>(w), *gyp = cdata_of<T>(gy);
  T* gwp = gw.mutable_data();
  {
    py::gil_scoped_release release;
    linear_backward<T>(xp, wp, gyp, n, in, out, gwp, gbp, gxp, false);
  }
  return py::make_tuple(std::move(gw), gb, gx);
}

}  // namespace

void register_linear(py::module_& m) {
  m.def(
      "set_blas",
      [](const py::object& sgemm, const py::object& dgemm, const py::object& sgemv, const py::object& dgemv) {
        BlasTable t;
        t.sgemm = reinterpret_cast<sgemm_fn>(capsule_pointer(sgemm, "sgemm"));
        t.dgemm = reinterpret_cast<dgemm_fn>(capsule_pointer(dgemm, "dgemm"));
        t.sgemv = reinterpret_cast<sgemv_fn>(capsule_pointer(sgemv, "sgemv"));
        t.dgemv = reinterpret_cast<dgemv_fn>(capsule_pointer(dgemv, "dgemv"));
        set_blas(t);
      },
      py::arg("sgemm"), py::arg("dgemm"), py::arg("sgemv"), py::arg("dgemv"),
      "Install the Fortran BLAS entry points (capsules from scipy.linalg.cython_blas.__pyx_capi__).");
  m.def("blas_ready", &blas_ready);
  m.def("blas_thread_control", [] { return std::string(blas_thread_control()); });

  m.def(
      "linear_forward",
      [](const py::object& x_obj, const py::object& w_obj, const py::object& bias) -> py::array {
        py::array x = as_array(x_obj, "input"), w = as_array(w_obj, "weight");
        check_linear_inputs(x, w, bias);
        return is_float32(x) ? linear_forward_t<float>(x, w, bias) : linear_forward_t<double>(x, w, bias);
      },
      py::arg("input"), py::arg("weight"), py::arg("bias"),
      "y[n, out] = input[n, in] @ weight[out, in]^T + bias[out] (C-contiguous float arrays).");

  m.def(
      "linear_backward",
      [](const py::object& x_obj, const py::object& w_obj, const py::object& gy_obj, bool need_bias,
         bool need_input) -> py::tuple {
        py::array x = as_array(x_obj, "input"), w = as_array(w_obj, "weight");
        check_linear_inputs(x, w, py::none());
        py::array gy = as_array(gy_obj, "grad_output");
        require_same_dtype(x, "input", gy, "grad_output");
        if (gy.ndim() != 2 || gy.shape(0) != x.shape(0) || gy.shape(1) != w.shape(0))
          throw py::value_error("grad_output must have shape (" + std::to_string(x.shape(0)) + ", " +
                                std::to_string(w.shape(0)) + ") = (n, out_features), got " + shape_str(gy));
        require_c_contiguous(gy, "grad_output");
        return is_float32(x) ? linear_backward_t<float>(x, w, gy, need_bias, need_input)
                             : linear_backward_t<double>(x, w, gy, need_bias, need_input);
      },
      py::arg("input"), py::arg("weight"), py::arg("grad_output"), py::arg("need_bias"), py::arg("need_input"),
      "(grad_weight[out, in], grad_bias[out] or None, grad_input[n, in] or None).");
}

}  // namespace fastreg::bindings
