#include "kernels/half_table.h"

#include "core/dtype.h"

namespace rwkv::kernels {
namespace {

constexpr std::array<float, 65536> make_table() {
  std::array<float, 65536> t{};
  for (uint32_t h = 0; h < 65536; ++h) t[h] = fp16_to_fp32(uint16_t(h));
  return t;
}

}  // namespace

alignas(64) constinit const std::array<float, 65536> kHalfToFloat = make_table();

}  // namespace rwkv::kernels
