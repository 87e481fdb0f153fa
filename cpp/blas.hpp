// A real BLAS without linking one: the Fortran ?gemm/?gemv entry points are
// taken at run time from SciPy's BLAS (scipy.linalg.cython_blas capsules, as
// scikit-learn does), stored once in a function-pointer table, and called
// through the row-major wrappers below. fastreg therefore ships no BLAS of its
// own and uses the same (OpenBLAS) library as SciPy. Plain C++, no Python.
#pragma once

#include <cstdint>

namespace fastreg {

// Fortran BLAS signatures (column-major, every argument by pointer).
using sgemm_fn = void (*)(const char*, const char*, const int*, const int*, const int*, const float*, const float*,
                          const int*, const float*, const int*, const float*, float*, const int*);
using dgemm_fn = void (*)(const char*, const char*, const int*, const int*, const int*, const double*, const double*,
                          const int*, const double*, const int*, const double*, double*, const int*);
using sgemv_fn = void (*)(const char*, const int*, const int*, const float*, const float*, const int*, const float*,
                          const int*, const float*, float*, const int*);
using dgemv_fn = void (*)(const char*, const int*, const int*, const double*, const double*, const int*, const double*,
                          const int*, const double*, double*, const int*);

struct BlasTable {
  sgemm_fn sgemm = nullptr;
  dgemm_fn dgemm = nullptr;
  sgemv_fn sgemv = nullptr;
  dgemv_fn dgemv = nullptr;
};

// Installs the table (all four pointers non-null, else std::invalid_argument).
// Also looks up, in the same shared library as sgemm, OpenBLAS's thread-count
// setter so that BlasThreads below can pin a kernel's calls to one thread.
void set_blas(const BlasTable& table);
bool blas_ready();
// How the BLAS's threads can be limited: "thread-local" (OpenBLAS >= 0.3.27's
// openblas_set_num_threads_local), "global", or "none" (unknown BLAS).
const char* blas_thread_control();

// RAII: while alive, BLAS calls from this thread use at most n threads (when
// the BLAS allows it; a no-op otherwise). The whole-epoch loops use n = 1: their
// GEMMs (256 x 784 x 10) are too small to split, and BLAS worker threads on top of
// other busy threads (torch's, fastreg's) cost far more than they save — measured
// ~25x slower per epoch on a shared 2-core machine.
class BlasThreads {
 public:
  explicit BlasThreads(int n);
  ~BlasThreads();
  BlasThreads(const BlasThreads&) = delete;
  BlasThreads& operator=(const BlasThreads&) = delete;

 private:
  int previous_ = -1;
};

// Row-major C[m, n] = alpha * op(A) @ op(B) + beta * C, where op(A) is [m, k]
// (A stored [m, k], or [k, m] when trans_a) and op(B) is [k, n] (B stored
// [k, n], or [n, k] when trans_b); lda/ldb/ldc are row strides in elements.
// Throws std::runtime_error when no BLAS is installed, std::overflow_error when
// a dimension does not fit the BLAS's 32-bit int.
template <class T>
void gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, T alpha, const T* a, int64_t lda, const T* b,
          int64_t ldb, T beta, T* c, int64_t ldc);

// Row-major y[m'] = alpha * op(A) @ x + beta * y, A stored [m, n] with row
// stride lda; op(A) = A ([m, n], y has m entries) or A^T (y has n entries).
template <class T>
void gemv(bool trans_a, int64_t m, int64_t n, T alpha, const T* a, int64_t lda, const T* x, T beta, T* y);

}  // namespace fastreg
