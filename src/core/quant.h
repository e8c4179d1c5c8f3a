// Scalar reference decoding of every stored element type (ggml block layouts of rwkv.cpp file
// version 101), and the encoders that write them. SIMD kernels are checked against these.
#pragma once

#include <cstdint>

#include "core/dtype.h"
#include "core/tensor.h"

namespace rwkv {

// Decodes `n` elements (a whole number of blocks for quantized types) starting at `src`. I8
// decodes to the stored integers: its row scales live outside the data (dequantize_rows).
void dequantize(DType dtype, const uint8_t* src, int64_t n, float* dst);
// Decodes rows [r0, r0 + n) of `t` to float32 values, I8 row scales applied.
void dequantize_rows(const Tensor& t, int64_t r0, int64_t n, float* dst);

// One ggml block as stored: unsigned levels and the fp16 scale (and min) widened to float. It
// decodes element j to (level[j] - block_zero_level) * d, or level[j] * d + m for Q4_1/Q5_1.
// Q8_0's int8 values are stored as level = value + 128. I8 is unpacked as 32 values with d = 1
// (its row scale lives in the tensor).
struct BlockLevels {
  int level[32];
  float d = 0, m = 0;
};
BlockLevels unpack_block(DType dtype, const uint8_t* block);
constexpr int block_zero_level(DType t) {
  return t == DType::Q4_0                     ? 8
         : t == DType::Q5_0                   ? 16
         : t == DType::Q8_0 || t == DType::I8 ? 128
                                              : 0;
}

// How quantize() picks each block's scale (and offset, for Q4_1/Q5_1).
enum class QuantMethod {
  // Round to nearest on the grid fixed by the block's extremes, the same arithmetic as ggml's
  // quantize_row_*_reference, so a file matches one written by rwkv.cpp's quantizer byte for
  // byte. Q8_0 and Q4_1/Q5_1: every element is within d/2 of its decoded value (plus the fp16
  // rounding of d and m). Q4_0/Q5_0 put the largest-magnitude element on the extra level of
  // its sign (-8 or -16 times d), so an element of the other sign and nearly the same magnitude
  // clips to the last level on its side and may be off by up to d.
  kReference,
  // Tries a few scales around the reference one (allowing the outermost element to clip), fits
  // the scale (and offset) to the chosen levels by least squares, and keeps whichever block,
  // this or the reference one, decodes with the smaller squared error. Same layout, never a
  // larger squared error per block than kReference (12-17% less over the tiny real models),
  // but measured in KL divergence it was not reliably better (docs/BENCHMARKS.md), so it is
  // opt-in.
  kSearch,
};

// Encodes `n` floats as `dtype` into `dst` (dtype_bytes(dtype, n) bytes); not I8, whose scales
// need rows (quantize_rows_i8). For quantized types
// `n` must be a whole number of blocks; F32/F16/BF16 are plain conversions (round to nearest
// even). Values must be finite and, for quantized types, within the fp16 range.
void quantize(DType dtype, const float* src, int64_t n, uint8_t* dst,
              QuantMethod method = QuantMethod::kReference);

// Encodes `rows` rows of `cols` floats as I8: row r gets scale[r] = max|x| / 127 and int8 values
// round-to-nearest-even(x / scale[r]) at dst + r * cols. (Smaller scales that clip the largest
// values never lowered the squared error on the tiny real models: with 255 levels the clipped
// values cost more than the finer grid saves.)
void quantize_rows_i8(const float* src, int64_t rows, int64_t cols, int8_t* dst, float* scale);

// Sum of squared differences between `n` floats and their encoding `q` of type `dtype`
// (decoded block by block; no allocation beyond one block).
double quantization_sse(DType dtype, const float* src, int64_t n, const uint8_t* q);

}  // namespace rwkv
