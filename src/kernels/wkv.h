// The matrix-valued WKV recurrences of RWKV-5/6 and RWKV-7 for one token, all heads.
// H heads of size N; `state` holds H x N x N floats.
#pragma once

#include <cstdint>

namespace rwkv::kernels {

// RWKV-5/6. S[h][i][j] accumulates k_i * v_j (i = key channel, j = value channel).
//   y_j = sum_i r_i * (u_i * k_i * v_j + S_ij);  S_ij <- k_i * v_j + w_i * S_ij
// w (decay) and u (bonus) are per channel (C = H*N values).
void wkv5(const float* r, const float* k, const float* v, const float* w, const float* u, int64_t H,
          int64_t N, float* state, float* y);

// RWKV-7. S[h][i][j]: i = value channel, j = key channel.
//   S <- S * diag(w) + (S * a_in) * b^T + v * k^T   with a_in = -kk, b = kk * a
//   y = S * r
// `kk` is the normalised removal key and `a` the in-context learning rate, both per channel.
void wkv7(const float* r, const float* w, const float* k, const float* v, const float* kk,
          const float* a, int64_t H, int64_t N, float* state, float* y);

}  // namespace rwkv::kernels
