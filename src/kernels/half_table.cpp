#include "kernels/half_table.h"

#include <bit>

namespace rwkv::kernels {
namespace {

// The same conversion as fp16_to_fp32() (core/dtype.cpp), evaluated at compile time.
constexpr float half_to_float(uint32_t h) {
  const uint32_t sign = (h & 0x8000) << 16, exp = (h >> 10) & 0x1f, mant = h & 0x3ff;
  if (exp == 0) {
    const float f = float(mant) * (1.0f / 16777216.0f);  // subnormal: mant * 2^-24, exact
    return sign ? -f : f;
  }
  if (exp == 31) return std::bit_cast<float>(sign | 0x7f800000u | (mant << 13));
  return std::bit_cast<float>(sign | ((exp + 112) << 23) | (mant << 13));
}

constexpr std::array<float, 65536> make_table() {
  std::array<float, 65536> t{};
  for (uint32_t h = 0; h < 65536; ++h) t[h] = half_to_float(h);
  return t;
}

}  // namespace

alignas(64) constinit const std::array<float, 65536> kHalfToFloat = make_table();

}  // namespace rwkv::kernels
