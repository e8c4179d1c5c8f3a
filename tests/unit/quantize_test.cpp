// The block encoders of core/quant.h: encode -> decode stays within the error bound each type's
// scale allows, values already on a grid survive exactly, and the scale search never does
// worse than round-to-nearest; and the row encoder of I8. (That the reference encoder writes the
// same bytes as rwkv.cpp's quantizer is checked against its files in
// tests/golden/quantize_cli_test.cpp.)
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "core/dtype.h"
#include "core/quant.h"

namespace rwkv {
namespace {

constexpr DType kQuantTypes[] = {DType::Q8_0, DType::Q5_0, DType::Q5_1, DType::Q4_0, DType::Q4_1};
constexpr QuantMethod kMethods[] = {QuantMethod::kReference, QuantMethod::kSearch};

std::vector<uint8_t> encode(DType t, const std::vector<float>& x, QuantMethod m) {
  std::vector<uint8_t> q(*dtype_bytes(t, x.size()));
  quantize(t, x.data(), int64_t(x.size()), q.data(), m);
  return q;
}

std::vector<float> decode(DType t, const std::vector<uint8_t>& q, size_t n) {
  std::vector<float> y(n);
  dequantize(t, q.data(), int64_t(n), y.data());
  return y;
}

float f16_round(float v) { return fp16_to_fp32(fp32_to_fp16(v)); }

// Blocks of several shapes: Gaussian, uniform, one outlier, all equal, all zero, tiny values.
std::vector<float> test_blocks() {
  std::mt19937 rng(42);
  std::normal_distribution<float> normal(0.0f, 0.02f);
  std::uniform_real_distribution<float> uniform(-1.0f, 3.0f);
  std::vector<float> x;
  for (int b = 0; b < 64; ++b)
    for (int j = 0; j < 32; ++j) x.push_back(normal(rng));
  for (int b = 0; b < 16; ++b)
    for (int j = 0; j < 32; ++j) x.push_back(uniform(rng));
  for (int b = 0; b < 8; ++b)
    for (int j = 0; j < 32; ++j) x.push_back(j == b ? (b % 2 ? 5.0f : -5.0f) : normal(rng));
  for (int j = 0; j < 32; ++j) x.push_back(0.75f);
  for (int j = 0; j < 32; ++j) x.push_back(0.0f);
  for (int j = 0; j < 32; ++j) x.push_back(1e-6f * float(j - 16));
  return x;
}

// The round-to-nearest bound per element, derived from the scale the reference picks for the
// block: half a step, plus what storing d (and m) in fp16 moves the decoded value, plus float
// rounding. Q4_0/Q5_0 elements near the opposite extreme may clip by up to a whole step.
TEST(QuantizeReference, ErrorWithinHalfStep) {
  const std::vector<float> x = test_blocks();
  for (DType t : kQuantTypes) {
    const std::vector<float> y = decode(t, encode(t, x, QuantMethod::kReference), x.size());
    for (size_t b = 0; b < x.size() / 32; ++b) {
      const float* xb = &x[b * 32];
      float lo = xb[0], hi = xb[0], amax = 0, peak = 0;
      for (int j = 0; j < 32; ++j) {
        lo = std::min(lo, xb[j]);
        hi = std::max(hi, xb[j]);
        if (amax < std::fabs(xb[j])) {
          amax = std::fabs(xb[j]);
          peak = xb[j];
        }
      }
      for (int j = 0; j < 32; ++j) {
        double bound;
        if (t == DType::Q8_0) {
          const float d = amax / 127;
          bound = d / 2 + 127 * std::fabs(d - f16_round(d));
        } else if (t == DType::Q4_1 || t == DType::Q5_1) {
          const int nmax = t == DType::Q4_1 ? 15 : 31;
          const float d = (hi - lo) / float(nmax);
          bound = d / 2 + nmax * std::fabs(d - f16_round(d)) + std::fabs(lo - f16_round(lo));
        } else {
          const int zero = t == DType::Q4_0 ? 8 : 16;
          const float d = std::fabs(peak) / float(zero);
          const bool near_far_extreme = xb[j] * peak < 0 && std::fabs(xb[j]) / d > zero - 1.5f;
          bound = (near_far_extreme ? d : d / 2) + zero * std::fabs(d - f16_round(d));
        }
        bound += 1e-6 * amax + 1e-30;
        ASSERT_LE(std::fabs(double(xb[j]) - y[b * 32 + j]), bound)
            << dtype_name(t) << " block " << b << " element " << j << " x=" << xb[j];
      }
    }
  }
}

// Values already on a grid (an fp16 scale, dyadic offsets, the extreme levels present so the
// reference derives the same scale) come back exactly, from both methods.
TEST(Quantize, ValuesOnTheGridRoundTripExactly) {
  for (DType t : kQuantTypes) {
    const bool offset = t == DType::Q4_1 || t == DType::Q5_1;
    const int levels = t == DType::Q8_0 ? 255 : (t == DType::Q4_0 || t == DType::Q4_1) ? 16 : 32;
    const int zero = t == DType::Q8_0 ? 127 : offset ? 0 : levels / 2;
    std::vector<float> x;
    for (int b = 0; b < 4; ++b) {
      const float d = std::ldexp(1.0f, -7 - b) * (b % 2 ? -1.0f : 1.0f) * (offset ? -1.0f : 1.0f);
      const float dd = offset ? std::fabs(d) : d;
      const float m = offset ? -0.25f * float(b) : 0.0f;
      for (int j = 0; j < 32; ++j) {
        // Level 0 first (the extreme that defines the scale), the top level, then a spread.
        const int u = j == 0 ? 0 : j == 1 ? levels - 1 : (j * 7 + b) % levels;
        const int q = t == DType::Q8_0 ? (j == 0   ? -127
                                          : j == 1 ? 127
                                                   : (j * 7 + b) % 255 - 127)
                                       : u - zero;
        x.push_back(float(q) * dd + m);
      }
    }
    for (QuantMethod method : kMethods) {
      const std::vector<float> y = decode(t, encode(t, x, method), x.size());
      for (size_t i = 0; i < x.size(); ++i)
        ASSERT_EQ(y[i], x[i]) << dtype_name(t) << " element " << i;
    }
  }
}

TEST(Quantize, ZeroBlocksDecodeToZero) {
  const std::vector<float> x(64, 0.0f);
  for (DType t : kQuantTypes)
    for (QuantMethod method : kMethods)
      for (float v : decode(t, encode(t, x, method), x.size())) ASSERT_EQ(v, 0.0f);
}

// The search keeps the reference block unless it decodes with a smaller squared error, so per
// block it is never worse, and over realistic data it is clearly better.
TEST(QuantizeSearch, NeverWorseThanReferencePerBlock) {
  const std::vector<float> x = test_blocks();
  for (DType t : kQuantTypes) {
    const auto ref = encode(t, x, QuantMethod::kReference);
    const auto srch = encode(t, x, QuantMethod::kSearch);
    const int64_t bb = dtype_info(t).block_bytes;
    double total_ref = 0, total_search = 0;
    for (size_t b = 0; b < x.size() / 32; ++b) {
      const double e_ref = quantization_sse(t, &x[b * 32], 32, ref.data() + b * bb);
      const double e_search = quantization_sse(t, &x[b * 32], 32, srch.data() + b * bb);
      ASSERT_LE(e_search, e_ref) << dtype_name(t) << " block " << b;
      if (b < 64) {  // the Gaussian blocks, shaped like real weights
        total_ref += e_ref;
        total_search += e_search;
      }
    }
    EXPECT_LT(total_search, 0.97 * total_ref) << dtype_name(t);
  }
}

// The layout written is the one the decoder reads: a hand-made Q5_1 block with every level.
TEST(QuantizeReference, Q5_1Layout) {
  std::vector<float> x(32);
  for (int j = 0; j < 32; ++j) x[j] = 1.0f + 0.5f * float((j * 13) % 32);
  const auto q = encode(DType::Q5_1, x, QuantMethod::kReference);
  uint16_t d, m;
  uint32_t qh;
  std::memcpy(&d, &q[0], 2);
  std::memcpy(&m, &q[2], 2);
  std::memcpy(&qh, &q[4], 4);
  EXPECT_EQ(fp16_to_fp32(d), 0.5f);
  EXPECT_EQ(fp16_to_fp32(m), 1.0f);
  for (int j = 0; j < 32; ++j) {
    const int level = (j * 13) % 32;
    const int nibble = j < 16 ? q[8 + j] & 0xf : q[8 + j - 16] >> 4;
    EXPECT_EQ(nibble | int((qh >> j) & 1) << 4, level) << j;
  }
}

TEST(Quantize, PlainTypesRoundToNearest) {
  const std::vector<float> x = {1.0f, -2.5f, 3.14159f, 1e-8f, 65504.0f, -0.0f, 1.00390625f};
  const auto h = encode(DType::F16, x, QuantMethod::kReference);
  const auto b = encode(DType::BF16, x, QuantMethod::kReference);
  const auto f = encode(DType::F32, x, QuantMethod::kReference);
  for (size_t i = 0; i < x.size(); ++i) {
    uint16_t hv, bv;
    float fv;
    std::memcpy(&hv, &h[2 * i], 2);
    std::memcpy(&bv, &b[2 * i], 2);
    std::memcpy(&fv, &f[4 * i], 4);
    EXPECT_EQ(hv, fp32_to_fp16(x[i]));
    EXPECT_EQ(bv, fp32_to_bf16(x[i]));
    EXPECT_EQ(std::memcmp(&fv, &x[i], 4), 0);
  }
}

}  // namespace
}  // namespace rwkv

namespace rwkv {
namespace {

// I8, int8 per row: scale max|x| / 127, every value within half a step, the extreme exact up to
// the float rounding of the scale, ties to even, and an all-zero row with scale 0.
TEST(QuantizeI8, RowsRoundToNearestOnTheirOwnScale) {
  const std::vector<float> blocks = test_blocks();
  const int64_t cols = 64, rows = int64_t(blocks.size()) / cols;
  std::vector<int8_t> q(blocks.size());
  std::vector<float> scale(static_cast<size_t>(rows));
  quantize_rows_i8(blocks.data(), rows, cols, q.data(), scale.data());
  for (int64_t r = 0; r < rows; ++r) {
    float amax = 0;
    for (int64_t c = 0; c < cols; ++c)
      amax = std::max(amax, std::fabs(blocks[size_t(r * cols + c)]));
    ASSERT_EQ(scale[size_t(r)], amax / 127.0f) << r;
    for (int64_t c = 0; c < cols; ++c) {
      const size_t i = size_t(r * cols + c);
      ASSERT_LE(std::abs(int(q[i])), 127);
      ASSERT_LE(std::fabs(blocks[i] - float(q[i]) * scale[size_t(r)]),
                0.5f * scale[size_t(r)] * (1 + 1e-5f))
          << r << " " << c;
      if (std::fabs(blocks[i]) == amax && amax > 0) {
        ASSERT_EQ(std::abs(int(q[i])), 127);
      }
    }
  }
  const float x[32] = {127.0f, 0.5f, 1.5f, 2.5f, -2.5f, -0.5f};  // scale 1; the rest zeros
  int8_t y[32];
  float s = 0;
  quantize_rows_i8(x, 1, 32, y, &s);
  EXPECT_EQ(s, 1.0f);
  EXPECT_EQ(std::vector<int>(y, y + 6), (std::vector<int>{127, 0, 2, 2, -2, 0}));
  const float zeros[32] = {};
  quantize_rows_i8(zeros, 1, 32, y, &s);
  EXPECT_EQ(s, 0.0f);
  EXPECT_EQ(std::count(y, y + 32, 0), 32);
}

}  // namespace
}  // namespace rwkv
