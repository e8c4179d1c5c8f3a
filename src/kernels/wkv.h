// The matrix-valued WKV recurrences of RWKV-5/6 and RWKV-7 over T tokens, all heads.
// H heads of size N; `state` holds H x N x N floats; per-token inputs and y are T rows of C = H N.
// Heads are independent, so they are spread over `pool`, and each head runs all T tokens while
// its N x N state stays in L1. Every head's arithmetic is the same whatever T or the thread
// count, so one token at a time and a whole sequence give the same bits.
#pragma once

#include <cstdint>

#include "rwkv/thread_pool.h"

namespace rwkv::kernels {

// RWKV-5/6. S[h][i][j] accumulates k_i * v_j (i = key channel, j = value channel).
//   y_j = sum_i r_i * (u_i * k_i * v_j + S_ij);  S_ij <- k_i * v_j + w_i * S_ij
// w (decay) is per channel and per token (`w_stride` = C), or fixed (`w_stride` = 0, RWKV-5);
// u (bonus) is per channel.
void wkv5(const float* r, const float* k, const float* v, const float* w, int64_t w_stride,
          const float* u, int64_t T, int64_t H, int64_t N, float* state, float* y,
          ThreadPool* pool = nullptr);

// RWKV-7. S[h][i][j]: i = value channel, j = key channel.
//   S <- S * diag(w) + (S * a_in) * b^T + v * k^T   with a_in = -kk, b = kk * a
//   y = S * r
// `kk` is the normalised removal key and `a` the in-context learning rate, both per channel.
void wkv7(const float* r, const float* w, const float* k, const float* v, const float* kk,
          const float* a, int64_t T, int64_t H, int64_t N, float* state, float* y,
          ThreadPool* pool = nullptr);

}  // namespace rwkv::kernels
