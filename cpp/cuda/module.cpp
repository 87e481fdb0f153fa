// fastreg._cuda: entry points take raw device pointers (torch's data_ptr()) and a
// stream handle, so fastreg never links against torch.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

#include "cross_entropy.cuh"
#include "cross_entropy_math.hpp"
#include "device_copy.cuh"
#include "sgd.cuh"

namespace py = pybind11;

namespace {

void check(cudaError_t err, const char* what) {
  if (err != cudaSuccess) throw std::runtime_error(std::string(what) + " failed: " + cudaGetErrorString(err));
}

fastreg::cuda::DType dtype_of(int code) {
  if (code < 0 || code > 2) throw py::value_error("dtype code must be 0 (float32), 1 (float16) or 2 (bfloat16)");
  return static_cast<fastreg::cuda::DType>(code);
}

// Makes `device` current for a launch and restores the caller's device after it, so
// torch's (or CuPy's) idea of the current device never changes under it.
class DeviceGuard {
 public:
  explicit DeviceGuard(int device) {
    check(cudaGetDevice(&prev_), "cudaGetDevice");
    if (prev_ != device) check(cudaSetDevice(device), "cudaSetDevice");
  }
  ~DeviceGuard() {
    int cur = -1;
    if (cudaGetDevice(&cur) == cudaSuccess && cur != prev_) cudaSetDevice(prev_);
  }
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int prev_ = 0;
};

// One int64[3] error record per device, allocated on first use and kept: the
// cross-entropy writes the first out-of-range class index there (row, label, C).
std::mutex error_mutex;
std::vector<int64_t*> error_records;

int64_t* error_record(int device, cudaStream_t stream) {
  std::lock_guard<std::mutex> lock(error_mutex);
  if (static_cast<int>(error_records.size()) <= device) error_records.resize(device + 1, nullptr);
  if (error_records[device] == nullptr) {
    cudaStreamCaptureStatus capturing = cudaStreamCaptureStatusNone;
    check(cudaStreamIsCapturing(stream, &capturing), "cudaStreamIsCapturing");
    if (capturing != cudaStreamCaptureStatusNone)
      throw std::runtime_error(
          "fastreg's first CUDA cross-entropy call on a device must run before graph capture "
          "(it allocates the device's error record once); run one warm-up step uncaptured");
    int64_t* rec = nullptr;
    check(cudaMalloc(&rec, 3 * sizeof(int64_t)), "cudaMalloc(error record)");
    check(cudaMemset(rec, 0xff, 3 * sizeof(int64_t)), "cudaMemset(error record)");  // all -1
    error_records[device] = rec;
  }
  return error_records[device];
}

// The kernel's row arithmetic run on the host with the device's order of partial
// sums (lanes strided by `lanes * vec`, then merged as the shuffles merge them), so
// CPU tests check the formulas without a GPU. Returns (row losses, d row / d x, lse).
py::tuple cross_entropy_rows_host(py::array_t<float, py::array::c_style | py::array::forcecast> x,
                                  py::object target_obj, py::object probs_obj, py::object weight_obj,
                                  int64_t ignore_index, float eps, float z, int lanes, int vec) {
  namespace X = fastreg::cuda::xent;
  using L = X::Lse<float>;
  if (x.ndim() != 2) throw py::value_error("x must be 2-D");
  if (lanes < 1 || (lanes & (lanes - 1)) != 0 || lanes > 1024 || vec < 1)
    throw py::value_error("lanes must be a power of two <= 1024 and vec >= 1");
  const int64_t n = x.shape(0), c = x.shape(1);
  py::array_t<int64_t, py::array::c_style | py::array::forcecast> target;
  py::array_t<float, py::array::c_style | py::array::forcecast> probs, weight;
  const bool has_t = !target_obj.is_none(), has_p = !probs_obj.is_none(), has_w = !weight_obj.is_none();
  if (has_t == has_p) throw py::value_error("give exactly one of target and probs");
  if (has_t) target = target_obj.cast<decltype(target)>();
  if (has_p) probs = probs_obj.cast<decltype(probs)>();
  if (has_w) weight = weight_obj.cast<decltype(weight)>();
  if ((has_t && target.size() != n) || (has_p && probs.size() != n * c) || (has_w && weight.size() != c))
    throw py::value_error("target [n], probs [n, c] and weight [c] must match x");
  py::array_t<float> rows(n), lse_out(n), grad({n, c});
  const float* xp = x.data();
  const float* wp = has_w ? weight.data() : nullptr;
  float wsum = 0.f;
  if (has_w) {
    for (int64_t j = 0; j < c; ++j) wsum += wp[j];
  } else {
    wsum = static_cast<float>(c);
  }
  const float cf = static_cast<float>(c);
  auto merge_all = [&](std::vector<L> st) {  // butterfly within warps, then across warps
    auto fly = [](std::vector<L>& v, int width) {
      for (int o = width / 2; o > 0; o /= 2) {
        std::vector<L> nxt(v);
        for (size_t l = 0; l < v.size(); ++l) nxt[l] = X::lse_merge(v[l], v[l ^ o]);
        v = nxt;
      }
    };
    if (lanes <= 32) {
      fly(st, lanes);
      return st[0];
    }
    fly(st, 32);
    std::vector<L> warps(32, X::lse_empty<float>());
    for (int w = 0; w < lanes / 32; ++w) warps[w] = st[w * 32];
    fly(warps, 32);
    return warps[0];
  };
  auto sum_all = [&](std::vector<float> v) {
    auto fly = [](std::vector<float>& a, int width) {
      for (int o = width / 2; o > 0; o /= 2) {
        std::vector<float> nxt(a);
        for (size_t l = 0; l < a.size(); ++l) nxt[l] = a[l] + a[l ^ o];
        a = nxt;
      }
    };
    if (lanes <= 32) {
      fly(v, lanes);
      return v[0];
    }
    fly(v, 32);
    std::vector<float> warps(32, 0.f);
    for (int w = 0; w < lanes / 32; ++w) warps[w] = v[w * 32];
    fly(warps, 32);
    return warps[0];
  };
  for (int64_t i = 0; i < n; ++i) {
    const float* xr = xp + i * c;
    const float* tr = has_p ? probs.data() + i * c : nullptr;
    float* gr = grad.mutable_data() + i * c;
    const int64_t y = has_t ? target.data()[i] : 0;
    if (has_t && y == ignore_index) {
      rows.mutable_data()[i] = 0.f;
      lse_out.mutable_data()[i] = 0.f;
      for (int64_t j = 0; j < c; ++j) gr[j] = 0.f;
      continue;
    }
    if (has_t && (y < 0 || y >= c)) throw py::index_error("target out of range");
    std::vector<L> st(lanes, X::lse_empty<float>());
    std::vector<float> wt(lanes, 0.f), part(lanes, 0.f);
    auto lane_of = [&](int64_t j) { return static_cast<int>((j / vec) % lanes); };
    for (int64_t j = 0; j < c; ++j) {
      X::lse_push(st[lane_of(j)], xr[j]);
      if (has_p) wt[lane_of(j)] += (wp ? wp[j] : 1.f) * X::smooth_target(tr[j], eps, cf);
    }
    const float lse = X::lse_value(merge_all(st));
    const float wt_sum = has_p ? sum_all(wt) : 0.f;
    const float w_y = has_t && wp ? wp[y] : 1.f;
    const auto k = has_p ? X::coef_probs(lse, wt_sum, z) : X::coef_class(lse, w_y, eps, cf, wsum, z);
    for (int64_t j = 0; j < c; ++j) {
      const float wj = wp ? wp[j] : 1.f;
      const float u = has_p ? wj * X::smooth_target(tr[j], eps, cf) : wj;
      gr[j] = X::grad_elem(k, xr[j], lse, has_t && j == y, u);
      part[lane_of(j)] += X::loss_elem(u, xr[j], lse);
    }
    const float ps = sum_all(part);
    rows.mutable_data()[i] = has_p ? X::row_loss_probs(lse, ps, z) : X::row_loss_class(lse, xr[y], w_y, eps, cf, ps, z);
    lse_out.mutable_data()[i] = lse;
  }
  return py::make_tuple(rows, grad, lse_out);
}

}  // namespace

PYBIND11_MODULE(_cuda, m) {
  m.doc() = "fastreg's CUDA kernels (raw device pointers). Use fastreg.cuda instead.";

  // Number of visible devices, and the runtime's reason when there are none.
  m.def("device_count", []() -> py::tuple {
    int n = 0;
    const cudaError_t err = cudaGetDeviceCount(&n);
    if (err != cudaSuccess) {
      cudaGetLastError();  // clear the sticky error so later calls start clean
      return py::make_tuple(0, std::string(cudaGetErrorString(err)));
    }
    return py::make_tuple(n, std::string(n > 0 ? "" : "no CUDA device is visible"));
  });

  m.def("runtime_version", [] {
    int v = 0;
    cudaRuntimeGetVersion(&v);
    return v;
  });

  m.def(
      "device_copy",
      [](std::uintptr_t dst, std::uintptr_t src, std::size_t nbytes, std::uintptr_t stream) {
        if (nbytes != 0 && (dst == 0 || src == 0)) throw py::value_error("null device pointer");
        const auto d = reinterpret_cast<void*>(dst);
        const auto s = reinterpret_cast<const void*>(src);
        py::gil_scoped_release release;
        check(fastreg::cuda::device_copy(d, s, nbytes, reinterpret_cast<cudaStream_t>(stream)), "fastreg device_copy");
      },
      py::arg("dst"), py::arg("src"), py::arg("nbytes"), py::arg("stream") = 0,
      "Copy nbytes between two device buffers on the given stream (raw pointers).");

  m.def(
      "cross_entropy",
      [](int dtype, std::uintptr_t logits, int64_t n, int64_t c, std::uintptr_t target, std::uintptr_t probs,
         std::uintptr_t weight, int64_t ignore_index, double label_smoothing, double lse_square_scale, int reduction,
         std::uintptr_t loss, std::uintptr_t rows, std::uintptr_t stats, std::uintptr_t grad, std::uintptr_t lse_out,
         std::uintptr_t lse_in, std::uintptr_t grad_scale_dev, double grad_scale, int device, std::uintptr_t stream) {
        fastreg::cuda::XentLaunch a;
        a.dtype = dtype_of(dtype);
        if (n < 0 || c < 1)
          throw py::value_error("need n >= 0 and c >= 1, got n=" + std::to_string(n) + ", c=" + std::to_string(c));
        if (reduction < 0 || reduction > 2) throw py::value_error("reduction code must be 0, 1 or 2");
        if ((target == 0) == (probs == 0)) throw py::value_error("give exactly one of target and probs");
        if (!(label_smoothing >= 0.0 && label_smoothing <= 1.0))
          throw py::value_error("label_smoothing must be in [0, 1], got " + std::to_string(label_smoothing));
        if (n > 0 && logits == 0) throw py::value_error("null logits pointer");
        if (stats == 0) throw py::value_error("stats scratch pointer is required");
        if (loss != 0 && reduction != 0 && rows == 0) throw py::value_error("mean/sum need the rows scratch");
        if (lse_in != 0 && loss != 0) throw py::value_error("lse_in computes the gradient only (loss must be 0)");
        a.logits = reinterpret_cast<const void*>(logits);
        a.n = n;
        a.c = c;
        a.target = reinterpret_cast<const int64_t*>(target);
        a.target_probs = reinterpret_cast<const void*>(probs);
        a.weight = reinterpret_cast<const void*>(weight);
        a.ignore_index = ignore_index;
        a.label_smoothing = static_cast<float>(label_smoothing);
        a.lse_square_scale = static_cast<float>(lse_square_scale);
        a.reduction = static_cast<fastreg::cuda::XentReduction>(reduction);
        a.loss = reinterpret_cast<void*>(loss);
        a.rows = reinterpret_cast<float*>(rows);
        a.stats = reinterpret_cast<float*>(stats);
        a.grad = reinterpret_cast<void*>(grad);
        a.lse_out = reinterpret_cast<float*>(lse_out);
        a.lse_in = reinterpret_cast<const float*>(lse_in);
        a.grad_scale_dev = reinterpret_cast<const void*>(grad_scale_dev);
        a.grad_scale = static_cast<float>(grad_scale);
        const auto s = reinterpret_cast<cudaStream_t>(stream);
        py::gil_scoped_release release;
        DeviceGuard guard(device);
        a.error = error_record(device, s);
        check(fastreg::cuda::cross_entropy(a, s), "fastreg cross_entropy launch");
      },
      py::arg("dtype"), py::arg("logits"), py::arg("n"), py::arg("c"), py::arg("target"), py::arg("probs"),
      py::arg("weight"), py::arg("ignore_index"), py::arg("label_smoothing"), py::arg("lse_square_scale"),
      py::arg("reduction"), py::arg("loss"), py::arg("rows"), py::arg("stats"), py::arg("grad"), py::arg("lse_out"),
      py::arg("lse_in"), py::arg("grad_scale_dev"), py::arg("grad_scale"), py::arg("device"), py::arg("stream"),
      "Fused softmax cross-entropy on raw device pointers (see cross_entropy.cuh). Asynchronous.");

  m.def(
      "cross_entropy_scale_grad",
      [](int dtype, std::uintptr_t grad, int64_t n, int64_t c, std::uintptr_t grad_output, bool per_row, int device,
         std::uintptr_t stream) {
        const auto dt = dtype_of(dtype);
        if (n < 0 || c < 1) throw py::value_error("need n >= 0 and c >= 1");
        if (n > 0 && (grad == 0 || grad_output == 0)) throw py::value_error("null device pointer");
        py::gil_scoped_release release;
        DeviceGuard guard(device);
        check(fastreg::cuda::cross_entropy_scale_grad(dt, reinterpret_cast<void*>(grad), n, c,
                                                      reinterpret_cast<const void*>(grad_output), per_row,
                                                      reinterpret_cast<cudaStream_t>(stream)),
              "fastreg cross_entropy_scale_grad launch");
      },
      py::arg("dtype"), py::arg("grad"), py::arg("n"), py::arg("c"), py::arg("grad_output"), py::arg("per_row"),
      py::arg("device"), py::arg("stream"),
      "grad *= grad_output on the device, skipping rows whose scale is exactly 1. Asynchronous.");

  m.def(
      "take_error",
      [](int device) -> py::object {
        int64_t host[3] = {-1, -1, -1};
        {
          py::gil_scoped_release release;
          std::lock_guard<std::mutex> lock(error_mutex);
          if (device < static_cast<int>(error_records.size()) && error_records[device] != nullptr) {
            DeviceGuard guard(device);
            check(cudaMemcpy(host, error_records[device], sizeof host, cudaMemcpyDeviceToHost),
                  "reading the error record");
            check(cudaMemset(error_records[device], 0xff, sizeof host), "clearing the error record");
          }
        }
        if (host[0] < 0) return py::none();
        return py::make_tuple(host[0], host[1], host[2]);
      },
      py::arg("device"),
      "Synchronises the device, returns (row, label, C) of the first out-of-range class index "
      "since the last call (or None), and clears it.");

  m.def(
      "sgd_update",
      [](int dtype, const std::vector<std::uintptr_t>& params, const std::vector<std::uintptr_t>& grads,
         const std::vector<std::uintptr_t>& bufs, const std::vector<int64_t>& sizes,
         const std::vector<unsigned char>& first, double lr, double momentum, double dampening, double weight_decay,
         bool nesterov, bool maximize, int device, std::uintptr_t stream) {
        const size_t k = params.size();
        if (grads.size() != k || sizes.size() != k || (momentum != 0.0 && (bufs.size() != k || first.size() != k)))
          throw py::value_error("params, grads, sizes (and with momentum bufs, first) must have one entry each");
        for (size_t i = 0; i < k; ++i) {
          if (sizes[i] < 0) throw py::value_error("negative size");
          if (sizes[i] > 0 && (params[i] == 0 || grads[i] == 0 || (momentum != 0.0 && bufs[i] == 0)))
            throw py::value_error("null device pointer at entry " + std::to_string(i));
        }
        std::vector<void*> p(k), b(k);
        std::vector<const void*> g(k);
        for (size_t i = 0; i < k; ++i) {
          p[i] = reinterpret_cast<void*>(params[i]);
          g[i] = reinterpret_cast<const void*>(grads[i]);
          b[i] = momentum != 0.0 ? reinterpret_cast<void*>(bufs[i]) : nullptr;
        }
        fastreg::cuda::SgdLaunch a;
        a.dtype = dtype_of(dtype);
        a.count = static_cast<int>(k);
        a.params = p.data();
        a.grads = g.data();
        a.bufs = momentum != 0.0 ? b.data() : nullptr;
        a.sizes = sizes.data();
        a.first = momentum != 0.0 ? first.data() : nullptr;
        a.lr = static_cast<float>(lr);
        a.momentum = static_cast<float>(momentum);
        a.dampening = static_cast<float>(dampening);
        a.weight_decay = static_cast<float>(weight_decay);
        a.nesterov = nesterov;
        a.maximize = maximize;
        py::gil_scoped_release release;
        DeviceGuard guard(device);
        check(fastreg::cuda::sgd_update(a, reinterpret_cast<cudaStream_t>(stream)), "fastreg sgd_update launch");
      },
      py::arg("dtype"), py::arg("params"), py::arg("grads"), py::arg("bufs"), py::arg("sizes"), py::arg("first"),
      py::arg("lr"), py::arg("momentum"), py::arg("dampening"), py::arg("weight_decay"), py::arg("nesterov"),
      py::arg("maximize"), py::arg("device"), py::arg("stream"),
      "torch.optim.SGD's update over tensors of one dtype (raw device pointers). Asynchronous.");

  m.def("cross_entropy_rows_host", &cross_entropy_rows_host, py::arg("x"), py::arg("target"), py::arg("probs"),
        py::arg("weight"), py::arg("ignore_index"), py::arg("label_smoothing"), py::arg("lse_square_scale"),
        py::arg("lanes") = 32, py::arg("vec") = 1,
        "Host run of the CUDA kernel's row arithmetic (float32, the kernel's summation order): "
        "(row losses, d row / d logits, lse). For tests; needs no GPU.");
}
