// Reference decoding of every stored element type against hand-built blocks with known values.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <vector>

#include "core/dtype.h"
#include "core/quant.h"

namespace rwkv {
namespace {

void put_f16(std::vector<uint8_t>& b, float v) {
  uint16_t h = fp32_to_fp16(v);
  b.push_back(uint8_t(h & 0xff));
  b.push_back(uint8_t(h >> 8));
}
void put_u32(std::vector<uint8_t>& b, uint32_t v) {
  for (int i = 0; i < 4; ++i) b.push_back(uint8_t(v >> (8 * i)));
}

// Quantized values q[0..31]: element j and j+16 share nibble byte j (low, high).
std::vector<uint8_t> nibbles(const int* q) {
  std::vector<uint8_t> b;
  for (int j = 0; j < 16; ++j) b.push_back(uint8_t((q[j] & 0xf) | ((q[j + 16] & 0xf) << 4)));
  return b;
}

struct Block {
  int q[32];
  Block() {
    for (int j = 0; j < 32; ++j) q[j] = (j * 7 + 3) % 32;  // all 5-bit values, bit 4 varies
  }
};

TEST(Quant, Q4_0) {
  Block blk;
  for (int& v : blk.q) v &= 0xf;
  std::vector<uint8_t> b;
  put_f16(b, 0.5f);
  auto n = nibbles(blk.q);
  b.insert(b.end(), n.begin(), n.end());
  ASSERT_EQ(b.size(), size_t(dtype_info(DType::Q4_0).block_bytes));
  float y[32];
  dequantize(DType::Q4_0, b.data(), 32, y);
  for (int j = 0; j < 32; ++j) EXPECT_FLOAT_EQ(y[j], float(blk.q[j] - 8) * 0.5f) << j;
}

TEST(Quant, Q4_1) {
  Block blk;
  for (int& v : blk.q) v &= 0xf;
  std::vector<uint8_t> b;
  put_f16(b, 0.25f);
  put_f16(b, -1.5f);
  auto n = nibbles(blk.q);
  b.insert(b.end(), n.begin(), n.end());
  ASSERT_EQ(b.size(), size_t(dtype_info(DType::Q4_1).block_bytes));
  float y[32];
  dequantize(DType::Q4_1, b.data(), 32, y);
  for (int j = 0; j < 32; ++j) EXPECT_FLOAT_EQ(y[j], float(blk.q[j]) * 0.25f - 1.5f) << j;
}

uint32_t high_bits(const int* q) {
  uint32_t qh = 0;
  for (int j = 0; j < 32; ++j) qh |= uint32_t((q[j] >> 4) & 1) << j;
  return qh;
}

TEST(Quant, Q5_0) {
  Block blk;
  std::vector<uint8_t> b;
  put_f16(b, 0.125f);
  put_u32(b, high_bits(blk.q));
  auto n = nibbles(blk.q);
  b.insert(b.end(), n.begin(), n.end());
  ASSERT_EQ(b.size(), size_t(dtype_info(DType::Q5_0).block_bytes));
  float y[32];
  dequantize(DType::Q5_0, b.data(), 32, y);
  for (int j = 0; j < 32; ++j) EXPECT_FLOAT_EQ(y[j], float(blk.q[j] - 16) * 0.125f) << j;
}

TEST(Quant, Q5_1) {
  Block blk;
  std::vector<uint8_t> b;
  put_f16(b, 2.0f);
  put_f16(b, 0.5f);
  put_u32(b, high_bits(blk.q));
  auto n = nibbles(blk.q);
  b.insert(b.end(), n.begin(), n.end());
  ASSERT_EQ(b.size(), size_t(dtype_info(DType::Q5_1).block_bytes));
  float y[32];
  dequantize(DType::Q5_1, b.data(), 32, y);
  for (int j = 0; j < 32; ++j) EXPECT_FLOAT_EQ(y[j], float(blk.q[j]) * 2.0f + 0.5f) << j;
}

TEST(Quant, Q8_0) {
  std::vector<uint8_t> b;
  put_f16(b, 0.01f);
  for (int j = 0; j < 32; ++j) b.push_back(uint8_t(int8_t(j * 8 - 128)));
  ASSERT_EQ(b.size(), size_t(dtype_info(DType::Q8_0).block_bytes));
  float y[32];
  dequantize(DType::Q8_0, b.data(), 32, y);
  const float d = fp16_to_fp32(fp32_to_fp16(0.01f));
  for (int j = 0; j < 32; ++j) EXPECT_FLOAT_EQ(y[j], float(j * 8 - 128) * d) << j;
}

TEST(Quant, HalfAndBfloatConversions) {
  EXPECT_EQ(fp32_to_fp16(1.0f), 0x3c00);
  EXPECT_EQ(fp32_to_fp16(-2.0f), 0xc000);
  EXPECT_EQ(fp32_to_fp16(65504.0f), 0x7bff);
  EXPECT_EQ(fp32_to_fp16(1e6f), 0x7c00);
  EXPECT_EQ(fp16_to_fp32(0x0001), std::ldexp(1.0f, -24));  // smallest subnormal
  EXPECT_TRUE(std::isnan(fp16_to_fp32(0x7e00)));
  for (uint32_t h = 0; h < 0x7c00; ++h)  // every finite half survives a round trip
    ASSERT_EQ(fp32_to_fp16(fp16_to_fp32(uint16_t(h))), h);
  EXPECT_EQ(fp32_to_bf16(1.0f), 0x3f80);
  EXPECT_EQ(bf16_to_fp32(0x3f80), 1.0f);
  EXPECT_EQ(fp32_to_bf16(1.00390625f), 0x3f80);  // ties round to even
  EXPECT_EQ(fp32_to_bf16(1.01171875f), 0x3f82);
  uint16_t bf[2] = {0x3f80, 0xc000};
  float y[2];
  dequantize(DType::BF16, reinterpret_cast<uint8_t*>(bf), 2, y);
  EXPECT_EQ(y[0], 1.0f);
  EXPECT_EQ(y[1], -2.0f);
}

}  // namespace
}  // namespace rwkv
