// Scalar reference decoding of every stored element type (ggml block layouts of rwkv.cpp file
// version 101). SIMD kernels are checked against these.
#pragma once

#include <cstdint>

#include "core/dtype.h"

namespace rwkv {

// Decodes `n` elements (a whole number of blocks for quantized types) starting at `src`.
void dequantize(DType dtype, const uint8_t* src, int64_t n, float* dst);

}  // namespace rwkv
