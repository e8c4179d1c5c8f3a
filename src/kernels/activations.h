// Elementwise exp and sigmoid over arrays, vectorized for each ISA level (GCC target_clones):
// the per-channel decays and gates of a token cost a scalar libm call each otherwise, which
// made them a few percent of generation. Every element goes through the same vector code
// (a short tail is padded), so a value's result does not depend on its position or on how
// many tokens are in the call. Within about 1.5 ulp of float32 exp and sigmoid; arguments
// beyond +-87.3 saturate (exp to e^+-87.3, so sigmoid to 1 or about 1e-38, never inf or NaN).
#pragma once

#include <cstdint>

namespace rwkv::kernels {

void exp_of(const float* x, float* y, int64_t n);      // y = exp(x)
void sigmoid_of(const float* x, float* y, int64_t n);  // y = 1 / (1 + exp(-x))
void silu_of(const float* x, float* y, int64_t n);     // y = x * sigmoid(x)
// y = max(x, 0)^2 (0 for NaN), the channel mixes' activation, without a branch per element
// (a compare and jump per value mispredicted on about half of them).
void relu_squared_of(const float* x, float* y, int64_t n);

// Index of the first largest of x[0, n) (a NaN is never the largest; 0 when every one is NaN):
// greedy decoding's pick, vectorized (std::max_element took 190 us over 65536 logits).
int64_t argmax(const float* x, int64_t n);
// y = exp(x - shift) as exp_of's, exactly 0 where x - shift <= -87 (a banned token's -inf among
// them), and their sum in double: a softmax's numerators and denominator, shift = the largest x.
double softmax_numerators_of(const float* x, int64_t n, float shift, float* y);
// That sum alone (a log-softmax's denominator).
double sum_exp(const float* x, int64_t n, float shift);

}  // namespace rwkv::kernels
