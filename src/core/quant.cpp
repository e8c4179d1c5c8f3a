#include "core/quant.h"

#include <cstring>
#include <vector>

namespace rwkv {

namespace {

inline uint16_t load_u16(const uint8_t* p) {
  uint16_t v;
  std::memcpy(&v, p, 2);
  return v;
}

// ggml v101 blocks: elements j and j+16 share byte j of the nibble array (low, high nibble);
// Q5 types take a fifth bit for element i from bit i of the 32-bit `qh`.
void dequantize_block(DType dtype, const uint8_t* b, float* y) {
  switch (dtype) {
    case DType::Q4_0: {
      float d = fp16_to_fp32(load_u16(b));
      const uint8_t* qs = b + 2;
      for (int j = 0; j < 16; ++j) {
        y[j] = float(int(qs[j] & 0xf) - 8) * d;
        y[j + 16] = float(int(qs[j] >> 4) - 8) * d;
      }
      break;
    }
    case DType::Q4_1: {
      float d = fp16_to_fp32(load_u16(b));
      float m = fp16_to_fp32(load_u16(b + 2));
      const uint8_t* qs = b + 4;
      for (int j = 0; j < 16; ++j) {
        y[j] = float(qs[j] & 0xf) * d + m;
        y[j + 16] = float(qs[j] >> 4) * d + m;
      }
      break;
    }
    case DType::Q5_0: {
      float d = fp16_to_fp32(load_u16(b));
      uint32_t qh;
      std::memcpy(&qh, b + 2, 4);
      const uint8_t* qs = b + 6;
      for (int j = 0; j < 16; ++j) {
        int lo = (qs[j] & 0xf) | int((qh >> j) & 1) << 4;
        int hi = (qs[j] >> 4) | int((qh >> (j + 16)) & 1) << 4;
        y[j] = float(lo - 16) * d;
        y[j + 16] = float(hi - 16) * d;
      }
      break;
    }
    case DType::Q5_1: {
      float d = fp16_to_fp32(load_u16(b));
      float m = fp16_to_fp32(load_u16(b + 2));
      uint32_t qh;
      std::memcpy(&qh, b + 4, 4);
      const uint8_t* qs = b + 8;
      for (int j = 0; j < 16; ++j) {
        int lo = (qs[j] & 0xf) | int((qh >> j) & 1) << 4;
        int hi = (qs[j] >> 4) | int((qh >> (j + 16)) & 1) << 4;
        y[j] = float(lo) * d + m;
        y[j + 16] = float(hi) * d + m;
      }
      break;
    }
    case DType::Q8_0: {
      float d = fp16_to_fp32(load_u16(b));
      const int8_t* qs = reinterpret_cast<const int8_t*>(b + 2);
      for (int j = 0; j < 32; ++j) y[j] = float(qs[j]) * d;
      break;
    }
    default:
      break;
  }
}

}  // namespace

void dequantize(DType dtype, const uint8_t* src, int64_t n, float* dst) {
  switch (dtype) {
    case DType::F32:
      std::memcpy(dst, src, size_t(n) * 4);
      return;
    case DType::F16: {
      // Every half has a float32 twin; a 256 KiB table beats the bit manipulation per element.
      static const std::vector<float> table = [] {
        std::vector<float> t(65536);
        for (uint32_t h = 0; h < 65536; ++h) t[h] = fp16_to_fp32(uint16_t(h));
        return t;
      }();
      for (int64_t i = 0; i < n; ++i) dst[i] = table[load_u16(src + 2 * i)];
      return;
    }
    case DType::BF16:
      for (int64_t i = 0; i < n; ++i) dst[i] = bf16_to_fp32(load_u16(src + 2 * i));
      return;
    default: {
      const DTypeInfo& info = dtype_info(dtype);
      for (int64_t i = 0; i < n / info.block_elems; ++i)
        dequantize_block(dtype, src + i * info.block_bytes, dst + i * info.block_elems);
    }
  }
}

}  // namespace rwkv
