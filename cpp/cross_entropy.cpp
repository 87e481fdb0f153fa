#include "cross_entropy.hpp"
#include "runtime.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <memory>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include "simd.hpp"
#include "vexp.hpp"
#include "vlog.hpp"

namespace fastreg {
namespace {

// The vector policies and softmax row primitives, plus the cross-entropy row kernels.
#define FASTREG_EXTRA_ROW_KERNELS "cross_entropy_rows.inl"
#include "softmax_simd.inl"
#undef FASTREG_EXTRA_ROW_KERNELS

// One branch-free sweep over the labels: whether any is outside [0, c) without
// being ignore_index, and how many are not ignored. The AVX2 variant compares
// four int64 at a time (baseline x86-64 has no 64-bit vector compare: the plain
// loop runs one label per cycle or so, ~10% of a (256, 10) call).
struct LabelScan {
  bool any_bad;
  int64_t kept;
};
FASTREG_INLINE LabelScan scan_labels_body(const int64_t* y, int64_t n, int64_t c, int64_t ignore) {
  int64_t bad = 0, kept = 0;
  for (int64_t i = 0; i < n; ++i) {
    const int64_t keep = y[i] != ignore;
    bad |= (static_cast<uint64_t>(y[i]) >= static_cast<uint64_t>(c)) & keep;
    kept += keep;
  }
  return {bad != 0, kept};
}
LabelScan scan_labels_plain(const int64_t* y, int64_t n, int64_t c, int64_t ignore) {
  return scan_labels_body(y, n, c, ignore);
}
FASTREG_TARGET_AVX2 LabelScan scan_labels_avx2(const int64_t* y, int64_t n, int64_t c, int64_t ignore) {
  return scan_labels_body(y, n, c, ignore);
}
// avx512 too: a small sweep (256 labels: well under a microsecond) where zmm code
// would gain nothing measurable, and the small-C call it precedes runs AVX2 code.
LabelScan scan_labels(const int64_t* y, int64_t n, int64_t c, int64_t ignore) {
  return row_level() != Simd::scalar ? scan_labels_avx2(y, n, c, ignore) : scan_labels_plain(y, n, c, ignore);
}

// Index of the first label outside [0, c) that is not ignore_index (one exists).
int64_t first_bad_label(const int64_t* y, int64_t n, int64_t c, int64_t ignore) {
  for (int64_t i = 0; i < n; ++i)
    if (static_cast<uint64_t>(y[i]) >= static_cast<uint64_t>(c) && y[i] != ignore) return i;
  return -1;
}

[[noreturn]] __attribute__((noinline, cold)) void throw_bad_label(int64_t y, int64_t row, int64_t c, int64_t ignore) {
  throw std::out_of_range("Target " + std::to_string(y) + " at row " + std::to_string(row) +
                          " is out of bounds: class indices must be in [0, " + std::to_string(c) +
                          ") or equal ignore_index (" + std::to_string(ignore) + ")");
}

template <class T>
double kept_weight(const int64_t* y, int64_t n, int64_t ignore, const T* w) {
  double sum = 0;  // in a register: the loop is one add per row (labels already checked)
  for (int64_t i = 0; i < n; ++i)
    if (y[i] != ignore) sum += static_cast<double>(w[y[i]]);
  return sum;
}

}  // namespace

template <class T>
double softmax_cross_entropy(const XentArgs<T>& a) {
  if (a.n < 0 || a.c < 1) throw std::invalid_argument("softmax_cross_entropy: need n >= 0 and c >= 1");
  if ((a.target == nullptr) == (a.target_probs == nullptr))
    throw std::invalid_argument("softmax_cross_entropy: exactly one of target / target_probs must be set");
  if (!(a.label_smoothing >= 0.0 && a.label_smoothing <= 1.0))
    throw std::invalid_argument("softmax_cross_entropy: label_smoothing must be in [0, 1]");

  // Pre-pass over the labels (before anything is written): bounds, and the
  // mean's denominator, the summed weight of the rows that are not ignored.
  double denom = static_cast<double>(a.n);
  if (a.target) {
    const LabelScan scan = scan_labels(a.target, a.n, a.c, a.ignore_index);
    if (scan.any_bad) {
      const int64_t first_bad = first_bad_label(a.target, a.n, a.c, a.ignore_index);
      throw_bad_label(a.target[first_bad], first_bad, a.c, a.ignore_index);
    }
    denom = a.weight ? kept_weight(a.target, a.n, a.ignore_index, a.weight) : static_cast<double>(scan.kept);
  }
  double wsum = static_cast<double>(a.c);
  if (a.weight) {
    wsum = 0;
    for (int64_t j = 0; j < a.c; ++j) wsum += a.weight[j];
  }
  const bool mean = a.reduction == Reduction::mean;
  const double r = mean ? a.grad_scale / denom : a.grad_scale;

  // Per-row losses in double; small batches keep them on the stack (no allocation).
  constexpr int64_t kStackRows = 1024;
  double stack_rows[kStackRows];
  std::unique_ptr<double[]> heap_rows;
  double* rows = stack_rows;
  if (a.n > kStackRows) {
    heap_rows.reset(new double[static_cast<size_t>(a.n)]);  // every entry is written by the kernel
    rows = heap_rows.get();
  }
  const Simd level = row_level();
  const bool lanes = a.c <= scalar_rows::kLaneMaxC;  // the AVX2 lane kernel, also at avx512
  parallel_for(a.n, row_grain(a.c), [&](int64_t b, int64_t e) {
#if FASTREG_HAVE_AVX2_KERNELS
    if (level == Simd::avx512 && !lanes) return avx512_rows::xent_range<T>(a, b, e, r, wsum, rows);
    if (level == Simd::avx512) return avx2_rows::xent_range<T>(a, b, e, r, wsum, rows);
    if (level == Simd::avx2) return avx2_rows::xent_range<T>(a, b, e, r, wsum, rows);
#endif
    (void)level;
    scalar_rows::xent_range<T>(a, b, e, r, wsum, rows);
  });
  if (a.row_loss)
    for (int64_t i = 0; i < a.n; ++i) a.row_loss[i] = static_cast<T>(rows[i]);
  // Summed after the parallel part, in a fixed order: the result does not depend
  // on the thread count.
  const double total = ordered_sum(rows, a.n);
  return mean ? total / denom : total;
}

#define FASTREG_INSTANTIATE(T) template double softmax_cross_entropy<T>(const XentArgs<T>&);
FASTREG_INSTANTIATE(float)
FASTREG_INSTANTIATE(double)
#undef FASTREG_INSTANTIATE

}  // namespace fastreg
