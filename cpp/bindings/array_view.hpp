// The one way the bindings read an array argument without going through Python
// attribute access, and the only place that uses pybind11's private API
// (py::detail) or NumPy C-API internals. pybind11's public py::array reads a few
// header fields through Python objects (dtype(), flags()), which on a small call
// costs as much as the kernel; its private npy_api / array_proxy reach the same
// fields directly. Keeping every such use here means a pybind11 upgrade that
// changes them breaks one file.
//
// ArrayView: a pointer, a dtype tag, the element count and shape, and the layout
// flags, built from an ndarray's header in place (ndarray_view: no Python objects)
// or from a CPU torch tensor (tensor_view, reading torch's own C members).
// A view borrows: it is valid while the object it was read from lives.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstddef>
#include <cstdint>
#include <string>

namespace fastreg::bindings {

namespace py = pybind11;

// The element types the kernels take; `other` for everything else, including
// float/int types in non-native byte order.
enum class Dt : uint8_t { f32, f64, i64, other };

inline size_t dt_size(Dt d) { return d == Dt::f32 ? 4 : 8; }

struct ArrayView {
  char* data = nullptr;
  Dt dt = Dt::other;
  int64_t size = 0;  // number of elements
  int ndim = 0;
  const Py_intptr_t* dims = nullptr;  // ndarray views: the array's own shape; tensor views: null
  bool c_contiguous = false, writeable = false;
  bool native = false;  // native byte order

  int64_t dim(int i) const { return static_cast<int64_t>(dims[i]); }
  size_t nbytes() const { return static_cast<size_t>(size) * dt_size(dt); }
  // Byte ranges overlap (conservative, like numpy.may_share_memory).
  bool overlaps(const ArrayView& o) const {
    if (size == 0 || o.size == 0) return false;
    return data < o.data + o.nbytes() && o.data < data + nbytes();
  }
};

// Exactly numpy.ndarray (not a subclass: a subclass may give its data another meaning).
inline bool is_plain_ndarray(py::handle h) { return Py_TYPE(h.ptr()) == py::detail::npy_api::get().PyArray_Type_; }

// The header of an ndarray (h must be one), read in place.
inline ArrayView ndarray_view(py::handle h) {
  using api = py::detail::npy_api;
  const py::detail::PyArray_Proxy* p = py::detail::array_proxy(h.ptr());
  const auto* d = py::detail::array_descriptor_proxy(p->descr);
  constexpr char kNative = __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__ ? '<' : '>';
  ArrayView v;
  v.data = p->data;
  v.ndim = p->nd;
  v.dims = p->dimensions;
  v.size = 1;
  for (int i = 0; i < p->nd; ++i) v.size *= static_cast<int64_t>(p->dimensions[i]);
  v.c_contiguous = (p->flags & api::NPY_ARRAY_C_CONTIGUOUS_) != 0;
  v.writeable = (p->flags & api::NPY_ARRAY_WRITEABLE_) != 0;
  v.native = d->byteorder == '=' || d->byteorder == '|' || d->byteorder == kNative;
  const int t = d->type_num;
  if (v.native) {
    if (t == api::NPY_FLOAT_)
      v.dt = Dt::f32;
    else if (t == api::NPY_DOUBLE_)
      v.dt = Dt::f64;
    else if (t == api::NPY_INT64_ || (t == api::NPY_LONGLONG_ && sizeof(long long) == 8))
      v.dt = Dt::i64;
  }
  return v;
}

// The object an ndarray's .base holds (borrowed; null when it owns its memory).
inline py::handle ndarray_base(py::handle h) { return py::handle(py::detail::array_proxy(h.ptr())->base); }

// An ndarray of `dtype` and shape dims[0, nd): new (data null) or viewing `data`
// (C-contiguous, writeable) and owned by `base` when given. NumPy's C API directly:
// pybind11's array constructor builds shape and stride vectors and checks flags on
// every call, which costs as much as the rest of a small loader batch.
inline py::array new_ndarray(const py::dtype& dtype, int nd, const Py_intptr_t* dims, void* data, PyObject* base) {
  using api = py::detail::npy_api;
  auto& npy = api::get();
  PyObject* descr = dtype.inc_ref().ptr();  // stolen by NewFromDescr
  const int flags = data ? (api::NPY_ARRAY_C_CONTIGUOUS_ | api::NPY_ARRAY_WRITEABLE_) : 0;
  auto arr = py::reinterpret_steal<py::array>(npy.PyArray_NewFromDescr_(
      npy.PyArray_Type_, descr, nd, const_cast<Py_intptr_t*>(dims), nullptr, data, flags, nullptr));
  if (!arr) throw py::error_already_set();
  if (base) {
    Py_INCREF(base);  // stolen by SetBaseObject, even when it fails
    if (npy.PyArray_SetBaseObject_(arr.ptr(), base) != 0) throw py::error_already_set();
  }
  return arr;
}

// v as a NumPy scalar of dtype T (float or double), rounded as np.float32(v) rounds.
template <class T>
py::object numpy_scalar(double v);

// ---- CPU torch tensors ---------------------------------------------------------------

// torch's Tensor type and the C members read per tensor, looked up once torch has
// been imported by the caller (fastreg never imports it). `present` is false
// until then.
struct TorchRefs;
const TorchRefs& torch_refs();
bool torch_present(const TorchRefs& r);
// isinstance(h, torch.Tensor), false when torch is not imported.
bool is_tensor(py::handle h, const TorchRefs& r);

// Reads a tensor's members. When the object's exact type is torch.Tensor or
// torch.nn.Parameter (checked once to add none of these members), it calls torch's
// C descriptors directly: the very functions `t.shape` and `t.data_ptr()` end in,
// minus the lookup through the type's MRO and the instance __dict__ (about a
// quarter of a small model's optimizer step). Any other type (a subclass may
// override a member) goes through normal attribute access.
class TensorReader {
 public:
  TensorReader(py::handle t, const TorchRefs& r);
  py::object is_cpu() const;
  py::object dtype() const;
  py::object shape() const;  // torch.Size, a tuple subclass
  py::object is_contiguous() const;
  py::object data_ptr() const;
  bool is_f32(const py::object& dtype) const;
  bool is_f64(const py::object& dtype) const;
  bool is_strided() const;  // t.layout is torch.strided

 private:
  py::object get(PyObject* descr, PyObject* name) const;
  py::object call(PyObject* descr, PyObject* name) const;
  PyObject* t_;
  const TorchRefs& r_;
  bool exact_;
};

// Fills `v` with a contiguous CPU tensor's view (the caller checked is_cpu() and
// is_contiguous()); `dtype` and `shape` are what t.dtype() and t.shape() returned.
// Written in place: a view copied right after its fields were stored stalls the
// copy's wide loads.
void tensor_view(const TensorReader& t, const py::object& dtype, const py::object& shape, ArrayView& v);

// ---- Array arguments: an ndarray of any layout or a CPU torch tensor ----------------

// One array argument of a call that takes NumPy arrays or CPU torch tensors
// (sgd_update_many): the view the kernel reads, and the Python objects kept for
// messages, comparisons and the write-back of a non-contiguous array.
struct ArgView {
  ArrayView a;
  py::object obj;     // what the caller passed
  py::object work;    // contiguous ndarray the kernel updates when obj is not contiguous (else null)
  py::object target;  // where `work` is written back: obj, or NumPy's view of a tensor
  py::object dtype;   // numpy or torch dtype, for messages and comparisons
  py::object shape;   // tuple-like, compared with ==
  // Copies `work` back into `target` (after an in-place update); nothing for a contiguous argument.
  void write_back() const;
};

// h, the i-th entry of the list argument `kind` (named so in messages): a
// numpy.ndarray or a CPU torch tensor, else TypeError / ValueError. Tensors are read
// through TensorReader (no .detach().numpy() for contiguous ones).
ArgView arg_view(const py::handle& h, const char* kind, size_t i, const TorchRefs& torch);

}  // namespace fastreg::bindings
