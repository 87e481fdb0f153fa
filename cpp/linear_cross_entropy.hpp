// Fused linear + softmax cross-entropy over a large vocabulary:
//   loss = cross_entropy(h @ weight^T + bias, target)
// and its gradients with respect to h, weight and bias, without ever holding the
// [n, v] logits. Plain C++ (no Python); the products go to the BLAS in blas.hpp.
//
// Rows are taken in chunks of R; the vocabulary in tiles of C columns. For each
// chunk: (A) each tile's logits come from one GEMM and are folded into per-row,
// per-tile statistics (max, sum of exp, argmax) while the tile is in cache;
// (B) each row's log-sum-exp combines its tiles' statistics in tile order;
// (C) when gradients are wanted, each tile's gradient is formed in place and fed
// at once to the two backward GEMMs (grad_weight[tile] += G^T h, and a partial
// grad_h += G W[tile]); (D) the partial grad_h of a fixed number of tile groups
// are summed in group order. Every sum has an order fixed by the chunk, tile and
// group indices, never by which thread ran what: the results are bit-identical
// for any thread count. Only (C) needs the chunk's logits kept ([R, v]); without
// gradients each thread keeps one [R, C] tile.
#pragma once

#include <cstdint>

#include "cross_entropy.hpp"  // Reduction

namespace fastreg {

// Per-row loss for a row i whose target y_i is not ignore_index, with
// z = softcap * tanh(logits / softcap) (or the logits when softcap is 0),
// lse = log(sum_j exp z_j), eps = label_smoothing:
//   row_i = (1 - eps) * (lse - z_{y_i}) + eps * (lse - mean_j z_j) + lse_square_scale * lse^2
// Ignored rows count 0. mean = sum_i row_i / (rows not ignored); over no rows: NaN.
template <class T>
struct LinearXentArgs {
  const T* h = nullptr;             // [n, d]
  const T* weight = nullptr;        // [v, d]
  const T* bias = nullptr;          // [v], or nullptr
  const int64_t* target = nullptr;  // [n] class indices (checked by the kernel)
  int64_t n = 0, d = 0, v = 0;      // v = 0 only if every row is ignored
  int64_t ignore_index = -100;
  double label_smoothing = 0.0;   // in [0, 1]
  double lse_square_scale = 0.0;  // z-loss weight
  double softcap = 0.0;           // > 0, or 0 for none
  Reduction reduction = Reduction::mean;
  double grad_scale = 1.0;  // multiplies every gradient (upstream grad_output)
  // Outputs, each optional (nullptr: not wanted).
  T* row_loss = nullptr;      // [n]
  T* lse = nullptr;           // [n] log-sum-exp of each row's (capped) logits, ignored rows included
  int64_t* argmax = nullptr;  // [n] first index of the row's max logit (the first NaN if any; -1 if v = 0)
  T* grad_h = nullptr;        // [n, d]
  T* grad_weight = nullptr;   // [v, d]
  T* grad_bias = nullptr;     // [v] (needs bias)
};

// Tile sizes (0: the defaults). Exposed for tests and tuning; results depend on
// them only through the order of floating-point sums.
struct LinearXentTiles {
  int64_t rows = 0, cols = 0;
};

// The reduced loss (Reduction::none: the sum of the row losses; the gradients are
// then those of that sum). A target outside [0, v) that is not ignore_index
// throws std::out_of_range before anything is computed. NaN or inf in h, weight
// or bias give NaN in the losses (and gradients) of the rows they reach, as the
// unfused computation does.
template <class T>
double linear_cross_entropy(const LinearXentArgs<T>& a, LinearXentTiles tiles = {});

// The tile sizes the kernel would use for these shapes (tests, docs).
LinearXentTiles linear_cross_entropy_tiles(int64_t n, int64_t v, LinearXentTiles requested);

}  // namespace fastreg
