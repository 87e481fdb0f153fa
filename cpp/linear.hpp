// Linear layer y = x @ weight^T + bias (torch.nn.functional.linear's layout:
// weight is [out_features, in_features]) and its backward, on the BLAS from
// blas.hpp. Row-major, C-contiguous buffers; plain C++, no Python.
#pragma once

#include <cstdint>

namespace fastreg {

// y[n, out] = x[n, in] @ w[out, in]^T + b[out] (b may be null: no bias).
template <class T>
void linear_forward(const T* x, const T* w, const T* b, int64_t n, int64_t in, int64_t out, T* y);

// Given gy = dL/dy [n, out]: gw[out, in] = gy^T @ x, gb[out] = sum over rows
// of gy, gx[n, in] = gy @ w. gb and gx may be null (not wanted). When
// accumulate is true the gradients are added to gw/gb (torch's .grad += ...).
template <class T>
void linear_backward(const T* x, const T* w, const T* gy, int64_t n, int64_t in, int64_t out, T* gw, T* gb, T* gx,
                     bool accumulate);

// Column sums of a row-major [n, c] matrix into out[c] (accumulated in
// double: a bias gradient over 60000 rows in float32 would lose digits).
template <class T>
void column_sums(const T* a, int64_t n, int64_t c, T* out, bool accumulate);

// dst[0, n) += src[0, n), element by element (so the sum of several arrays added
// in a fixed order is the same at every SIMD level): the epoch's fold of its
// chunks' partial weight gradients. dst and src do not overlap.
template <class T>
void add_into(T* dst, const T* src, int64_t n);

// ---- few outputs (out <= kFewOutputs): fastreg's own SIMD code ----------------
// The training epoch's two products for a block of rows when the model has few
// outputs (softmax regression over 10 classes, linear regression): each is a
// batch of short dot products (forward) or of scaled row sums (weight gradient),
// not a GEMM the BLAS blocks well, and the BLAS's speed on these shapes depends on
// which kernel it picked (OpenBLAS's small-matrix kernels exist for SkylakeX only:
// with OPENBLAS_CORETYPE=Haswell the same product takes several times longer).
constexpr int64_t kFewOutputs = 32;

// True when the few-outputs kernels below run for T at the active SIMD level
// (AVX2 or AVX-512, out <= kFewOutputs); otherwise use linear_forward/gemm.
template <class T>
bool few_outputs_supported(int64_t out);

// y[n, out] = x[n, in] @ w[out, in]^T + b[out] (b may be null). Single-threaded.
template <class T>
void few_outputs_forward(const T* x, const T* w, const T* b, int64_t n, int64_t in, int64_t out, T* y);

// gw[out, in] = gy[n, out]^T @ x[n, in], or += when accumulate. Single-threaded.
template <class T>
void few_outputs_weight_grad(const T* x, const T* gy, int64_t n, int64_t in, int64_t out, T* gw, bool accumulate);

// The gather and the few-outputs forward in one pass: rows idx[0, n) of x (n rows of
// `in`) are copied to xb and their products with w (+ b) written to y [n, out]. With
// check, returns the first of the n rows holding NaN/inf (-1: none). Only where
// few_outputs_supported(out).
template <class T>
int64_t few_outputs_gather_forward(const T* x, const int64_t* idx, int64_t n, int64_t in, const T* w, const T* b,
                                   int64_t out, T* xb, T* y, bool check);

}  // namespace fastreg
