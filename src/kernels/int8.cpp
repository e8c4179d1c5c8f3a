// Activation rounding for the int8 path of linear(), and its scalar reference.
#include "kernels/int8.h"

#include <algorithm>
#include <cmath>
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
  lane_bias.assign(size_t(T * pairs * 16), 0);
}

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
      // Lane terms: each lane's four bytes belong to one block.
      for (int i = 0; i < 32; i += 4) {
        const int64_t byte = 32 * (b % 2) + i;
        int sum = 0;
        for (int k = 0; k < 4; ++k) sum += qp[byte + k];
        const size_t lane = size_t((t * pairs + b / 2) * 16 + byte / 4);
        out.lane_bias[lane] = -zero * sum;
      }
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
