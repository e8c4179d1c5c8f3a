// BF16 weights on AMX tiles with float32 inputs, exactly (kernels/linear_amx_bf16.cpp). Each
// input x is split into three bf16 values, x = hi + mid + lo (exact: each takes the next 8
// significant bits), so every product of a bf16 weight with a part is exact in float32, as it
// is when the AVX-512 kernels widen the weight; TDPBF16PS then sums them in float32. Its order
// within a tile is the hardware's own (not reproducible with FMAs), but each output's sum
// depends only on its own row and column, so a token gives the same bits alone or in a chunk,
// at any place in it, as long as every token count runs this kernel; which matrices it runs is
// decided by the matrix alone (runs_bf16).
#pragma once

#include <cstdint>

#include "core/tensor.h"
#include "rwkv/aligned.h"

namespace rwkv::kernels::amx {

// Inputs split for the kernel, made once per call and read by every thread. Tokens go in groups
// of up to 16; in a group of n, column 3t + p of the B operand is token t's part p (hi, mid,
// lo), in ceil(3n / 16) tiles of 16 columns. Per group, 32-value chunk and column tile: 16 rows
// of 16 columns of two bf16 (a value pair; the tile layout of a B operand), 1 KB.
struct Bf16Inputs {
  int64_t T = 0, K = 0;
  int64_t group_tokens = 0;  // min(T, 16): the columns of every group are laid out for that many
  int64_t column_tiles = 0;  // ceil(3 group_tokens / 16)
  AlignedVector<uint16_t> tiles;

  const uint16_t* tile(int64_t group, int64_t chunk, int64_t c) const {
    return tiles.data() + tile_at(group, chunk, c);
  }
  uint16_t* tile(int64_t group, int64_t chunk, int64_t c) {
    return tiles.data() + tile_at(group, chunk, c);
  }
  int64_t tile_at(int64_t group, int64_t chunk, int64_t c) const {
    return ((group * (K / 32) + chunk) * column_tiles + c) * 512;
  }
};

// Whether the kernel runs w: BF16 rows of a multiple of 32 values, on a CPU with AMX-BF16.
bool runs_bf16(const Tensor& w);
// Splits x (T, K) into out.
void split_inputs(const float* x, int64_t T, int64_t K, Bf16Inputs& out);
// y[t][r] = w row r . x row t for rows [r0, r1) (any rows; y is (T, w.rows())).
void linear_rows_bf16(const Tensor& w, const Bf16Inputs& x, float* y, int64_t r0, int64_t r1);

}  // namespace rwkv::kernels::amx
