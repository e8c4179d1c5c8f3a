// A non-owning view of one stored tensor: element type, PyTorch-order shape and its bytes.
// Matrices are row-major with shape (rows, cols); quantized blocks run along a row.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "core/dtype.h"

namespace rwkv {

struct Tensor {
  DType dtype = DType::F32;
  std::vector<int64_t> shape;  // PyTorch order, outermost first
  const uint8_t* data = nullptr;
  uint64_t nbytes = 0;
  // For ggml block types: kernels::linear() rounds the activations to int8 per 32-block and
  // multiplies with integer dot products (LoadOptions::int8_activations; kernels/int8.h).
  bool int8_activations = false;
  // For int8_activations on AVX-512 VNNI: the rows repacked once at load into the kernel's
  // 16-row groups (kernels::pack_int8_groups), or null (the kernel then packs as it goes).
  const uint8_t* int8_groups = nullptr;
  // For I8: one float32 per row; element (r, c) is row_scale[r] * int8 value (r, c).
  const float* row_scale = nullptr;
  // For kernels::matmul() weights (x @ W): `shape` is W's (I, O) but the bytes hold W's
  // transpose, (O, I) row-major (kernels::transpose_for_matmul), so one token streams it row by
  // row. An I8 row_scale still scales row i of W (input i).
  bool transposed = false;

  int64_t numel() const {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    return n;
  }
  // The last axis is the row; everything before it counts rows.
  int64_t cols() const { return shape.empty() ? 1 : shape.back(); }
  int64_t rows() const { return cols() == 0 ? 0 : numel() / cols(); }
  uint64_t row_bytes() const { return *dtype_bytes(dtype, uint64_t(cols())); }
  const uint8_t* row(int64_t r) const { return data + uint64_t(r) * row_bytes(); }
};

std::string shape_string(const std::vector<int64_t>& shape);  // "(3, 4)"

}  // namespace rwkv

namespace rwkv {

// Rows [begin, begin + count) of a tensor viewed as (rows, cols), as a (count, cols) tensor.
inline Tensor slice_rows(const Tensor& t, int64_t begin, int64_t count) {
  Tensor out;
  out.dtype = t.dtype;
  out.shape = {count, t.cols()};
  out.data = t.row(begin);
  out.nbytes = uint64_t(count) * t.row_bytes();
  out.int8_activations = t.int8_activations;
  out.row_scale = t.row_scale ? t.row_scale + begin : nullptr;
  // Packed groups start every 16 rows (16 rows' bytes each).
  out.int8_groups =
      t.int8_groups && begin % 16 == 0 ? t.int8_groups + uint64_t(begin) * t.row_bytes() : nullptr;
  return out;
}

}  // namespace rwkv
