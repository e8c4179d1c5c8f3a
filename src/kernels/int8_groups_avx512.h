// The VNNI and AMX kernels' shared view of the packed int8 groups (kernels/int8.h): unpacking a
// block of a group into registers, and the float32 chain each output follows. Include it after
// the file's target pragma (it needs AVX-512 VNNI); everything here has internal linkage.
#pragma once

#include <immintrin.h>

#include <cstring>

#include "core/simd.h"
#include "kernels/int8.h"
#include "kernels/prefetch.h"

namespace rwkv::kernels {
namespace {

// The packed layout (kernels/int8.h) as compile-time facts: bytes of a block of a 16-row group,
// its levels first.
constexpr int kGroup = 16;
template <DType kType>
constexpr bool kByteLevels = kType == DType::Q8_0 || kType == DType::I8;
template <DType kType>
constexpr int64_t kLevelBytes = kGroup*(kByteLevels<kType> ? 32 : 16);
template <DType kType>
constexpr int64_t kGroupBlockBytes = kGroup* kBlockBytes<kType>;
// Where the fifth bits start among a block's scales.
template <DType kType>
constexpr int64_t kFifthBitsAt = kHasMin<kType> ? 64 : 32;

// How far ahead of its reads a kernel prefetches a group it streams: the hardware prefetcher
// alone does not keep a core's stream fed (as in the float kernels; the hint:
// kernels/prefetch.h).
constexpr int64_t kPrefetchBytes = 8192;

// Block b of a group: its eight columns of four elements, a row's unsigned levels in each lane,
// and the rows' d and m.
template <DType kType>
struct GroupBlock {
  __m512i column[8];
  __m512 d, m;

  GroupBlock(const uint8_t* group, int64_t b) {
    const uint8_t* levels = group + b * kGroupBlockBytes<kType>;
    const uint8_t* scales = levels + kLevelBytes<kType>;
    if constexpr (kByteLevels<kType>) {
      RWKV_UNROLL
      for (int c = 0; c < 8; ++c) column[c] = _mm512_loadu_si512(levels + 64 * c);
    } else {
      const __m512i low = _mm512_set1_epi8(0x0f);
      RWKV_UNROLL
      for (int k = 0; k < 4; ++k) {
        const __m512i v = _mm512_loadu_si512(levels + 64 * k);
        column[k] = _mm512_and_si512(v, low);
        column[k + 4] = _mm512_and_si512(_mm512_srli_epi16(v, 4), low);
      }
      if constexpr (kFiveBit<kType>) {
        // Column c's fifth bits are bit c of each byte; tested into a mask (8 mask loads from
        // memory instead, one per column, made the Q5_1 kernel 18% slower in cache).
        const __m512i fifth = _mm512_loadu_si512(scales + kFifthBitsAt<kType>);
        RWKV_UNROLL
        for (int c = 0; c < 8; ++c)
          column[c] = _mm512_mask_add_epi8(
              column[c], _mm512_test_epi8_mask(fifth, _mm512_set1_epi8(char(1 << c))), column[c],
              _mm512_set1_epi8(16));
      }
    }
    if constexpr (kType == DType::I8) {
      d = _mm512_set1_ps(1.0f);  // the row scale is applied to the outputs
    } else {
      d = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(scales)));
    }
    m = kHasMin<kType>
            ? _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(scales + 32)))
            : _mm512_setzero_ps();
  }

  // The exact integer dot products of the block with a token's activation bytes q (this block's
  // 32) and its block bias, one row per lane: two chains of four vpdpbusd, each column meeting
  // its four activation bytes broadcast.
  __m512i dot(const int8_t* q, int32_t bias) const {
    const auto four = [&](int c) {
      int32_t v;
      std::memcpy(&v, q + 4 * c, 4);
      return _mm512_set1_epi32(v);
    };
    __m512i low = _mm512_set1_epi32(bias);
    __m512i high = _mm512_setzero_si512();
    RWKV_UNROLL
    for (int c = 0; c < 4; ++c) {
      low = _mm512_dpbusd_epi32(low, column[c], four(c));
      high = _mm512_dpbusd_epi32(high, column[c + 4], four(c + 4));
    }
    return _mm512_add_epi32(low, high);
  }
};

// sum + a block's term for 16 outputs: S the exact block dot products, d and m the weights',
// scale and qsum the token's for that block.
template <DType kType>
inline __m512 chain_step(__m512 sum, __m512i S, __m512 d, __m512 m, float scale, float qsum) {
  sum = _mm512_fmadd_ps(_mm512_cvtepi32_ps(S), _mm512_mul_ps(d, _mm512_set1_ps(scale)), sum);
  if constexpr (kHasMin<kType>) sum = _mm512_fmadd_ps(m, _mm512_set1_ps(qsum), sum);
  return sum;
}

inline void store_group(float* y, __m512 v, int64_t n) {
  _mm512_mask_storeu_ps(y, __mmask16((1u << n) - 1), v);
}

}  // namespace
}  // namespace rwkv::kernels
