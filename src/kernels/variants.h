// The per-ISA building blocks behind kernels.h. Each variant implements the same two functions;
// the scalar one is the specification the others are tested against.
#pragma once

#include <cstdint>

#include "core/tensor.h"

namespace rwkv::kernels {

#define RWKV_KERNEL_VARIANT_FUNCTIONS                                                             \
  /* y[t][r] = dot(w row r, x row t) for rows [r0, r1) and all T tokens; y is (T, w.rows()). */   \
  void linear_rows(const Tensor& w, const float* x, int64_t T, float* y, int64_t r0, int64_t r1); \
  /* y[t][c] = sum over i in order of x[t][i] * w[i][c], for columns [c0, c1) and all T tokens;   \
     x is (T, ldx) (its first w.rows() columns are read), y is (T, w.cols()). For block types c0  \
     is a multiple of 32. */                                                                      \
  void matmul_cols(const float* x, int64_t ldx, int64_t T, const Tensor& w, float* y, int64_t c0, \
                   int64_t c1);

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
