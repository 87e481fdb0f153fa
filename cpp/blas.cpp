#include "blas.hpp"

#include <dlfcn.h>

#include <algorithm>
#include <atomic>
#include <initializer_list>
#include <limits>
#include <stdexcept>
#include <string>
#include <type_traits>

namespace fastreg {
namespace {

// Set once from Python at import; read by every kernel thread afterwards.
std::atomic<const BlasTable*> g_table{nullptr};
BlasTable g_storage;

// OpenBLAS thread controls found next to sgemm (null when absent).
using set_local_fn = int (*)(int);
using set_global_fn = void (*)(int);
using get_fn = int (*)();
set_local_fn g_set_local = nullptr;
set_global_fn g_set_global = nullptr;
get_fn g_get = nullptr;

void* find_symbol(void* lib, std::initializer_list<const char*> names) {
  for (const char* name : names)
    if (void* p = dlsym(lib, name)) return p;
  return nullptr;
}

// dladdr names the library that holds sgemm; the setters are looked up there
// (the plain and SciPy-prefixed OpenBLAS names), so fastreg controls exactly
// the BLAS it calls and never loads another one.
void find_thread_controls(const void* sgemm) {
  Dl_info info{};
  if (!dladdr(sgemm, &info) || !info.dli_fname) return;
  void* lib = dlopen(info.dli_fname, RTLD_NOW | RTLD_NOLOAD);
  if (!lib) return;
  g_set_local = reinterpret_cast<set_local_fn>(
      find_symbol(lib, {"openblas_set_num_threads_local", "scipy_openblas_set_num_threads_local"}));
  g_set_global =
      reinterpret_cast<set_global_fn>(find_symbol(lib, {"scipy_openblas_set_num_threads", "openblas_set_num_threads"}));
  g_get = reinterpret_cast<get_fn>(find_symbol(lib, {"scipy_openblas_get_num_threads", "openblas_get_num_threads"}));
  if (!g_get) g_set_global = nullptr;  // a global setter is only safe to use if the old value can be restored
  dlclose(lib);                        // RTLD_NOLOAD took a reference; the library stays loaded by its owner
}

const BlasTable& table() {
  const BlasTable* t = g_table.load(std::memory_order_acquire);
  if (!t) throw std::runtime_error("fastreg: no BLAS installed (fastreg.linear could not load SciPy's BLAS)");
  return *t;
}

int to_int(int64_t v, const char* what) {
  if (v < 0 || v > std::numeric_limits<int>::max())
    throw std::overflow_error(std::string("fastreg: BLAS dimension ") + what + " = " + std::to_string(v) +
                              " does not fit a 32-bit int");
  return static_cast<int>(v);
}

}  // namespace

void set_blas(const BlasTable& t) {
  if (!t.sgemm || !t.dgemm || !t.sgemv || !t.dgemv)
    throw std::invalid_argument("set_blas: all of sgemm, dgemm, sgemv, dgemv are required");
  if (g_table.load(std::memory_order_acquire)) return;  // first one wins; never swapped under a running kernel
  g_storage = t;
  find_thread_controls(reinterpret_cast<const void*>(t.sgemm));
  g_table.store(&g_storage, std::memory_order_release);
}

const char* blas_thread_control() { return g_set_local ? "thread-local" : g_set_global ? "global" : "none"; }

BlasThreads::BlasThreads(int n) {
  if (!blas_ready()) return;  // the acquire load orders the reads of the setters after set_blas
  if (g_set_local)
    previous_ = g_set_local(n);
  else if (g_set_global) {
    previous_ = g_get();
    g_set_global(n);
  }
}

BlasThreads::~BlasThreads() {
  if (previous_ < 0) return;
  if (g_set_local)
    g_set_local(previous_);
  else if (g_set_global)
    g_set_global(previous_);
}

bool blas_ready() { return g_table.load(std::memory_order_acquire) != nullptr; }

// Row-major C = op(A) op(B) is column-major C^T = op(B)^T op(A)^T: swap the
// operands and the m/n roles, keep the transpose flags. No data is copied.
template <class T>
void gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, T alpha, const T* a, int64_t lda, const T* b,
          int64_t ldb, T beta, T* c, int64_t ldc) {
  if (m == 0 || n == 0) return;
  if (k == 0) {  // an empty product: C = beta * C (never read C when beta is 0, as BLAS)
    for (int64_t i = 0; i < m; ++i)
      for (int64_t j = 0; j < n; ++j) c[i * ldc + j] = beta == T(0) ? T(0) : beta * c[i * ldc + j];
    return;
  }
  const char ta = trans_b ? 'T' : 'N', tb = trans_a ? 'T' : 'N';
  const int M = to_int(n, "n"), N = to_int(m, "m"), K = to_int(k, "k");
  const int LDA = to_int(std::max<int64_t>(ldb, 1), "ldb"), LDB = to_int(std::max<int64_t>(lda, 1), "lda");
  const int LDC = to_int(std::max<int64_t>(ldc, 1), "ldc");
  if constexpr (std::is_same_v<T, float>)
    table().sgemm(&ta, &tb, &M, &N, &K, &alpha, b, &LDA, a, &LDB, &beta, c, &LDC);
  else
    table().dgemm(&ta, &tb, &M, &N, &K, &alpha, b, &LDA, a, &LDB, &beta, c, &LDC);
}

// Row-major A [m, n] is column-major A^T [n, m]: flip the transpose flag.
template <class T>
void gemv(bool trans_a, int64_t m, int64_t n, T alpha, const T* a, int64_t lda, const T* x, T beta, T* y) {
  const int64_t out = trans_a ? n : m;
  if (out == 0) return;
  const char t = trans_a ? 'N' : 'T';
  const int M = to_int(n, "n"), N = to_int(m, "m"), LDA = to_int(std::max<int64_t>(lda, 1), "lda");
  const int one = 1;
  if (m == 0 || n == 0) {  // BLAS would leave y untouched for k == 0; honour beta as the math says
    for (int64_t i = 0; i < out; ++i) y[i] = beta == T(0) ? T(0) : beta * y[i];
    return;
  }
  if constexpr (std::is_same_v<T, float>)
    table().sgemv(&t, &M, &N, &alpha, a, &LDA, x, &one, &beta, y, &one);
  else
    table().dgemv(&t, &M, &N, &alpha, a, &LDA, x, &one, &beta, y, &one);
}

template void gemm<float>(bool, bool, int64_t, int64_t, int64_t, float, const float*, int64_t, const float*, int64_t,
                          float, float*, int64_t);
template void gemm<double>(bool, bool, int64_t, int64_t, int64_t, double, const double*, int64_t, const double*,
                           int64_t, double, double*, int64_t);
template void gemv<float>(bool, int64_t, int64_t, float, const float*, int64_t, const float*, float, float*);
template void gemv<double>(bool, int64_t, int64_t, double, const double*, int64_t, const double*, double, double*);

}  // namespace fastreg
