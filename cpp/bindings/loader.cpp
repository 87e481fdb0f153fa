// Bindings for the minibatch loader: BatchIter (the iterator behind
// fastreg.DataLoader, with __next__ in C++; its rules are cpp/batch_iter.hpp's
// BatchSchedule), and gather_rows / random_permutation for direct use and tests.
// Arguments are checked with the GIL held; gathers big enough to matter and waits
// for the prefetcher run with it released.
#include <chrono>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include <pybind11/stl.h>

#include "array_view.hpp"
#include "batch_iter.hpp"
#include "checks.hpp"
#include "loader.hpp"
#include "register.hpp"

namespace fastreg::bindings {

namespace {

bool has_objects(const py::array& a) { return a.dtype().attr("hasobject").cast<bool>(); }

int64_t checked_row_len(const py::array& a, const std::string& name) {
  if (a.ndim() < 1) throw py::value_error(name + " must have at least 1 dimension (rows first), got a 0-d array");
  if (has_objects(a)) throw py::type_error(name + " has dtype " + dtype_str(a) + "; object arrays are not supported");
  require_c_contiguous(a, name.c_str());
  int64_t len = 1;
  for (py::ssize_t d = 1; d < a.ndim(); ++d) len *= a.shape(d);
  return len;
}

py::array as_index_array(const py::handle& obj, const char* name) {
  py::array a = as_array(obj, name);
  if (!has_dtype<int64_t>(a)) throw py::type_error(std::string(name) + " must have dtype int64, got " + dtype_str(a));
  if (a.ndim() != 1) throw py::value_error(std::string(name) + " must be 1-D, got shape " + shape_str(a));
  require_c_contiguous(a, name);
  return a;
}

// Weak references to `a` and every array below it in its .base chain, the one that
// owns the memory included. NumPy refuses to resize (reallocate) an array that has
// a weak reference, even with resize(..., refcheck=False), so while these live the
// memory a gather reads cannot be freed under it: the call raises NumPy's
// ValueError instead of the gather reading freed memory.
void pin_sources(const py::array& a, std::vector<py::weakref>& out) {
  py::handle o = a;
  for (int depth = 0; depth < 64 && py::isinstance<py::array>(o); ++depth) {
    out.emplace_back(o);
    o = ndarray_base(o);
  }
}

// Hands a C++ buffer to NumPy: the array owns it through a capsule that frees it.
// Freeing the array frees the Buffer, which returns the memory to its pool.
py::array wrap_buffer(Buffer buf, const py::dtype& dtype, const std::vector<py::ssize_t>& shape) {
  void* p = buf.get();
  auto* holder = new Buffer(std::move(buf));
  py::capsule owner(holder, [](void* h) { delete static_cast<Buffer*>(h); });
  return py::array(dtype, shape, {}, p, owner);
}

// The Python side of a BatchSchedule (cpp/batch_iter.hpp), which makes every
// decision: this class converts the arrays, makes the batch arrays (views of a
// chunk, or arrays owning a prefetched buffer), calls the Python callbacks (order_fn,
// on_exhaust, to_tensor) when the schedule says so, and releases the GIL around
// gathers and waits.
class BatchIter {
 public:
  BatchIter(const py::list& arrays, const std::vector<bool>& u8_to_f32, const std::vector<double>& scales,
            const py::object& order, py::object order_fn, py::object on_exhaust, py::object to_tensor, bool single,
            const LoaderOptions& options, const LoaderPool* pool)
      : order_fn_(std::move(order_fn)),
        on_exhaust_(std::move(on_exhaust)),
        to_tensor_(std::move(to_tensor)),
        single_(single),
        unbatched_(options.unbatched) {
    const size_t k = py::len(arrays);
    if (k == 0) throw py::value_error("arrays must hold at least one array");
    if (u8_to_f32.size() != k || scales.size() != k)
      throw py::value_error("u8_to_f32 and scales need one entry per array");
    std::vector<LoaderColumn> columns;
    int64_t rows = 0;
    for (size_t i = 0; i < k; ++i) {
      const std::string name = "arrays[" + std::to_string(i) + "]";
      py::array a = as_array(arrays[i], name.c_str());
      LoaderColumn c;
      c.row_len = checked_row_len(a, name);
      c.itemsize = a.itemsize();
      c.src = a.data();
      c.u8_to_f32 = u8_to_f32[i];
      c.scale = static_cast<float>(scales[i]);
      if (i == 0)
        rows = a.shape(0);
      else if (a.shape(0) != rows)
        throw py::value_error(name + " has " + std::to_string(a.shape(0)) + " rows, arrays[0] has " +
                              std::to_string(rows));
      if (c.u8_to_f32 && !has_dtype<uint8_t>(a))
        throw py::type_error(name + ": the float32 conversion takes uint8 input, got " + dtype_str(a));
      std::vector<py::ssize_t> trailing(a.shape() + 1, a.shape() + a.ndim());
      out_dtypes_.push_back(c.u8_to_f32 ? py::dtype::of<float>() : a.dtype());
      dims_.emplace_back(a.shape(), a.shape() + a.ndim());  // dims_[c][0] is set per array made
      trailing_.push_back(std::move(trailing));
      columns.push_back(c);
      pin_sources(a, pins_);             // its memory cannot be reallocated meanwhile
      sources_.push_back(std::move(a));  // keeps the memory the columns point at alive
    }
    schedule_ = std::make_unique<BatchSchedule>(std::move(columns), rows, options, pool);
    if (!order.is_none())
      set_order(order);
    else if (order_fn_.is_none())
      throw py::value_error("either order or order_fn is required");
  }

  // No GIL release here: a destructor may run during interpreter shutdown, and the
  // workers never take the GIL, so joining while holding it cannot deadlock.
  ~BatchIter() {
    if (schedule_) close(/*release_gil=*/false);
  }

  py::object next() {
    if (busy_) throw std::runtime_error("this iterator is already being advanced by another thread");
    BatchSchedule& s = *schedule_;
    if (s.done()) throw py::stop_iteration();
    if (!s.has_order()) set_order(order_fn_());  // drawn at the first next(), as torch's sampler does
    if (s.exhaust_draw_due() && !on_exhaust_.is_none()) on_exhaust_();
    if (s.at_end()) {
      close();
      throw py::stop_iteration();
    }
    const bool prefetched = s.prefetch_next();
    const int64_t rows = s.batch_rows();
    const size_t ncols = s.num_columns();
    // Built first and filled in place: a failure half-way leaks nothing.
    py::object out;
    if (!single_) {  // a list, as torch's default_collate makes of a TensorDataset's tuples
      out = py::reinterpret_steal<py::object>(PyList_New(static_cast<py::ssize_t>(ncols)));
      if (!out) throw py::error_already_set();
    }
    if (prefetched) {
      std::shared_ptr<BatchPipeline> pipe = s.pipeline();  // survives a close() from another thread
      std::vector<Buffer> bufs;
      busy_ = true;
      try {
        py::gil_scoped_release release;
        bufs = pipe->next();
      } catch (const std::logic_error&) {  // closed while waiting
        busy_ = false;
        throw py::stop_iteration();
      } catch (...) {
        busy_ = false;
        throw;
      }
      busy_ = false;
      for (size_t c = 0; c < ncols; ++c)
        put(out, c, wrap_buffer(std::move(bufs[c]), out_dtypes_[c], shape_of(c, rows)));
    } else {
      if (s.chunk_needed()) fill_chunk();
      const int64_t row0 = s.chunk_row();
      for (size_t c = 0; c < ncols; ++c) put(out, c, chunk_view(c, row0, rows));
    }
    s.advance();
    return out;
  }

  // Stops and joins the prefetch threads and frees ready batches; iteration ends.
  void close(bool release_gil = true) {
    chunk_.clear();
    std::shared_ptr<BatchPipeline> pipe = schedule_->close();
    if (pipe && release_gil) {
      py::gil_scoped_release release;  // joining may wait for a gather in progress
      pipe.reset();
    }
  }

  int64_t next_batch() const { return schedule_->next_batch(); }
  py::object end_batch() const {
    return schedule_->has_order() ? py::object(py::int_(schedule_->end_batch())) : py::object(py::none());
  }
  bool prefetching() const { return schedule_->prefetching(); }
  bool done() const { return schedule_->done(); }

 private:
  void set_order(const py::handle& obj) {
    py::array a = as_index_array(obj, "order");
    schedule_->set_order(static_cast<const int64_t*>(a.data()), static_cast<int64_t>(a.size()));
  }

  // Stores column c's batch in the output (converted to a tensor for torch inputs).
  void put(py::object& out, size_t c, py::object batch) {
    if (!to_tensor_.is_none()) batch = to_tensor_(batch);
    if (single_)
      out = std::move(batch);
    else
      PyList_SET_ITEM(out.ptr(), static_cast<py::ssize_t>(c), batch.release().ptr());
  }

  // One fresh array per column holding the batches of the schedule's next chunk,
  // which the batches are then views of. A chunk is never written again once
  // gathered, and lives as long as any of its views.
  void fill_chunk() {
    chunk_.clear();  // frees the previous chunk unless the caller keeps one of its batches
    const ChunkSpan span = schedule_->plan_chunk();
    std::vector<py::array> chunk;
    std::vector<void*> dst;
    for (size_t c = 0; c < out_dtypes_.size(); ++c) {
      dims_[c][0] = static_cast<Py_intptr_t>(span.rows);
      chunk.push_back(new_array(c, nullptr, nullptr));
      dst.push_back(chunk.back().mutable_data());
    }
    if (span.threads) {
      busy_ = true;  // the arrays are local: a close() meanwhile cannot free them
      {
        py::gil_scoped_release release;
        schedule_->gather_chunk(span, dst.data());
      }
      busy_ = false;
      if (schedule_->done()) throw py::stop_iteration();  // closed by another thread meanwhile
    } else {
      schedule_->gather_chunk(span, dst.data());
    }
    chunk_ = std::move(chunk);
    schedule_->chunk_filled(span);
  }

  // Rows [row0, row0 + rows) of column c's chunk, as an array viewing it.
  py::object chunk_view(size_t c, int64_t row0, int64_t rows) {
    py::array& chunk = chunk_[c];
    if (schedule_->batch_is_chunk()) return chunk;  // the chunk is this batch
    auto* data = static_cast<char*>(chunk.mutable_data()) + row0 * schedule_->column(c).out_row_bytes();
    dims_[c][0] = static_cast<Py_intptr_t>(rows);
    return new_array(c, data, chunk.ptr(), unbatched_);
  }

  // An array of column c's output dtype and shape dims_[c]: fresh (data null), or
  // viewing `data`, owned by `base`. The NumPy C API directly: pybind11's array
  // constructor builds shape and stride vectors and checks flags on every call, which
  // costs as much as the rest of a batch-1 batch.
  // drop_rows leaves out the leading (row) dimension: one sample, as torch yields
  // with batch_size=None.
  py::array new_array(size_t c, void* data, PyObject* base, bool drop_rows = false) {
    return new_ndarray(out_dtypes_[c], static_cast<int>(dims_[c].size()) - (drop_rows ? 1 : 0),
                       dims_[c].data() + (drop_rows ? 1 : 0), data, base);
  }

  std::vector<py::ssize_t> shape_of(size_t c, int64_t rows) const {
    std::vector<py::ssize_t> s;
    if (!unbatched_) s.push_back(static_cast<py::ssize_t>(rows));
    s.insert(s.end(), trailing_[c].begin(), trailing_[c].end());
    return s;
  }

  std::vector<py::array> sources_;
  std::vector<py::weakref> pins_;  // see pin_sources
  std::vector<py::dtype> out_dtypes_;
  std::vector<std::vector<py::ssize_t>> trailing_;
  std::vector<std::vector<Py_intptr_t>> dims_;  // each column's output shape (rows first)
  std::vector<py::array> chunk_;                // arrays the current small batches view
  py::object order_fn_, on_exhaust_, to_tensor_;
  bool single_, unbatched_;
  bool busy_ = false;  // inside next() with the GIL released: another thread's next() is refused
  std::unique_ptr<BatchSchedule> schedule_;
};

// The type's tp_iternext slot, installed directly: a `for` loop then calls the C++
// next() without CPython's slot wrapper and pybind11's generic method dispatch, which
// cost about as much as a whole batch-1 gather. Ending returns NULL with no error set
// (StopIteration without creating one); C++ exceptions become the Python exceptions
// pybind11 would raise for them.
PyObject* batch_iter_iternext(PyObject* self) {
  try {
    return py::cast<BatchIter&>(py::handle(self)).next().release().ptr();
  } catch (const py::stop_iteration&) {
    return nullptr;
  } catch (py::error_already_set& e) {
    e.restore();
  } catch (const py::builtin_exception& e) {
    e.set_error();
  } catch (const std::invalid_argument& e) {
    PyErr_SetString(PyExc_ValueError, e.what());
  } catch (const std::out_of_range& e) {
    PyErr_SetString(PyExc_IndexError, e.what());
  } catch (const std::bad_alloc&) {
    PyErr_NoMemory();
  } catch (const std::exception& e) {
    PyErr_SetString(PyExc_RuntimeError, e.what());
  } catch (...) {
    PyErr_SetString(PyExc_RuntimeError, "unknown C++ exception in BatchIter.__next__");
  }
  return nullptr;
}

}  // namespace

void register_loader(py::module_& m) {
  py::class_<BatchIter> batch_iter(m, "BatchIter",
                                   "Iterator over the minibatches of one epoch (used by fastreg.DataLoader).");
  batch_iter
      .def(py::init([](const py::list& arrays, const std::vector<bool>& u8_to_f32, const std::vector<double>& scales,
                       int64_t batch_size, const py::object& order, py::object order_fn, bool drop_last,
                       int64_t first_batch, py::object on_exhaust, py::object to_tensor, bool single, int prefetch,
                       const py::object& pool, int64_t worker_delay_us, bool unbatched) {
             LoaderOptions options;
             options.batch_size = batch_size;
             options.drop_last = drop_last;
             options.first_batch = first_batch;
             options.prefetch = prefetch;
             options.unbatched = unbatched;
             options.worker_delay = std::chrono::microseconds(worker_delay_us);
             const LoaderPool* shared = pool.is_none() ? nullptr : &pool.cast<const LoaderPool&>();
             return std::make_unique<BatchIter>(arrays, u8_to_f32, scales, order, std::move(order_fn),
                                                std::move(on_exhaust), std::move(to_tensor), single, options, shared);
           }),
           py::kw_only(), py::arg("arrays"), py::arg("u8_to_f32"), py::arg("scales"), py::arg("batch_size"),
           py::arg("order") = py::none(), py::arg("order_fn") = py::none(), py::arg("drop_last") = false,
           py::arg("first_batch") = 0, py::arg("on_exhaust") = py::none(), py::arg("to_tensor") = py::none(),
           py::arg("single") = false, py::arg("prefetch") = -1, py::arg("pool") = py::none(),
           py::arg("worker_delay_us") = 0, py::arg("unbatched") = false,
           "Keywords only. order (int64 rows of the arrays) or order_fn (called at the first batch to "
           "draw it); on_exhaust is called when torch's sampler would draw its extra permutation; "
           "prefetch: 1 always, 0 never, -1 by batch size; pool: a LoaderPool lending buffers.")
      .def("__iter__", [](py::object self) { return self; })
      .def("__next__", &BatchIter::next)
      .def(
          "close", [](BatchIter& it) { it.close(); }, "Stop: join the prefetch threads and end the iteration.")
      .def_property_readonly("next_batch", &BatchIter::next_batch, "Index of the next batch to yield.")
      .def_property_readonly("end_batch", &BatchIter::end_batch, "Number of batches (None before the order is drawn).")
      .def_property_readonly("done", &BatchIter::done, "True once exhausted or closed.")
      .def_property_readonly("prefetching", &BatchIter::prefetching, "True while prefetch threads are running.");
  // __next__ stays defined for explicit calls; `for` and next() use the direct slot.
  auto* type = reinterpret_cast<PyTypeObject*>(batch_iter.ptr());
  type->tp_iternext = &batch_iter_iternext;
  PyType_Modified(type);

  py::class_<LoaderPool>(m, "LoaderPool", "Batch buffers a DataLoader's iterators reuse, epoch after epoch.")
      .def(py::init<>());

  m.def(
      "gather_rows",
      [](py::object src_obj, py::object idx_obj, bool to_float32, double scale) {
        py::array src = as_array(src_obj, "src");
        const int64_t row_len = checked_row_len(src, "src");
        py::array idx = as_index_array(idx_obj, "idx");
        const auto* ip = static_cast<const int64_t*>(idx.data());
        const auto n = static_cast<int64_t>(idx.size());
        check_rows(ip, n, src.shape(0), "idx");
        if (to_float32 && !has_dtype<uint8_t>(src))
          throw py::type_error("to_float32 takes a uint8 src, got " + dtype_str(src));
        if (!to_float32 && scale != 1.0) throw py::value_error("scale applies only with to_float32=True");
        std::vector<py::ssize_t> shape(src.shape(), src.shape() + src.ndim());
        shape[0] = static_cast<py::ssize_t>(n);
        py::array out(to_float32 ? py::dtype::of<float>() : src.dtype(), shape);
        const void* s = src.data();
        void* d = out.mutable_data();
        const int64_t row_bytes = row_len * src.itemsize();
        std::vector<py::weakref> pins;  // another thread cannot reallocate src meanwhile
        pin_sources(src, pins);
        py::gil_scoped_release release;
        if (to_float32)
          gather_rows_u8_to_f32(static_cast<const uint8_t*>(s), row_len, ip, n, static_cast<float>(scale),
                                static_cast<float*>(d));
        else
          gather_rows(s, row_bytes, ip, n, d);
        return out;
      },
      py::arg("src"), py::arg("idx"), py::arg("to_float32") = false, py::arg("scale") = 1.0,
      "src[idx] for a C-contiguous src and int64 idx (multi-threaded); with to_float32, "
      "uint8 src converted to float32 * scale.");

  m.def(
      "random_permutation",
      [](int64_t n, uint64_t seed, uint64_t stream) {
        if (n < 0) throw py::value_error("n must be >= 0, got " + std::to_string(n));
        py::array_t<int64_t> out(static_cast<py::ssize_t>(n));
        int64_t* p = out.mutable_data();
        py::gil_scoped_release release;
        random_permutation(seed, stream, n, p);
        return out;
      },
      py::arg("n"), py::arg("seed"), py::arg("stream") = 0,
      "A permutation of range(n) determined by (seed, stream): fastreg's own shuffle RNG.");
}

}  // namespace fastreg::bindings
