// Activation rounding for the int8 path of linear(), and its scalar reference.
#include "kernels/int8.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "core/quant.h"

namespace rwkv::kernels {

void Int8Activations::reset(DType weight_dtype, int64_t rows, int64_t k) {
  dtype = weight_dtype;
  T = rows;
  K = k;
  pairs = (K + 63) / 64;
  q.assign(size_t(T * pairs * 64), 0);
  scale.resize(size_t(T * (K / 32)));
  block_bias.resize(size_t(T * (K / 32)));
  block_qsum.resize(size_t(T * (K / 32)));
}

uint64_t int8_groups_bytes(const Tensor& w) {
  return uint64_t((w.rows() + 15) / 16) * 16 * w.row_bytes();
}

void pack_int8_groups(const Tensor& w, int64_t g0, int64_t g1, uint8_t* out) {
  const DType type = w.dtype;
  const bool bytes = type == DType::Q8_0 || type == DType::I8;
  const bool has_min = type == DType::Q4_1 || type == DType::Q5_1;
  const bool five_bit = type == DType::Q5_0 || type == DType::Q5_1;
  const int64_t rows = w.rows(), blocks = w.cols() / 32, block_bytes = block_bytes_of(type);
  const uint64_t group_bytes = 16 * w.row_bytes();
  const int64_t level_bytes = 16 * (bytes ? 32 : 16);
  // Where a stored block's levels start: after d (and m, and qh).
  const int64_t levels_at = type == DType::I8 ? 0 : 2 + (has_min ? 2 : 0) + (five_bit ? 4 : 0);
  for (int64_t g = g0; g < g1; ++g) {
    uint8_t* group = out + uint64_t(g - g0) * group_bytes;
    // Padding rows are zero, and the fifth bits are built up by OR.
    if (five_bit || 16 * (g + 1) > rows) std::memset(group, 0, group_bytes);
    for (int64_t i = 0; i < 16 && 16 * g + i < rows; ++i) {
      const uint8_t* row = w.row(16 * g + i);
      for (int64_t b = 0; b < blocks; ++b) {
        const uint8_t* block = row + b * block_bytes;
        uint8_t* levels = group + b * 16 * block_bytes + 4 * i;
        uint8_t* scale = group + b * 16 * block_bytes + level_bytes;
        for (int c = 0; c < (bytes ? 8 : 4); ++c) {
          uint32_t four;
          std::memcpy(&four, block + levels_at + 4 * c, 4);
          if (bytes) four ^= 0x80808080u;  // int8 -> unsigned level
          std::memcpy(levels + 64 * c, &four, 4);
        }
        if (type == DType::I8) continue;
        std::memcpy(scale + 2 * i, block, 2);
        if (has_min) std::memcpy(scale + 32 + 2 * i, block + 2, 2);
        if (five_bit) {
          uint32_t qh;
          std::memcpy(&qh, block + levels_at - 4, 4);
          uint8_t* fifth = scale + (has_min ? 64 : 32) + 4 * i;
          for (int j = 0; j < 4; ++j)
            for (int c = 0; c < 8; ++c) fifth[j] |= uint8_t(((qh >> (4 * c + j)) & 1) << c);
        }
      }
    }
  }
}

namespace amx {

void prepare_tiles(Int8Activations& x) {
  const int64_t blocks = x.K / 32, tiles = (x.T + kTileTokens - 1) / kTileTokens;
  // A last tile reads 16 rows of bytes: zero rows past T (here, not in reset(), which one token
  // calls per product).
  x.q.resize(size_t(tiles * kTileTokens * x.pairs * 64), 0);
  x.tile_terms.assign(size_t(tiles * blocks * 2 * kTileTokens), 0.0f);
  for (int64_t t = 0; t < x.T; ++t) {
    float* terms =
        x.tile_terms.data() + (t / kTileTokens) * blocks * 2 * kTileTokens + t % kTileTokens;
    for (int64_t b = 0; b < blocks; ++b) {
      terms[2 * kTileTokens * b] = x.scale[size_t(t * blocks + b)];
      terms[2 * kTileTokens * b + kTileTokens] = x.block_qsum[size_t(t * blocks + b)];
    }
  }
}

}  // namespace amx

namespace scalar {

void quantize_activations(DType dtype, const float* x, int64_t T, int64_t K, Int8Activations& out) {
  out.reset(dtype, T, K);
  const int64_t blocks = K / 32, pairs = out.pairs;
  const int zero = block_zero_level(dtype);
  for (int64_t t = 0; t < T; ++t) {
    int8_t* q = out.q.data() + t * pairs * 64;
    for (int64_t b = 0; b < blocks; ++b) {
      const float* xb = x + t * K + 32 * b;
      float amax = 0;
      for (int i = 0; i < 32; ++i) amax = std::max(amax, std::abs(xb[i]));
      const float d = amax / 127.0f, inv = d > 0 ? 1.0f / d : 0.0f;
      out.scale[size_t(t * blocks + b)] = d;
      int8_t* qp = q + (b / 2) * 64;
      int block_sum = 0;
      for (int i = 0; i < 32; ++i) {
        qp[32 * (b % 2) + i] = int8_t(std::nearbyint(xb[i] * inv));
        block_sum += qp[32 * (b % 2) + i];
      }
      out.block_bias[size_t(t * blocks + b)] = -zero * block_sum;
      out.block_qsum[size_t(t * blocks + b)] = d * float(block_sum);
    }
  }
}

void linear_rows_int8(const Tensor& w, const Int8Activations& x, float* y, int64_t r0, int64_t r1) {
  const int64_t O = w.rows(), blocks = x.K / 32;
  const int64_t block_bytes = block_bytes_of(w.dtype);
  const int zero = block_zero_level(w.dtype);
  const bool has_min = w.dtype == DType::Q4_1 || w.dtype == DType::Q5_1;
  thread_local std::vector<float> sums;
  sums.resize(size_t(x.T));
  for (int64_t r = r0; r < r1; ++r) {
    std::fill(sums.begin(), sums.end(), 0.0f);
    for (int64_t b = 0; b < blocks; ++b) {
      const BlockLevels u = unpack_block(w.dtype, w.row(r) + b * block_bytes);
      for (int64_t t = 0; t < x.T; ++t) {
        const int8_t* qp = x.row_q(t) + (b / 2) * 64;
        int32_t dot = 0, qsum = 0;
        for (int i = 0; i < 32; ++i) {
          const int qi = qp[32 * (b % 2) + i];
          dot += (u.level[i] - zero) * qi;
          qsum += qi;
        }
        const float dx = x.scale[size_t(t * blocks + b)];
        float& sum = sums[size_t(t)];
        sum = std::fma(float(dot), u.d * dx, sum);
        if (has_min) sum = std::fma(u.m, dx * float(qsum), sum);
      }
    }
    for (int64_t t = 0; t < x.T; ++t) y[t * O + r] = sums[size_t(t)];
  }
}

}  // namespace scalar

}  // namespace rwkv::kernels
