// Argument checks shared by the bindings. Every check runs while the GIL is held
// and throws the Python exception a NumPy/PyTorch user would expect:
// TypeError for a wrong type or dtype, ValueError for a wrong shape, layout or value.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cmath>
#include <cstdint>
#include <initializer_list>
#include <string>
#include <utility>

#include "reduction.hpp"

namespace fastreg::bindings {

namespace py = pybind11;

inline std::string shape_str(const py::array& a) {
  std::string s = "(";
  for (py::ssize_t i = 0; i < a.ndim(); ++i) {
    if (i) s += ", ";
    s += std::to_string(a.shape(i));
  }
  if (a.ndim() == 1) s += ",";
  return s + ")";
}

// The one ndim rule. With a layout ("[n, in_features]") the message names it.
inline void require_ndim(const py::array& a, const char* name, py::ssize_t ndim, const char* layout = nullptr) {
  if (a.ndim() != ndim)
    throw py::value_error(std::string(name) + " must be " + std::to_string(ndim) +
                          (layout ? std::string("-D ") + layout : std::string("-dimensional")) + ", got shape " +
                          shape_str(a));
}

// Native byte order: the kernels read values as the CPU stores them.
inline bool native_byte_order(const py::dtype& d) {
  constexpr char kNative = __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__ ? '<' : '>';
  const char b = d.byteorder();
  return b == '=' || b == '|' || b == kNative;
}

inline std::string dtype_str(const py::array& a) {
  std::string s = py::str(a.dtype()).cast<std::string>();
  if (!native_byte_order(a.dtype())) s += " (non-native byte order: convert with .astype(a.dtype.newbyteorder('=')))";
  return s;
}

// Dtypes are compared by value, never by object identity: an array that was
// unpickled, came back from multiprocessing or carries metadata has a dtype
// equal to NumPy's float32 but a different object. Same kind and size in native
// byte order is the same type for the kernels (int64 is C long or long long).
inline bool same_dtype(const py::dtype& a, const py::dtype& b) {
  return a.kind() == b.kind() && a.itemsize() == b.itemsize() && native_byte_order(a) && native_byte_order(b) &&
         (a.kind() == 'f' || a.kind() == 'i' || a.kind() == 'u' || a.kind() == 'b');
}

template <class T>
bool has_dtype(const py::array& a) {
  return same_dtype(a.dtype(), py::dtype::of<T>());
}

inline std::string type_name(const py::handle& o) {
  return py::str(py::type::of(o).attr("__name__")).cast<std::string>();
}

// Accepts only a NumPy array (the Python layer converts torch tensors first).
inline py::array as_array(const py::handle& obj, const char* name) {
  if (!py::isinstance<py::array>(obj))
    throw py::type_error(std::string(name) + " must be a numpy.ndarray, got " + type_name(obj));
  return py::reinterpret_borrow<py::array>(obj);
}

inline bool is_float32(const py::array& a) { return has_dtype<float>(a); }
inline bool is_float64(const py::array& a) { return has_dtype<double>(a); }

inline void require_float(const py::array& a, const char* name) {
  if (!is_float32(a) && !is_float64(a))
    throw py::type_error(std::string(name) + " must have dtype float32 or float64, got " + dtype_str(a));
}

inline void require_same_dtype(const py::array& a, const char* an, const py::array& b, const char* bn) {
  if (!same_dtype(a.dtype(), b.dtype()))
    throw py::type_error(std::string(bn) + " must have the same dtype as " + an + " (" + dtype_str(a) + "), got " +
                         dtype_str(b));
}

inline void require_same_shape(const py::array& a, const char* an, const py::array& b, const char* bn) {
  bool same = a.ndim() == b.ndim();
  for (py::ssize_t i = 0; same && i < a.ndim(); ++i) same = a.shape(i) == b.shape(i);
  if (!same)
    throw py::value_error(std::string(bn) + " must have the same shape as " + an + " " + shape_str(a) + ", got " +
                          shape_str(b));
}

inline void require_c_contiguous(const py::array& a, const char* name) {
  if (!(a.flags() & py::array::c_style))
    throw py::value_error(std::string(name) + " must be C-contiguous (use numpy.ascontiguousarray)");
}

inline void require_writeable(const py::array& a, const char* name) {
  if (!a.writeable()) throw py::value_error(std::string(name) + " is read-only; it must be writeable");
}

inline void require_dtype(const py::array& a, const char* name, const py::dtype& dt, const char* what) {
  if (!same_dtype(a.dtype(), dt))
    throw py::type_error(std::string(name) + " must have dtype " + what + ", got " + dtype_str(a));
}

// An array the kernel writes: dtype dt, exactly `shape`, C-contiguous and writeable.
inline py::array checked_out(const py::object& obj, const char* name, const py::dtype& dt, const char* dt_name,
                             std::initializer_list<py::ssize_t> shape) {
  py::array a = as_array(obj, name);
  require_dtype(a, name, dt, dt_name);
  bool ok = a.ndim() == static_cast<py::ssize_t>(shape.size());
  py::ssize_t k = 0;
  for (auto s : shape) ok = ok && a.shape(k++) == s;
  if (!ok) {
    std::string want = "(";
    k = 0;
    for (auto s : shape) want += (k++ ? ", " : "") + std::to_string(s);
    throw py::value_error(std::string(name) + " must have shape " + want + (shape.size() == 1 ? ",)" : ")") + ", got " +
                          shape_str(a));
  }
  require_c_contiguous(a, name);
  require_writeable(a, name);
  return a;
}

// The hyper-parameter rule (lr, momentum, dampening, weight_decay, scale, temperature,
// delta, beta): a finite number >= 0, or > 0 where `positive`. NaN would poison every
// weight and a negative step climbs the loss. Its message is the Python layer's
// (fastreg._checks.hyper_error), torch.optim.SGD's words first:
// "Invalid momentum value: -1.0 (momentum must be a finite number >= 0)".
inline double checked_hyper(double v, const char* name, bool positive = false) {
  if (!std::isfinite(v) || v < 0 || (positive && v == 0)) {
    const std::string words = std::string(name) == "lr" ? "learning rate" : std::string(name) + " value";
    throw py::value_error("Invalid " + words + ": " + py::repr(py::float_(v)).cast<std::string>() + " (" + name +
                          " must be a finite number " + (positive ? "> 0" : ">= 0") + ")");
  }
  return v;
}

// An epoch's learning rate is > 0: an epoch at lr 0 would only spend time.
// (A single optimizer step, like torch.optim.SGD, accepts lr 0: checked_hyper.)
inline double checked_lr(double lr) { return checked_hyper(lr, "lr", true); }

template <class T>
T* data_of(py::array& a) {
  return static_cast<T*>(a.mutable_data());
}
template <class T>
const T* cdata_of(const py::array& a) {
  return static_cast<const T*>(a.data());
}

// True when the byte ranges of two arrays overlap (conservative, like
// numpy.may_share_memory): kernels with restrict pointers must not see that.
inline bool may_overlap(const py::array& a, const py::array& b) {
  if (a.nbytes() == 0 || b.nbytes() == 0) return false;
  auto lo_a = reinterpret_cast<std::uintptr_t>(a.data());
  auto lo_b = reinterpret_cast<std::uintptr_t>(b.data());
  return lo_a < lo_b + static_cast<std::uintptr_t>(b.nbytes()) && lo_b < lo_a + static_cast<std::uintptr_t>(a.nbytes());
}

inline Reduction parse_reduction(const std::string& s) {
  if (s == "mean") return Reduction::mean;
  if (s == "sum") return Reduction::sum;
  if (s == "none") return Reduction::none;
  throw py::value_error("reduction must be 'mean', 'sum' or 'none', got '" + s + "'");
}

inline void require_len(const py::array& a, const char* name, py::ssize_t len, const char* what) {
  if (a.ndim() != 1 || a.shape(0) != len)
    throw py::value_error(std::string(name) + " must have shape (" + std::to_string(len) + ",) (" + what + "), got " +
                          shape_str(a));
}

inline void require_finite(double v, const char* name) {
  if (!std::isfinite(v)) throw py::value_error(std::string(name) + " must be finite, got " + std::to_string(v));
}

// An output: same dtype as `like`, C-contiguous, writeable, not overlapping `inputs`
// (except that `allowed_alias`, if given, may be the very same buffer).
inline py::array check_out(const py::handle& obj, const char* name, const py::array& like,
                           std::initializer_list<std::pair<const py::array*, const char*>> inputs,
                           const py::array* allowed_alias = nullptr) {
  py::array out = as_array(obj, name);
  require_same_dtype(like, "the input", out, name);
  require_c_contiguous(out, name);
  require_writeable(out, name);
  for (const auto& [in, in_name] : inputs) {
    if (in == nullptr || !may_overlap(out, *in)) continue;
    if (in == allowed_alias && out.data() == in->data() && out.nbytes() == in->nbytes()) continue;
    throw py::value_error(std::string(name) + " must not share memory with " + in_name +
                          (in == allowed_alias ? " (other than being exactly the same array)" : ""));
  }
  return out;
}

inline py::array check_float_input(const py::handle& obj, const char* name) {
  py::array a = as_array(obj, name);
  require_float(a, name);
  require_c_contiguous(a, name);
  return a;
}

template <class T>
const T* ptr(const py::array& a) {
  return static_cast<const T*>(a.data());
}
template <class T>
T* mptr(py::array& a) {
  return static_cast<T*>(a.mutable_data());
}

// A list of arrays/tensors (any sequence or iterable is copied into a list; a
// single array is refused rather than iterated over its rows).
inline py::list as_list(const py::handle& seq, const char* name) {
  if (PyList_CheckExact(seq.ptr())) return py::reinterpret_borrow<py::list>(seq);
  if (py::isinstance<py::array>(seq) || (py::hasattr(seq, "data_ptr") && py::hasattr(seq, "dtype")))
    throw py::type_error(std::string(name) + " must be a list of arrays/tensors, not a single array");
  if (!py::isinstance<py::sequence>(seq) && !py::hasattr(seq, "__iter__"))
    throw py::type_error(std::string(name) + " must be a list of arrays/tensors, got " + type_name(seq));
  return py::list(py::reinterpret_borrow<py::object>(seq));
}

}  // namespace fastreg::bindings
