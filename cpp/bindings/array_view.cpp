// See array_view.hpp. The NumPy scalar maker and the torch tensor reader live here
// (out of line); the ndarray header readers are inline in the header.
#include "array_view.hpp"

#include <string>
#include <type_traits>
#include <utility>

#include "checks.hpp"  // type_name

namespace fastreg::bindings {

// ---- NumPy scalars ----------------------------------------------------------------
// Made straight from a C value with NumPy's PyArray_Scalar: np.float32(x) goes
// through array creation and costs about a tenth of a small batch's whole call.
// pybind11 has no public way to make a NumPy scalar, and its npy_api table does not
// list PyArray_Scalar, so the function is read from NumPy's C-API table by its
// index (60, stable across NumPy 1 and 2: the table is NumPy's ABI). The table and
// the two dtypes are looked up once (kept for the process).
namespace {

struct NumpyScalars {
  using Make = PyObject* (*)(void*, PyObject*, PyObject*);
  Make make = nullptr;
  PyObject* float32 = nullptr;
  PyObject* float64 = nullptr;
};

constexpr int kPyArrayScalarSlot = 60;  // PyArray_Scalar in NumPy's C-API table

NumpyScalars load_numpy_scalars() {
  NumpyScalars s;
  py::module_ multiarray = py::detail::import_numpy_core_submodule("multiarray");
  py::object capsule = multiarray.attr("_ARRAY_API");
  auto** api = static_cast<void**>(PyCapsule_GetPointer(capsule.ptr(), nullptr));
  if (api == nullptr) throw py::error_already_set();
  s.make = reinterpret_cast<NumpyScalars::Make>(api[kPyArrayScalarSlot]);
  auto& npy = py::detail::npy_api::get();
  s.float32 = npy.PyArray_DescrFromType_(py::detail::npy_api::NPY_FLOAT_);
  s.float64 = npy.PyArray_DescrFromType_(py::detail::npy_api::NPY_DOUBLE_);
  if (s.float32 == nullptr || s.float64 == nullptr) throw py::error_already_set();
  return s;
}

}  // namespace

template <class T>
py::object numpy_scalar(double v) {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>);
  static const NumpyScalars scalars = load_numpy_scalars();
  T value = static_cast<T>(v);
  PyObject* o = scalars.make(&value, std::is_same_v<T, float> ? scalars.float32 : scalars.float64, nullptr);
  if (o == nullptr) throw py::error_already_set();
  return py::reinterpret_steal<py::object>(o);
}
template py::object numpy_scalar<float>(double);
template py::object numpy_scalar<double>(double);

// ---- CPU torch tensors ------------------------------------------------------------
namespace {

// Attribute names, interned once for the process's life (no temporary str per lookup).
struct Names {
  PyObject *is_cpu, *dtype, *shape, *is_contiguous, *data_ptr;
};

PyObject* intern(const char* name) {
  PyObject* s = PyUnicode_InternFromString(name);
  if (!s) throw py::error_already_set();
  return s;
}

const Names& names() {
  static const Names n{intern("is_cpu"), intern("dtype"), intern("shape"), intern("is_contiguous"), intern("data_ptr")};
  return n;
}

py::object get_attr(const py::handle& h, PyObject* name) {
  PyObject* v = PyObject_GetAttr(h.ptr(), name);
  if (!v) throw py::error_already_set();
  return py::reinterpret_steal<py::object>(v);
}

py::object get_attr(const py::handle& h, const char* name) { return h.attr(name); }

py::object call_method0(const py::handle& h, PyObject* name) {
  PyObject* v = PyObject_CallMethodNoArgs(h.ptr(), name);
  if (!v) throw py::error_already_set();
  return py::reinterpret_steal<py::object>(v);
}

}  // namespace

// torch's Tensor and Parameter types, dtypes, and the descriptors of the five
// members read per tensor (is_cpu, dtype, shape: C getters; is_contiguous(),
// data_ptr(): C methods), each null if torch defines it some other way.
struct TorchRefs {
  PyObject *tensor_type = nullptr, *parameter_type = nullptr;  // owned for the process's life
  PyObject *f32 = nullptr, *f64 = nullptr, *strided = nullptr;
  PyObject *is_cpu = nullptr, *dtype = nullptr, *shape = nullptr;
  PyObject *is_contiguous = nullptr, *data_ptr = nullptr;
  bool parameter_shares = false;  // Parameter resolves all five to the same descriptors
  bool present = false;
};

namespace {

// The descriptor `name` resolves to on `type` if it has the C descriptor type
// `kind`, else null.
PyObject* c_descriptor(PyObject* type, PyObject* name, PyTypeObject* kind) {
  PyObject* d = PyObject_GetAttr(type, name);  // read on the type, a descriptor returns itself
  if (!d) {
    PyErr_Clear();
    return nullptr;
  }
  if (Py_TYPE(d) != kind) {
    Py_DECREF(d);
    return nullptr;
  }
  return d;
}

}  // namespace

// Looked up once torch has been imported by the caller (fastreg never imports it).
// Held for the life of the process, like the module itself, so no reference is
// dropped during interpreter shutdown.
const TorchRefs& torch_refs() {
  static TorchRefs r;
  if (r.present) return r;
  PyObject* torch = PyDict_GetItemString(PyImport_GetModuleDict(), "torch");  // borrowed
  if (!torch) return r;
  py::handle t(torch);
  r.tensor_type = get_attr(t, "Tensor").release().ptr();
  r.parameter_type = get_attr(get_attr(t, "nn"), "Parameter").release().ptr();
  r.f32 = get_attr(t, "float32").release().ptr();
  r.f64 = get_attr(t, "float64").release().ptr();
  r.strided = get_attr(t, "strided").release().ptr();
  const Names& n = names();
  r.is_cpu = c_descriptor(r.tensor_type, n.is_cpu, &PyGetSetDescr_Type);
  r.dtype = c_descriptor(r.tensor_type, n.dtype, &PyGetSetDescr_Type);
  r.shape = c_descriptor(r.tensor_type, n.shape, &PyGetSetDescr_Type);
  r.is_contiguous = c_descriptor(r.tensor_type, n.is_contiguous, &PyMethodDescr_Type);
  r.data_ptr = c_descriptor(r.tensor_type, n.data_ptr, &PyMethodDescr_Type);
  // Parameter shares them unless a torch version overrides one: then it takes the generic path.
  r.parameter_shares = true;
  const std::pair<PyObject*, PyObject*> members[] = {{n.is_cpu, r.is_cpu},
                                                     {n.dtype, r.dtype},
                                                     {n.shape, r.shape},
                                                     {n.is_contiguous, r.is_contiguous},
                                                     {n.data_ptr, r.data_ptr}};
  for (const auto& [name, descr] : members) {
    PyObject* d = PyObject_GetAttr(r.parameter_type, name);
    if (!d) PyErr_Clear();
    r.parameter_shares = r.parameter_shares && d == descr;
    Py_XDECREF(d);
  }
  r.present = true;
  return r;
}

bool torch_present(const TorchRefs& r) { return r.present; }

bool is_tensor(py::handle h, const TorchRefs& r) {
  return r.present && PyObject_IsInstance(h.ptr(), r.tensor_type) == 1;
}

TensorReader::TensorReader(py::handle t, const TorchRefs& r)
    : t_(t.ptr()),
      r_(r),
      exact_(Py_TYPE(t_) == reinterpret_cast<PyTypeObject*>(r.tensor_type) ||
             (r.parameter_shares && Py_TYPE(t_) == reinterpret_cast<PyTypeObject*>(r.parameter_type))) {}

py::object TensorReader::is_cpu() const { return get(r_.is_cpu, names().is_cpu); }
py::object TensorReader::dtype() const { return get(r_.dtype, names().dtype); }
py::object TensorReader::shape() const { return get(r_.shape, names().shape); }
py::object TensorReader::is_contiguous() const { return call(r_.is_contiguous, names().is_contiguous); }
py::object TensorReader::data_ptr() const { return call(r_.data_ptr, names().data_ptr); }
bool TensorReader::is_f32(const py::object& dtype) const { return dtype.ptr() == r_.f32; }
bool TensorReader::is_f64(const py::object& dtype) const { return dtype.ptr() == r_.f64; }
bool TensorReader::is_strided() const {
  const py::object layout = py::handle(t_).attr("layout");
  return layout.ptr() == r_.strided;
}

py::object TensorReader::get(PyObject* descr, PyObject* name) const {
  if (!exact_ || !descr) return get_attr(t_, name);
  PyObject* v = Py_TYPE(descr)->tp_descr_get(descr, t_, reinterpret_cast<PyObject*>(Py_TYPE(t_)));
  if (!v) throw py::error_already_set();
  return py::reinterpret_steal<py::object>(v);
}

py::object TensorReader::call(PyObject* descr, PyObject* name) const {
  if (!exact_ || !descr) return call_method0(t_, name);
  PyObject* self = t_;
  PyObject* v = PyObject_Vectorcall(descr, &self, 1, nullptr);  // = type(t).name(t)
  if (!v) throw py::error_already_set();
  return py::reinterpret_steal<py::object>(v);
}

void tensor_view(const TensorReader& t, const py::object& dtype, const py::object& shape, ArrayView& v) {
  v.dt = t.is_f32(dtype) ? Dt::f32 : t.is_f64(dtype) ? Dt::f64 : Dt::other;
  v.ndim = static_cast<int>(PyTuple_GET_SIZE(shape.ptr()));
  int64_t n = 1;
  for (Py_ssize_t d = 0; d < v.ndim; ++d) n *= PyLong_AsLongLong(PyTuple_GET_ITEM(shape.ptr(), d));
  v.size = n;
  // data_ptr() includes the storage offset; it raises for tensors without strided storage.
  v.data = reinterpret_cast<char*>(PyLong_AsVoidPtr(t.data_ptr().ptr()));
  if (PyErr_Occurred()) throw py::error_already_set();
  v.c_contiguous = v.writeable = v.native = true;
}

// ---- Array arguments: an ndarray of any layout or a CPU torch tensor ----------------
namespace {

ArgView view_of_ndarray(py::array a, py::object obj) {
  ArgView v;
  v.obj = std::move(obj);
  v.target = a;
  v.dtype = a.dtype();
  v.shape = py::tuple(a.attr("shape"));
  const bool writeable = ndarray_view(a).writeable;
  if (!(a.flags() & py::array::c_style)) {
    // Work on a contiguous copy; it is written back after the update.
    v.work = py::module_::import("numpy").attr("ascontiguousarray")(a);
    a = py::reinterpret_borrow<py::array>(v.work);
  }
  v.a = ndarray_view(a);
  v.a.writeable = writeable;
  return v;
}

std::string label(const char* kind, size_t i) { return std::string(kind) + "[" + std::to_string(i) + "]"; }

}  // namespace

ArgView arg_view(const py::handle& h, const char* kind, size_t i, const TorchRefs& torch) {
  if (py::isinstance<py::array>(h)) {
    py::array a = py::reinterpret_borrow<py::array>(h);
    return view_of_ndarray(a, py::reinterpret_borrow<py::object>(h));
  }
  if (is_tensor(h, torch)) {
    const TensorReader t(h, torch);
    if (!PyObject_IsTrue(t.is_cpu().ptr()))
      throw py::value_error(label(kind, i) + " is on device " + py::str(h.attr("device")).cast<std::string>() +
                            "; this function takes CPU tensors");
    py::object dtype = t.dtype();
    if (!PyObject_IsTrue(t.is_contiguous().ptr())) {  // rare: NumPy's strided view
      if (!t.is_strided())
        throw py::type_error(label(kind, i) + " must be a dense (strided) tensor, got layout " +
                             py::str(h.attr("layout")).cast<std::string>());
      ArgView v = view_of_ndarray(h.attr("detach")().attr("numpy")(), py::reinterpret_borrow<py::object>(h));
      v.dtype = dtype;  // keep torch's names so messages and comparisons match the other tensors
      v.shape = t.shape();
      return v;
    }
    ArgView v;
    v.obj = py::reinterpret_borrow<py::object>(h);
    v.shape = t.shape();  // torch.Size, a tuple subclass
    tensor_view(t, dtype, v.shape, v.a);
    v.dtype = std::move(dtype);
    return v;
  }
  throw py::type_error(label(kind, i) + " must be a numpy.ndarray or a torch.Tensor, got " + type_name(h));
}

void ArgView::write_back() const {
  if (work) target.attr("__setitem__")(py::ellipsis(), work);
}

}  // namespace fastreg::bindings
