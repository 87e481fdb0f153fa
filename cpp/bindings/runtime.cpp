#include <string>

#include "register.hpp"
#include "runtime.hpp"

namespace fastreg::bindings {

namespace py = pybind11;

void register_runtime(py::module_& m) {
  m.def(
      "simd_level", [] { return std::string(simd_name(active_simd())); },
      "SIMD variant the kernels dispatch to: 'avx512', 'avx2' or 'scalar'.");
  m.def("cpu_simd_level", [] { return std::string(simd_name(cpu_simd())); }, "Best SIMD variant this CPU supports.");
  m.def(
      "set_simd_level",
      [](const std::string& level) {
        if (level == "auto") return set_active_simd(cpu_simd());
        Simd s;
        if (simd_from_name(level.c_str(), s)) return set_active_simd(s);
        throw py::value_error("level must be 'auto', 'avx512', 'avx2' or 'scalar', got '" + level + "'");
      },
      py::arg("level"));
  m.def("num_threads", &num_threads);
  m.def("default_num_threads", &default_num_threads);
  m.def("set_num_threads", &set_num_threads, py::arg("n"));
  m.def("pool_workers", &detail::pool_workers,
        "Worker threads the kernels' shared pool has started in this process (they persist; tests).");
  m.def("compiler", [] { return std::string(compiler_info()); });
}

}  // namespace fastreg::bindings
