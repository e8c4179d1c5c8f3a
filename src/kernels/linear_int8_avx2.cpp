// AVX2 kernel of linear() with int8 activations (kernels/int8.h), for CPUs without AVX-512
// VNNI: one block (32 bytes) per 256-bit vector. vpmaddubsw multiplies unsigned by signed bytes
// into 16-bit pairs and vpmaddwd sums those into the same four-byte lanes vpdpbusd fills, so each
// lane holds the same exact integer. The pairs are 16-bit: nibble levels (at most 31 x 127 x 2)
// fit, Q8_0's do not as unsigned, so Q8_0 multiplies |w| by q with w's sign (ggml's trick) and
// needs no zero-level correction.
// Headers come before the target pragma so that no inline function they define is compiled
// for this ISA and then shared with code that runs on any CPU.
#include <immintrin.h>

#include <cstring>

#include "core/quant.h"
#include "kernels/int8.h"

#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma,f16c"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c")
#endif

namespace rwkv::kernels::avx2 {

namespace {

template <DType kType>
constexpr bool kHasMin = kType == DType::Q4_1 || kType == DType::Q5_1;
template <DType kType>
constexpr bool kFiveBit = kType == DType::Q5_0 || kType == DType::Q5_1;
template <DType kType>
constexpr int64_t kBlockBytes = kType == DType::Q4_0   ? 18
                                : kType == DType::Q4_1 ? 20
                                : kType == DType::Q5_0 ? 22
                                : kType == DType::Q5_1 ? 24
                                                       : 34;

inline float half(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return _cvtsh_ss(h);
}

inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// The 8 lane sums of one block against the 32 q of `xq`, as exact integers: sum over the lane's
// four elements of (level - zero) * q.
template <DType kType>
inline __m256i block_lanes(const uint8_t* b, const int8_t* xq, const int32_t* lane_bias) {
  const __m256i q = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq));
  const __m256i ones = _mm256_set1_epi16(1);
  if constexpr (kType == DType::Q8_0) {
    const __m256i w = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + 2));
    const __m256i pairs = _mm256_maddubs_epi16(_mm256_sign_epi8(w, w), _mm256_sign_epi8(q, w));
    return _mm256_madd_epi16(pairs, ones);
  } else {
    constexpr int kNibbles = (kHasMin<kType> ? 4 : 2) + (kFiveBit<kType> ? 4 : 0);
    const __m128i n = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b + kNibbles));
    const __m128i low4 = _mm_set1_epi8(0x0f);
    __m256i levels =
        _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(n, 4), low4), _mm_and_si128(n, low4));
    if constexpr (kFiveBit<kType>) {
      // Byte i gets 16 where bit i of qh is set: spread the four qh bytes over their 8 bytes
      // each, keep each byte's own bit, compare.
      uint32_t qh;
      std::memcpy(&qh, b + kNibbles - 4, 4);
      const __m256i spread = _mm256_shuffle_epi8(
          _mm256_set1_epi32(int(qh)),
          _mm256_set_epi64x(0x0303030303030303, 0x0202020202020202, 0x0101010101010101, 0));
      const __m256i bit = _mm256_set1_epi64x(int64_t(0x8040201008040201));
      const __m256i set = _mm256_cmpeq_epi8(_mm256_and_si256(spread, bit), bit);
      levels = _mm256_or_si256(levels, _mm256_and_si256(set, _mm256_set1_epi8(16)));
    }
    const __m256i pairs = _mm256_maddubs_epi16(levels, q);
    return _mm256_add_epi32(_mm256_madd_epi16(pairs, ones),
                            _mm256_loadu_si256(reinterpret_cast<const __m256i*>(lane_bias)));
  }
}

// One token against one weight row: blocks alternate between two accumulators, each lane
// scaled by d_w * d_x in float32 (plus m_w * d_x * sum q for Q4_1/Q5_1).
template <DType kType>
inline float row_dot(const uint8_t* row, const Int8Activations& x, int64_t t) {
  const int64_t blocks = x.K / 32;
  const int8_t* q = x.row_q(t);
  const float* lane_scale = x.row_lane_scale(t);
  const int32_t* lane_bias = x.row_lane_bias(t);
  const float* lane_qsum = x.row_lane_qsum(t);
  const auto step = [&](int64_t b, __m256 a) {
    const uint8_t* blk = row + b * kBlockBytes<kType>;
    const __m256i lanes = block_lanes<kType>(blk, q + 32 * b, lane_bias + 8 * b);
    const __m256 scale =
        _mm256_mul_ps(_mm256_set1_ps(half(blk)), _mm256_loadu_ps(lane_scale + 8 * b));
    a = _mm256_fmadd_ps(_mm256_cvtepi32_ps(lanes), scale, a);
    if constexpr (kHasMin<kType>)
      a = _mm256_fmadd_ps(_mm256_set1_ps(half(blk + 2)), _mm256_loadu_ps(lane_qsum + 8 * b), a);
    return a;
  };
  __m256 even = _mm256_setzero_ps(), odd = _mm256_setzero_ps();
  int64_t b = 0;
  for (; b + 2 <= blocks; b += 2) {
    even = step(b, even);
    odd = step(b + 1, odd);
  }
  if (b < blocks) even = step(b, even);
  return hsum(_mm256_add_ps(even, odd));
}

template <DType kType>
void rows_int8(const Tensor& w, const Int8Activations& x, float* y, int64_t r0, int64_t r1) {
  const int64_t O = w.rows();
  const uint64_t row_bytes = w.row_bytes();
  for (int64_t r = r0; r < r1; ++r)
    for (int64_t t = 0; t < x.T; ++t)
      y[t * O + r] = row_dot<kType>(w.data + uint64_t(r) * row_bytes, x, t);
}

}  // namespace

void linear_rows_int8(const Tensor& w, const Int8Activations& x, float* y, int64_t r0, int64_t r1) {
  switch (w.dtype) {
    case DType::Q4_0:
      return rows_int8<DType::Q4_0>(w, x, y, r0, r1);
    case DType::Q4_1:
      return rows_int8<DType::Q4_1>(w, x, y, r0, r1);
    case DType::Q5_0:
      return rows_int8<DType::Q5_0>(w, x, y, r0, r1);
    case DType::Q5_1:
      return rows_int8<DType::Q5_1>(w, x, y, r0, r1);
    case DType::Q8_0:
      return rows_int8<DType::Q8_0>(w, x, y, r0, r1);
    default:
      return;  // plain floats never take the int8 path
  }
}

}  // namespace rwkv::kernels::avx2

#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif
