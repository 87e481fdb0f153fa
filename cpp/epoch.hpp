// Whole training epochs in C++: for every minibatch of a given row order,
// gather -> linear forward (BLAS) -> loss and its gradient -> linear backward
// (BLAS) -> fused SGD update, with no Python in between. The caller (the
// binding) validates everything and runs this with the GIL released.
// Plain C++, no Python.
#pragma once

#include <cstdint>
#include <vector>

#include "sgd.hpp"

namespace fastreg {

// How the rows of X are stored. u8 rows are scaled to float32 on the fly
// (x * scale), so an image data set is never materialised as float.
enum class Source { f32, f64, u8 };

enum class RegressionLoss { squared, huber, l1 };

// Model y = x @ w^T + b with w [c, d], b [c]; T is float (f32/u8 sources) or
// double (f64 source). Momentum buffers wb/bb may be null when momentum == 0.
template <class T>
struct EpochArgs {
  const void* x = nullptr;  // [n_rows, d], C-contiguous, element type given by source
  Source source = Source::f32;
  float scale = 1.0f;  // u8 only
  int64_t n_rows = 0, d = 0, c = 0;
  const int64_t* order = nullptr;  // rows to visit, in order; batches are consecutive slices
  int64_t n_order = 0, batch_size = 0;
  T* w = nullptr;
  T* b = nullptr;
  T* w_buf = nullptr;
  T* b_buf = nullptr;
  bool first_step = false;  // momentum buffers are fresh: the first update fills them
  // Check every gathered row for NaN/inf (float sources) and stop before using
  // one: lets fit() skip a separate pass over X, since the first epoch reads
  // every row anyway (while the row is in cache, so the check is nearly free).
  bool check_finite = false;
  // Per-row weights sample_weight[n_rows] (>= 0, finite; checked by the caller), or null:
  // a batch's loss is then sum_i w_i l_i / batch_rows (SGDClassifier's weighting: a row of
  // weight 2 pulls like two copies of it). Null keeps the unweighted loop unchanged.
  const T* sample_weight = nullptr;
  SgdOptions opt;  // weight_decay is applied to w only (not to the bias)
};

struct EpochResult {
  double loss_sum = 0.0;       // sum over the rows seen of the per-row loss
  int64_t correct = 0;         // rows whose argmax logit was the target (softmax only)
  int64_t rows = 0;            // rows trained on (< n_order when the loss stopped being finite)
  bool finite = true;          // false: a batch's loss was inf/nan and the epoch stopped there
  int64_t nonfinite_row = -1;  // check_finite: a row of X holding NaN/inf (not necessarily the
                               // first); the epoch stopped before any update used it
};

// Softmax regression: labels y[n_rows] in [0, c) (checked by the caller);
// mean cross-entropy per batch, as torch.nn.CrossEntropyLoss.
template <class T>
EpochResult softmax_epoch(const EpochArgs<T>& a, const int64_t* y);

// From this many classes on, softmax_epoch runs each batch through the fused
// linear + cross-entropy kernel (linear_cross_entropy.hpp), keeping one weight
// gradient instead of one per row chunk.
// Below it the team path is faster (the crossover, measured: docs/models.md).
// Rows with sample weights keep the general path.
constexpr int64_t kManyClasses = 512;
bool epoch_many_classes(int64_t c, bool weighted);

// Linear regression (c == 1): targets y[n_rows]; per-row loss
// squared 0.5 r^2, huber (delta 1) 0.5 r^2 if |r| <= 1 else |r| - 0.5, l1 |r|,
// with r = prediction - target; mean over the batch.
template <class T>
EpochResult regression_epoch(const EpochArgs<T>& a, const T* y, RegressionLoss loss);

// Threads one epoch runs on for batches of up to `batch` rows, d features and
// c outputs: 1 for small batches, else up to num_threads() (at most one per row
// chunk of a batch). Every team size runs the same chunks, with the same results.
// Exposed so tests can tell how many threads an epoch uses.
int epoch_team_size(int64_t batch, int64_t d, int64_t c);

// Rows of each chunk a batch of `rows` rows is cut into, in an epoch whose largest
// batch has `batch` rows (rows <= batch). Exposed for tests.
std::vector<int64_t> epoch_chunk_rows(int64_t rows, int64_t batch, int64_t d, int64_t c);

// ---- one minibatch at a time (data-parallel training) -----------------------
// The epoch loops above are built from these two steps; a data-parallel caller
// runs them itself so it can all-reduce the gradient in between.

// Scratch space for a batch, reused from step to step.
template <class T>
struct BatchScratch {
  std::vector<T> xb, out;
  std::vector<int64_t> yb;
};

struct BatchResult {
  double loss_sum = 0.0;  // sum over the batch's rows of the per-row loss
  int64_t correct = 0;    // softmax only: rows whose argmax logit was the target
  bool finite = true;     // false: the loss was inf/nan and grad was not written
};

// Gradient of the batch's mean loss over the rows a.order[0, a.n_order) (one
// batch) into one flat buffer: grad[0, c*d) for w (row-major [c, d]), then
// grad[c*d, c*d + c) for b. One buffer, so it can be all-reduced in one call.
template <class T>
BatchResult softmax_batch_grad(const EpochArgs<T>& a, const int64_t* y, T* grad, BatchScratch<T>& s);
template <class T>
BatchResult regression_batch_grad(const EpochArgs<T>& a, const T* y, RegressionLoss loss, T* grad, BatchScratch<T>& s);

// The SGD update of w and b (and their momentum buffers) from a flat gradient
// laid out as above; weight decay on w only.
template <class T>
void linear_sgd_step(const EpochArgs<T>& a, const T* grad, bool first_step);

// Index of the first row of x [n, d] holding a NaN or an infinity, or -1.
template <class T>
int64_t first_nonfinite_row(const T* x, int64_t n, int64_t d);

}  // namespace fastreg
