// Element types of stored weights: plain floats and ggml-compatible quantized blocks.
// A quantized type packs `block_elems` weights into `block_bytes` bytes along a row.
#pragma once

#include <bit>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>

namespace rwkv {

// I8 is int8 per output channel: each row's values times that row's float32 scale, which lives
// beside the data (Tensor::row_scale; `<name>_scale` in a safetensors file).
enum class DType : uint8_t { F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, I8 };

struct DTypeInfo {
  std::string_view name;
  int64_t block_elems;  // 1 for plain types, 32 for ggml blocks
  int64_t block_bytes;
};

const DTypeInfo& dtype_info(DType t);
inline std::string_view dtype_name(DType t) { return dtype_info(t).name; }
std::optional<DType> dtype_from_name(std::string_view name);
// The ggml block types (Q4_0 ... Q8_0).
inline bool is_quantized(DType t) { return dtype_info(t).block_elems > 1; }
// Integer types stored with scales: the block types and I8.
inline bool is_integer(DType t) { return is_quantized(t) || t == DType::I8; }

// Bytes taken by `n` elements, or nullopt if `n` is not a whole number of blocks.
std::optional<uint64_t> dtype_bytes(DType t, uint64_t n);

// Exact (every fp16 is a float32); constexpr so that kernels can tabulate it at compile time.
constexpr float fp16_to_fp32(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, mant = h & 0x3ff;
  if (exp == 0) {
    const float f = float(mant) * (1.0f / 16777216.0f);  // zero or subnormal: mant * 2^-24
    return sign ? -f : f;
  }
  if (exp == 31) return std::bit_cast<float>(sign | 0x7f800000u | (mant << 13));
  return std::bit_cast<float>(sign | ((exp + 112) << 23) | (mant << 13));
}
uint16_t fp32_to_fp16(float f);
inline float bf16_to_fp32(uint16_t b) {
  uint32_t u = uint32_t(b) << 16;
  float f;
  __builtin_memcpy(&f, &u, 4);
  return f;
}
uint16_t fp32_to_bf16(float f);  // round to nearest even, as torch does

}  // namespace rwkv
