// fastreg._cuda: entry points take raw device pointers (torch's data_ptr()) and a
// stream handle, so fastreg never links against torch.
#include <pybind11/pybind11.h>

#include <cstdint>
#include <stdexcept>
#include <string>

#include "device_copy.cuh"

namespace py = pybind11;

namespace {

void check(cudaError_t err, const char* what) {
  if (err != cudaSuccess)
    throw std::runtime_error(std::string(what) + " failed: " + cudaGetErrorString(err));
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
        check(fastreg::cuda::device_copy(d, s, nbytes, reinterpret_cast<cudaStream_t>(stream)),
              "fastreg device_copy");
      },
      py::arg("dst"), py::arg("src"), py::arg("nbytes"), py::arg("stream") = 0,
      "Copy nbytes between two device buffers on the given stream (raw pointers).");
}
