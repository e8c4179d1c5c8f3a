// AVX-512 VNNI kernel of linear() with int8 activations (kernels/int8.h). Weight levels are
// unpacked to unsigned bytes and meet the int8 activations in vpdpbusd (64 products per
// instruction), starting from -zero * sum(q), so each block's dot product is an exact integer.
// Outputs are computed 16 rows at a time, one row per lane, from the rows packed in 16-row
// groups (kernels/int8.h): each four-element column of a block is one vector, so one token needs
// no shuffles or reductions, and each block's integer and its float32 scaling happen once per
// row and token, in the scalar reference's order.
// Headers come before the target pragma so that no inline function they define is compiled
// for this ISA and then shared with code that runs on any CPU.
#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "core/quant.h"
#include "core/simd.h"
#include "kernels/int8.h"
#include "kernels/prefetch.h"

#if defined(__clang__)
#pragma clang attribute push(                                                          \
    __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,fma,f16c"))), \
    apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,fma,f16c")
// GCC 12 flags the deliberately undefined pass-through lanes inside its own AVX-512 intrinsics
// (GCC bug 105593) wherever they are inlined.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

// Needs the ISA, so after the pragma (its helpers have internal linkage).
#include "kernels/avx512_util.h"
#include "kernels/int8_groups_avx512.h"

namespace rwkv::kernels::vnni {

namespace {

// TT tokens (one to kTokensAtOnce, from t0) against one group: each block is unpacked once, in
// registers, for all of them. Every output is a chain over the blocks in order,
// sum = fma(S, d_w * d_x, sum) (then fma(m_w, d_x * sum q, sum) for Q4_1/Q5_1): the scalar
// reference's arithmetic, so this kernel equals it bit for bit whatever the tokens it runs
// with. n: the group's rows that exist.
template <DType kType, int TT>
void few_tokens_group(const uint8_t* group, const Int8Activations& x, int64_t t0, float* y,
                      int64_t ldy, int64_t n) {
  const int64_t blocks = x.K / 32, q_stride = x.pairs * 64;
  // Token t0's activations; token t0 + t's lie t strides on.
  const int8_t* q = x.row_q(t0);
  const float* scale = x.scale.data() + t0 * blocks;
  const float* qsum = x.block_qsum.data() + t0 * blocks;
  const int32_t* bias = x.block_bias.data() + t0 * blocks;
  __m512 sum[TT];
  RWKV_UNROLL
  for (int t = 0; t < TT; ++t) sum[t] = _mm512_setzero_ps();
  for (int64_t b = 0; b < blocks; ++b) {
    const uint8_t* ahead = group + b * kGroupBlockBytes<kType> + kPrefetchBytes;
    RWKV_UNROLL
    for (int64_t at = 0; at < kGroupBlockBytes<kType>; at += 64) prefetch_streamed(ahead + at);
    const GroupBlock<kType> block(group, b);
    RWKV_UNROLL
    for (int t = 0; t < TT; ++t)
      sum[t] = chain_step<kType>(sum[t], block.dot(q + t * q_stride + 32 * b, bias[t * blocks + b]),
                                 block.d, block.m, scale[t * blocks + b],
                                 kHasMin<kType> ? qsum[t * blocks + b] : 0.0f);
  }
  RWKV_UNROLL
  for (int t = 0; t < TT; ++t) store_group(y + t * ldy, sum[t], n);
}

// Tokens per pass over a group. One token streams each group from DRAM; more tokens take it in
// passes of up to eight, the group (18-35 KB) staying in L1 after the first. Unpacking each
// group block again per pass measured faster at every T than unpacking the groups once into a
// panel that every token reread from L2 (that panel: 2 tokens 3.6x one token's time, 512
// tokens -7-9%).
constexpr int64_t kTokensAtOnce = 8;

// few_tokens_group() for `tokens` (1 to kTokensAtOnce) tokens from t0.
template <DType kType, int TT = 1>
void few_tokens(const uint8_t* group, const Int8Activations& x, int64_t t0, int64_t tokens,
                float* y, int64_t ldy, int64_t n) {
  if constexpr (TT < kTokensAtOnce)
    if (tokens != TT) return few_tokens<kType, TT + 1>(group, x, t0, tokens, y, ldy, n);
  few_tokens_group<kType, TT>(group, x, t0, y + t0 * ldy, ldy, n);
}

// One group at a time: a single sequential stream per thread (two groups interleaved, two
// streams, read 15-20% slower from DRAM).
template <DType kType>
void rows_int8(const Tensor& w, const Int8Activations& x, float* y, int64_t r0, int64_t r1) {
  const int64_t O = w.rows();
  const uint64_t group_bytes = kGroup * w.row_bytes();
  thread_local std::vector<uint8_t> packed;  // for a tensor not packed at load (tests)
  for (int64_t r = r0; r < r1; r += kGroup) {
    const int64_t n = std::min<int64_t>(kGroup, r1 - r), g = r / kGroup;
    const uint8_t* group;
    if (w.int8_groups) {
      group = w.int8_groups + uint64_t(g) * group_bytes;
    } else {
      packed.resize(size_t(group_bytes));
      pack_int8_groups(w, g, g + 1, packed.data());
      group = packed.data();
    }
    for (int64_t t0 = 0; t0 < x.T; t0 += kTokensAtOnce)
      few_tokens<kType>(group, x, t0, std::min(kTokensAtOnce, x.T - t0), y + r, O, n);
  }
}

}  // namespace

void quantize_activations(DType dtype, const float* x, int64_t T, int64_t K, Int8Activations& out) {
  const int64_t blocks = K / 32, pairs = (K + 63) / 64;
  out.reset(dtype, T, K);
  const __m512 sign = _mm512_set1_ps(-0.0f);
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t b = 0; b < blocks; ++b) {
      const float* xb = x + t * K + 32 * b;
      const __m512 x0 = _mm512_loadu_ps(xb), x1 = _mm512_loadu_ps(xb + 16);
      const __m512 m = _mm512_max_ps(_mm512_andnot_ps(sign, x0), _mm512_andnot_ps(sign, x1));
      // The maximum is exact in any order; the rest is the scalar arithmetic lane by lane
      // (cvtps rounds half to even, as nearbyint does in the default mode).
      const float amax = _mm512_reduce_max_ps(m);
      const float d = amax / 127.0f, inv = d > 0 ? 1.0f / d : 0.0f;
      out.scale[size_t(t * blocks + b)] = d;
      const __m512 vinv = _mm512_set1_ps(inv);
      const __m128i q0 = _mm512_cvtepi32_epi8(_mm512_cvtps_epi32(_mm512_mul_ps(x0, vinv)));
      const __m128i q1 = _mm512_cvtepi32_epi8(_mm512_cvtps_epi32(_mm512_mul_ps(x1, vinv)));
      int8_t* qp = out.q.data() + (t * pairs + b / 2) * 64;
      const int j = int(b % 2);
      _mm_storeu_si128(reinterpret_cast<__m128i*>(qp + 32 * j), q0);
      _mm_storeu_si128(reinterpret_cast<__m128i*>(qp + 32 * j + 16), q1);
    }
    // Block terms per pair: vpdpbusd with ones sums each lane's four q, and the lanes of each
    // block are summed (integers, so in any order).
    const float* scale = out.scale.data() + t * blocks;
    for (int64_t p = 0; p < pairs; ++p) {
      const __m512i q = _mm512_loadu_si512(out.q.data() + (t * pairs + p) * 64);
      const __m512i sum = _mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_set1_epi8(1), q);
      for (int64_t b = 2 * p; b < std::min(blocks, 2 * p + 2); ++b) {
        const int qsum = _mm512_mask_reduce_add_epi32(__mmask16(b % 2 ? 0xff00 : 0x00ff), sum);
        out.block_bias[size_t(t * blocks + b)] = -block_zero_level(dtype) * qsum;
        out.block_qsum[size_t(t * blocks + b)] = scale[b] * float(qsum);
      }
    }
  }
}

void linear_rows_int8(const Tensor& w, const Int8Activations& x, float* y, int64_t r0, int64_t r1) {
  with_block_type(w.dtype, [&](auto type) { rows_int8<type.value>(w, x, y, r0, r1); });
}

}  // namespace rwkv::kernels::vnni

#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC diagnostic pop
#pragma GCC pop_options
#endif
