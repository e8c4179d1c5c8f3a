// Math the training forward and backward passes of every version share: matrix products,
// LayerNorm/GroupNorm and their gradients, token shift, softmax cross-entropy. Row-major
// float32 throughout; "rows" are the tokens of a chunk (batch x time).
#pragma once

#include <cmath>
#include <cstdint>
#include <functional>

#include "rwkv/thread_pool.h"

namespace rwkv::train {

// C (M x N) = op(A) op(B), or C += op(A) op(B) with `accumulate`. op(A) is A stored (M x K), or
// with `trans_a` A stored (K x M) and transposed; op(B) is B stored (K x N), or with `trans_b`
// B stored (N x K). Uses OpenBLAS where the build found it, else a loop; both threaded on `pool`.
void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, const float* A,
          const float* B, float* C, bool accumulate, ThreadPool* pool);
// Before the first gemm: the BLAS library's own threads off, as gemm threads on the pool.
void setup_gemm();
// "openblas" or "builtin".
const char* gemm_backend();

// y = x W^T (+=) for a Linear weight W (out x in): the forward of nn.Linear over `rows`.
inline void linear_fwd(const float* x, const float* W, int64_t rows, int64_t in, int64_t out,
                       float* y, ThreadPool* pool) {
  gemm(false, true, rows, out, in, x, W, y, false, pool);
}
// dx (+)= dy W and dW += dy^T x.
inline void linear_bwd(const float* x, const float* W, const float* dy, int64_t rows, int64_t in,
                       int64_t out, float* dx, bool accumulate_dx, float* dW, ThreadPool* pool) {
  if (dx) gemm(false, false, rows, in, out, dy, W, dx, accumulate_dx, pool);
  gemm(true, false, out, in, rows, dy, x, dW, true, pool);
}
// The reference's `x @ M` for a LoRA matrix M (in x out), and its gradients.
inline void matmul_fwd(const float* x, const float* M, int64_t rows, int64_t in, int64_t out,
                       float* y, ThreadPool* pool) {
  gemm(false, false, rows, out, in, x, M, y, false, pool);
}
inline void matmul_bwd(const float* x, const float* M, const float* dy, int64_t rows, int64_t in,
                       int64_t out, float* dx, bool accumulate_dx, float* dM, ThreadPool* pool) {
  if (dx) gemm(false, true, rows, in, out, dy, M, dx, accumulate_dx, pool);
  gemm(true, false, in, out, rows, x, dy, dM, true, pool);
}

// Calls fn(begin, end) on consecutive pieces of [0, n), a few per thread of the pool (one piece
// without a pool), each a multiple of `align` long but the last. Split over columns, a pass can
// sum a per-column parameter gradient over all rows without races, in the one-thread order.
void parallel_ranges(ThreadPool* pool, int64_t n, int64_t align,
                     const std::function<void(int64_t, int64_t)>& fn);

// LayerNorm of each of `rows` rows of n values (population variance), then the affine; keeps
// each row's mean and 1/std for the backward pass.
void layer_norm_fwd(const float* x, const float* w, const float* b, int64_t rows, int64_t n,
                    float eps, float* y, float* mean, float* rstd, ThreadPool* pool = nullptr);
// dx (+)= the gradient through the normalisation; dw, db accumulate.
void layer_norm_bwd(const float* x, const float* w, const float* mean, const float* rstd,
                    const float* dy, int64_t rows, int64_t n, float* dx, bool accumulate_dx,
                    float* dw, float* db, ThreadPool* pool = nullptr);

// Token shift within one chunk of B sequences of T rows each: prev[b][t] = x[b][t-1], or for
// t = 0 the C floats at `carry + b * carry_stride`, which then receive x[b][T-1].
void shift_fwd(const float* x, int64_t B, int64_t T, int64_t C, float* carry,
               int64_t carry_stride, float* prev);
// The gradient of shift_fwd: dx[b][t-1] += dprev[b][t]; dx[b][T-1] += dcarry (the gradient of
// the carried value from the next chunk), after which dcarry holds the gradient of dprev[b][0].
void shift_bwd(const float* dprev, int64_t B, int64_t T, int64_t C, float* dcarry,
               int64_t carry_stride, float* dx);

// Softmax cross-entropy of each row of logits against its target: returns the summed loss
// (double) and replaces the logits by scale * (softmax - onehot), the gradient of scale * loss,
// plus max_coef times the row's largest logit at its (first) position (L2Wrap).
double cross_entropy(float* logits, const int* targets, int64_t rows, int64_t V, float scale,
                     float max_coef = 0, ThreadPool* pool = nullptr);

inline float sigmoid(float x) { return 1.0f / (1.0f + std::exp(-x)); }

}  // namespace rwkv::train
