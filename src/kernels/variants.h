// The per-ISA building blocks behind kernels.h. Each variant implements the same three functions;
// the scalar one is the specification the others are tested against.
#pragma once

#include <cstdint>

#include "core/tensor.h"

namespace rwkv::kernels {

#define RWKV_KERNEL_VARIANT_FUNCTIONS                                                             \
  /* y[t][r] = dot(w row r, x row t) for rows [r0, r1) and all T tokens; y is (T, w.rows()). */   \
  void linear_rows(const Tensor& w, const float* x, int64_t T, float* y, int64_t r0, int64_t r1); \
  /* Rows [r0, r0 + n) of w decoded to float32, n x cols. */                                      \
  void decode_rows(const Tensor& w, int64_t r0, int64_t n, float* out);                           \
  /* y[t][0..n) += x[t * ldx] * row[0..n) for T rows of y (stride ldy). */                        \
  void axpy_rows(const float* x, int64_t T, int64_t ldx, const float* row, int64_t n, float* y,   \
                 int64_t ldy);

namespace scalar {
RWKV_KERNEL_VARIANT_FUNCTIONS
}
namespace avx2 {
RWKV_KERNEL_VARIANT_FUNCTIONS
}
namespace avx512 {
RWKV_KERNEL_VARIANT_FUNCTIONS
}

#undef RWKV_KERNEL_VARIANT_FUNCTIONS

}  // namespace rwkv::kernels
