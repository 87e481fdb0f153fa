// Bindings for the minibatch loader: BatchIter (the iterator behind
// fastreg.DataLoader, with __next__ in C++), and gather_rows / random_permutation
// for direct use and tests. Arguments are checked with the GIL held; gathers big
// enough to matter and waits for the prefetcher run with it released.
#include <algorithm>
#include <chrono>
#include <limits>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include <unistd.h>

#include <pybind11/stl.h>

#include "array_view.hpp"
#include "checks.hpp"
#include "loader.hpp"
#include "register.hpp"
#include "runtime.hpp"

namespace fastreg::bindings {

namespace {

// Below this many bytes a gather takes well under a microsecond of copying, less
// than releasing and re-taking the GIL or handing a batch between threads.
constexpr int64_t kReleaseGilBytes = int64_t{1} << 16;
// Small batches are gathered about this many bytes at a time (all columns): enough
// to make the per-chunk costs (arrays, a GIL release) negligible per batch, small
// enough to stay in L2 until the caller reads it.
constexpr int64_t kChunkBytes = int64_t{128} << 10;
// Prefetching keeps at most this many bytes of batches ready ahead of the consumer.
constexpr int64_t kPrefetchBytes = int64_t{64} << 20;

bool has_objects(const py::array& a) { return a.dtype().attr("hasobject").cast<bool>(); }

int64_t checked_row_len(const py::array& a, const std::string& name) {
  if (a.ndim() < 1) throw py::value_error(name + " must have at least 1 dimension (rows first), got a 0-d array");
  if (has_objects(a)) throw py::type_error(name + " has dtype " + dtype_str(a) + "; object arrays are not supported");
  require_c_contiguous(a, name.c_str());
  int64_t len = 1;
  for (py::ssize_t d = 1; d < a.ndim(); ++d) len *= a.shape(d);
  return len;
}

// Checks every index is a valid row: the kernels trust their indices.
void check_indices(const int64_t* idx, int64_t n, int64_t rows, const char* name) {
  for (int64_t i = 0; i < n; ++i)
    if (idx[i] < 0 || idx[i] >= rows)
      throw py::index_error(std::string(name) + "[" + std::to_string(i) + "] = " + std::to_string(idx[i]) +
                            " is out of range for " + std::to_string(rows) + " rows");
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

// The batch buffers a DataLoader's iterators share, one epoch after another.
// Remembers its process: after fork() its mutex may have been copied locked, so a
// child leaves it alone.
struct LoaderPool {
  std::shared_ptr<BufferPool> pool = std::make_shared<BufferPool>(0);
  pid_t pid = getpid();
  ~LoaderPool() {
    if (pid != getpid()) new std::shared_ptr<BufferPool>(std::move(pool));  // a child's copy: never freed
  }
};

class BatchIter {
 public:
  BatchIter(const py::list& arrays, const std::vector<bool>& u8_to_f32, const std::vector<double>& scales,
            py::object order, py::object order_fn, int64_t batch_size, bool drop_last, int64_t first_batch,
            py::object on_exhaust, py::object to_tensor, bool single, int prefetch, py::object pool,
            int64_t worker_delay_us, bool unbatched)
      : order_fn_(std::move(order_fn)),
        on_exhaust_(std::move(on_exhaust)),
        to_tensor_(std::move(to_tensor)),
        batch_size_(batch_size),
        drop_last_(drop_last),
        next_batch_(first_batch),
        single_(single),
        unbatched_(unbatched),
        prefetch_(prefetch),
        worker_delay_(worker_delay_us) {
    const size_t k = py::len(arrays);
    if (k == 0) throw py::value_error("arrays must hold at least one array");
    if (u8_to_f32.size() != k || scales.size() != k)
      throw py::value_error("u8_to_f32 and scales need one entry per array");
    if (batch_size <= 0)
      throw py::value_error("batch_size must be a positive integer, got " + std::to_string(batch_size));
    if (prefetch < -1 || prefetch > 1) throw py::value_error("prefetch must be -1 (auto), 0 or 1");
    if (worker_delay_us < 0) throw py::value_error("worker_delay_us must be >= 0");
    if (unbatched && batch_size != 1) throw py::value_error("unbatched takes batch_size 1");
    if (!pool.is_none()) {
      const auto& shared = pool.cast<const LoaderPool&>();
      if (shared.pid == getpid()) {
        pool_ = shared.pool;
        pool_pid_ = shared.pid;
      }
    }
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
        rows_ = a.shape(0);
      else if (a.shape(0) != rows_)
        throw py::value_error(name + " has " + std::to_string(a.shape(0)) + " rows, arrays[0] has " +
                              std::to_string(rows_));
      if (c.u8_to_f32 && !has_dtype<uint8_t>(a))
        throw py::type_error(name + ": the float32 conversion takes uint8 input, got " + dtype_str(a));
      std::vector<py::ssize_t> trailing(a.shape() + 1, a.shape() + a.ndim());
      out_dtypes_.push_back(c.u8_to_f32 ? py::dtype::of<float>() : a.dtype());
      dims_.emplace_back(a.shape(), a.shape() + a.ndim());  // dims_[c][0] is set per array made
      trailing_.push_back(std::move(trailing));
      columns_.push_back(c);
      pin_sources(a, pins_);             // its memory cannot be reallocated meanwhile
      sources_.push_back(std::move(a));  // keeps the memory the columns point at alive
    }
    if (!order.is_none())
      set_order(order);
    else if (order_fn_.is_none())
      throw py::value_error("either order or order_fn is required");
    if (first_batch < 0) throw py::value_error("first_batch must be >= 0");
    if (order_ && first_batch > end_batch_)
      throw py::value_error("first_batch " + std::to_string(first_batch) + " is past the last batch (" +
                            std::to_string(end_batch_) + " batches)");
  }

  // No GIL release here: a destructor may run during interpreter shutdown, and the
  // workers never take the GIL, so joining while holding it cannot deadlock.
  ~BatchIter() { close(/*release_gil=*/false); }

  py::object next() {
    if (busy_) throw std::runtime_error("this iterator is already being advanced by another thread");
    if (done_) throw py::stop_iteration();
    if (!order_) {  // the order is drawn at the first next(), as torch's sampler does
      py::object o = order_fn_();
      set_order(o);
      if (next_batch_ > end_batch_) throw py::value_error("first_batch is past the last batch");
    }
    const int64_t k = next_batch_;
    const int64_t total = static_cast<int64_t>(order_->size());
    // torch's sampler draws (and discards) one more permutation as soon as a batch
    // asks for an index past the end; on_exhaust reproduces that draw at the same point.
    if (!exhaust_called_ && (k + 1) * batch_size_ > total) {
      exhaust_called_ = true;
      if (!on_exhaust_.is_none()) on_exhaust_();
    }
    if (k >= end_batch_) {
      close();
      throw py::stop_iteration();
    }
    if (pipeline_ && pipeline_pid_ != getpid()) abandon_inherited_pipeline();
    const int64_t rows = std::min(batch_size_, total - k * batch_size_);
    const size_t ncols = columns_.size();
    // Built first and filled in place: a failure half-way leaks nothing.
    py::object out;
    if (!single_) {  // a list, as torch's default_collate makes of a TensorDataset's tuples
      out = py::reinterpret_steal<py::object>(PyList_New(static_cast<py::ssize_t>(ncols)));
      if (!out) throw py::error_already_set();
    }
    if (use_pipeline()) {
      if (!pipeline_) start_pipeline();
      std::shared_ptr<BatchPipeline> pipe = pipeline_;  // survives a close() from another thread
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
      if (k >= chunk_end_) fill_chunk(k, total);
      const int64_t row0 = (k - chunk_first_) * batch_size_;
      for (size_t c = 0; c < ncols; ++c) put(out, c, chunk_view(c, row0, rows));
    }
    ++next_batch_;
    return out;
  }

  // Stops and joins the prefetch threads and frees ready batches; iteration ends.
  void close(bool release_gil = true) {
    done_ = true;
    chunk_.clear();
    chunk_end_ = 0;
    if (!pipeline_) return;
    if (pipeline_pid_ != getpid()) return abandon_inherited_pipeline();
    pipeline_->stop();
    std::shared_ptr<BatchPipeline> pipe = std::move(pipeline_);
    if (release_gil) {
      py::gil_scoped_release release;  // joining may wait for a gather in progress
      pipe.reset();
    }
  }

  int64_t next_batch() const { return next_batch_; }
  py::object end_batch() const { return order_ ? py::object(py::int_(end_batch_)) : py::object(py::none()); }
  bool prefetching() const { return static_cast<bool>(pipeline_); }
  bool done() const { return done_; }

 private:
  void set_order(const py::handle& obj) {
    py::array a = as_index_array(obj, "order");
    const auto* idx = static_cast<const int64_t*>(a.data());
    const auto n = static_cast<int64_t>(a.size());
    check_indices(idx, n, rows_, "order");
    order_ = std::make_shared<const std::vector<int64_t>>(idx, idx + n);
    end_batch_ = drop_last_ ? n / batch_size_ : (n + batch_size_ - 1) / batch_size_;
    batch_row_bytes_ = 0;
    for (const auto& c : columns_) batch_row_bytes_ += c.out_row_bytes();
  }

  // Stores column c's batch in the output (converted to a tensor for torch inputs).
  void put(py::object& out, size_t c, py::object batch) {
    if (!to_tensor_.is_none()) batch = to_tensor_(batch);
    if (single_)
      out = std::move(batch);
    else
      PyList_SET_ITEM(out.ptr(), static_cast<py::ssize_t>(c), batch.release().ptr());
  }

  // Small batches are gathered a chunk at a time: one fresh array per column holding
  // the next batches (~kChunkBytes), which the batches are then views of. Per batch
  // this leaves two array headers to make (no allocation, no thread hand-off); a
  // chunk is never written again once gathered, and lives as long as any of its views.
  void fill_chunk(int64_t k, int64_t total) {
    chunk_.clear();  // frees the previous chunk unless the caller keeps one of its batches
    const int64_t per_batch = std::max<int64_t>(batch_size_ * batch_row_bytes_, 1);
    const int64_t batches = std::clamp<int64_t>(kChunkBytes / per_batch, 1, end_batch_ - k);
    const int64_t first_row = k * batch_size_;
    const int64_t rows = std::min(total, (k + batches) * batch_size_) - first_row;
    std::vector<py::array> chunk;
    std::vector<void*> dst;
    for (size_t c = 0; c < columns_.size(); ++c) {
      dims_[c][0] = static_cast<Py_intptr_t>(rows);
      chunk.push_back(new_array(c, nullptr, nullptr));
      dst.push_back(chunk.back().mutable_data());
    }
    const int64_t* idx = order_->data() + first_row;
    if (rows * batch_row_bytes_ >= kReleaseGilBytes) {
      busy_ = true;  // the arrays are local: a close() meanwhile cannot free them
      {
        py::gil_scoped_release release;
        for (size_t c = 0; c < columns_.size(); ++c) columns_[c].gather(idx, rows, dst[c], true);
      }
      busy_ = false;
      if (done_) throw py::stop_iteration();  // closed by another thread meanwhile
    } else {
      for (size_t c = 0; c < columns_.size(); ++c) columns_[c].gather(idx, rows, dst[c], false);
    }
    chunk_ = std::move(chunk);
    chunk_first_ = k;
    chunk_end_ = k + batches;
  }

  // Rows [row0, row0 + rows) of column c's chunk, as an array viewing it.
  py::object chunk_view(size_t c, int64_t row0, int64_t rows) {
    py::array& chunk = chunk_[c];
    if (row0 == 0 && chunk_end_ - chunk_first_ == 1 && !unbatched_) return chunk;  // the chunk is this batch
    auto* data = static_cast<char*>(chunk.mutable_data()) + row0 * columns_[c].out_row_bytes();
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

  // Prefetch pays for a thread hand-off per batch: worth it for batches of 64 KiB
  // and more, or when asked for.
  bool use_pipeline() const {
    if (prefetch_ == 0) return false;
    if (prefetch_ == 1) return true;
    return batch_size_ * batch_row_bytes_ >= kReleaseGilBytes && end_batch_ - next_batch_ > 1;
  }

  void start_pipeline() {
    if (pool_ && pool_pid_ != getpid())  // inherited through fork(): see LoaderPool
      new std::shared_ptr<BufferPool>(std::move(pool_));
    const int workers = std::clamp(num_threads() - 1, 1, 4);
    const int64_t batch_bytes = std::max<int64_t>(batch_size_ * batch_row_bytes_, 1);
    const int depth = static_cast<int>(std::clamp<int64_t>(kPrefetchBytes / batch_bytes, 1, 2 * (workers + 1)));
    pipeline_ = std::make_shared<BatchPipeline>(columns_, order_, batch_size_, next_batch_, end_batch_, workers, depth,
                                                pool_, worker_delay_);
    pipeline_pid_ = getpid();
  }

  // After fork() the child holds a copy of the parent's pipeline but none of its
  // threads: joining them throws (std::terminate in a destructor), and its mutex may
  // have been copied while a worker held it. Such a pipeline is leaked on purpose
  // (at most `depth` batches, in the child only); next() then starts a fresh one
  // from next_batch_, so the iteration goes on correctly in the child.
  void abandon_inherited_pipeline() {
    new std::shared_ptr<BatchPipeline>(std::move(pipeline_));  // intentionally never freed
  }

  std::vector<py::array> sources_;
  std::vector<py::weakref> pins_;  // see pin_sources
  std::vector<LoaderColumn> columns_;
  std::vector<py::dtype> out_dtypes_;
  std::vector<std::vector<py::ssize_t>> trailing_;
  std::vector<std::vector<Py_intptr_t>> dims_;  // each column's output shape (rows first)
  std::vector<py::array> chunk_;                // arrays the current small batches view
  int64_t chunk_first_ = 0, chunk_end_ = 0;     // batches [first, end) live in chunk_
  std::shared_ptr<const std::vector<int64_t>> order_;
  py::object order_fn_, on_exhaust_, to_tensor_;
  int64_t rows_ = 0, batch_size_, end_batch_ = 0, batch_row_bytes_ = 0;
  bool drop_last_;
  int64_t next_batch_;
  bool single_, unbatched_;
  int prefetch_;
  std::chrono::microseconds worker_delay_;  // tests only: see BatchPipeline
  bool done_ = false, busy_ = false, exhaust_called_ = false;
  std::shared_ptr<BatchPipeline> pipeline_;
  std::shared_ptr<BufferPool> pool_;  // shared with the loader's other iterators, or null
  pid_t pool_pid_ = 0;
  pid_t pipeline_pid_ = 0;  // process that started pipeline_ (its threads live only there)
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
      .def(py::init<const py::list&, const std::vector<bool>&, const std::vector<double>&, py::object, py::object,
                    int64_t, bool, int64_t, py::object, py::object, bool, int, py::object, int64_t, bool>(),
           py::arg("arrays"), py::arg("u8_to_f32"), py::arg("scales"), py::arg("order"), py::arg("order_fn"),
           py::arg("batch_size"), py::arg("drop_last"), py::arg("first_batch"), py::arg("on_exhaust"),
           py::arg("to_tensor"), py::arg("single"), py::arg("prefetch"), py::arg("pool") = py::none(),
           py::arg("worker_delay_us") = 0, py::arg("unbatched") = false)
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
        check_indices(ip, n, src.shape(0), "idx");
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
