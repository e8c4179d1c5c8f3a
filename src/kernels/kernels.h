// Model-agnostic math used by every RWKV version. This is the scalar reference; SIMD variants
// will sit behind the same functions. Shapes use PyTorch order: a matrix is (rows, cols).
#pragma once

#include <cmath>
#include <cstdint>

#include "core/tensor.h"

namespace rwkv::kernels {

// y[r] = sum_c w[r][c] * x[c] for w of shape (R, C): a Linear layer's `W x`. Any stored dtype.
void matvec(const Tensor& w, const float* x, float* y);
// y[c] = sum_r x[r] * w[r][c] for w of shape (R, C): the reference's `x @ W` for LoRA matrices.
void vecmat(const float* x, const Tensor& w, float* y);

// LayerNorm over n values (population variance), then the affine `weight`, `bias`.
void layer_norm(const float* x, const float* weight, const float* bias, int64_t n, float eps,
                float* y);
// GroupNorm with one group per head of `group_size` channels, then the per-channel affine.
void group_norm(const float* x, const float* weight, const float* bias, int64_t n_groups,
                int64_t group_size, float eps, float* y);

inline float sigmoid(float x) { return 1.0f / (1.0f + std::exp(-x)); }

}  // namespace rwkv::kernels
