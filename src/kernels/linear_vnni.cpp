// AVX-512 VNNI kernel of linear() with int8 activations (kernels/int8.h). For each pair of
// weight blocks, the levels are unpacked to 64 unsigned bytes in the order of the activation
// layout, and one vpdpbusd per token forms the 16 lane sums of level * q, starting from the
// lane's -zero * sum(q), so each lane holds an exact integer part of the block's dot product.
// The lanes are then scaled by d_w * d_x in float32.
// Headers come before the target pragma so that no inline function they define is compiled
// for this ISA and then shared with code that runs on any CPU.
#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "core/quant.h"
#include "kernels/int8.h"

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

namespace rwkv::kernels::vnni {

namespace {

// The 64 unsigned levels of blocks b0 and b1, in element order.
template <DType kType>
inline __m512i pair_levels(const uint8_t* b0, const uint8_t* b1) {
  if constexpr (kType == DType::Q8_0 || kType == DType::I8) {
    constexpr int kValues = kType == DType::I8 ? 0 : 2;
    const __m512i v = _mm512_inserti64x4(
        _mm512_castsi256_si512(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(b0 + kValues))),
        _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b1 + kValues)), 1);
    return _mm512_xor_si512(v, _mm512_set1_epi8(char(0x80)));  // int8 + 128
  } else {
    // Byte j of a block's 16 holds element j (low nibble) and j + 16 (high nibble): each block's
    // bytes twice, the second copy shifted right by 4, give elements 0-15 then 16-31.
    constexpr int kNibbles = (kHasMin<kType> ? 4 : 2) + (kFiveBit<kType> ? 4 : 0);
    const __m512i twice =
        _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_broadcastsi128_si256(
                               _mm_loadu_si128(reinterpret_cast<const __m128i*>(b0 + kNibbles)))),
                           _mm256_broadcastsi128_si256(
                               _mm_loadu_si128(reinterpret_cast<const __m128i*>(b1 + kNibbles))),
                           1);
    constexpr long long k4 = 0x0004000400040004;  // a shift of 4 for every 16-bit element
    const __m512i shift = _mm512_set_epi64(k4, k4, 0, 0, k4, k4, 0, 0);
    __m512i v = _mm512_and_si512(_mm512_srlv_epi16(twice, shift), _mm512_set1_epi8(0x0f));
    if constexpr (kFiveBit<kType>) {
      // Bit i of qh is the fifth bit of element i.
      uint32_t h0, h1;
      std::memcpy(&h0, b0 + kNibbles - 4, 4);
      std::memcpy(&h1, b1 + kNibbles - 4, 4);
      v = _mm512_mask_add_epi8(v, __mmask64(uint64_t(h0) | uint64_t(h1) << 32), v,
                               _mm512_set1_epi8(16));
    }
    return v;
  }
}

// Per-lane d (and m) of the pair's two blocks: lanes 0-7 block 0, 8-15 block 1.
template <DType kType>
inline void pair_scales(const uint8_t* b0, const uint8_t* b1, __m512& d, __m512& m) {
  const __m512i block_of_lane = _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1);
  if constexpr (kType == DType::I8) {
    // d = 1 (pair_madd skips it): the row scale is applied to the outputs.
    d = _mm512_set1_ps(1.0f);
    m = _mm512_setzero_ps();
  } else if constexpr (kHasMin<kType>) {
    uint32_t dm0, dm1;  // fp16 d then fp16 m
    std::memcpy(&dm0, b0, 4);
    std::memcpy(&dm1, b1, 4);
    const __m512 f = _mm512_castps128_ps512(
        _mm_cvtph_ps(_mm_cvtsi64_si128(int64_t(uint64_t(dm0) | uint64_t(dm1) << 32))));
    const __m512i twice = _mm512_add_epi32(block_of_lane, block_of_lane);
    d = _mm512_permutexvar_ps(twice, f);
    m = _mm512_permutexvar_ps(_mm512_add_epi32(twice, _mm512_set1_epi32(1)), f);
  } else {
    uint16_t d0, d1;
    std::memcpy(&d0, b0, 2);
    std::memcpy(&d1, b1, 2);
    const __m512 f = _mm512_castps128_ps512(
        _mm_cvtph_ps(_mm_cvtsi32_si128(int(uint32_t(d0) | uint32_t(d1) << 16))));
    d = _mm512_permutexvar_ps(block_of_lane, f);
    m = _mm512_setzero_ps();
  }
}

// One pair of blocks of one weight row, unpacked.
struct WeightPair {
  __m512i levels;
  __m512 d, m;
};

template <DType kType>
inline WeightPair unpack_pair(const uint8_t* b0, const uint8_t* b1) {
  WeightPair w;
  w.levels = pair_levels<kType>(b0, b1);
  pair_scales<kType>(b0, b1, w.d, w.m);
  return w;
}

// One token's activation terms for pair p.
struct ActivationPair {
  __m512i q, bias;
  __m512 scale, qsum;
};

template <DType kType>
inline ActivationPair activation_pair(const Int8Activations& x, int64_t t, int64_t p) {
  ActivationPair a;
  a.q = _mm512_loadu_si512(x.row_q(t) + 64 * p);
  a.bias = _mm512_loadu_si512(x.row_lane_bias(t) + 16 * p);
  a.scale = _mm512_loadu_ps(x.row_lane_scale(t) + 16 * p);
  if constexpr (kHasMin<kType>) a.qsum = _mm512_loadu_ps(x.row_lane_qsum(t) + 16 * p);
  return a;
}

// acc + one pair's lanes: the arithmetic every path shares, so that one token and a chunk agree.
template <DType kType>
inline __m512 pair_madd(const WeightPair& w, const ActivationPair& a, __m512 acc) {
  const __m512i dot = _mm512_dpbusd_epi32(a.bias, w.levels, a.q);
  const __m512 scale = kType == DType::I8 ? a.scale : _mm512_mul_ps(w.d, a.scale);  // I8: d = 1
  acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), scale, acc);
  if constexpr (kHasMin<kType>) acc = _mm512_fmadd_ps(w.m, a.qsum, acc);
  return acc;
}

// Pair p of a row; an odd last block pairs with an all-zero one (levels 0 or 128 with d = 0,
// against q = 0).
template <DType kType>
inline WeightPair row_pair(const uint8_t* row, int64_t blocks, int64_t p) {
  alignas(64) static const uint8_t kZeroBlock[64] = {};
  const uint8_t* b0 = row + 2 * p * kBlockBytes<kType>;
  return unpack_pair<kType>(b0, 2 * p + 1 < blocks ? b0 + kBlockBytes<kType> : kZeroBlock);
}

// One token against one weight row, streaming the row: even and odd pairs go to two
// accumulators (two independent chains), added at the end.
template <DType kType>
inline float row_dot(const uint8_t* row, const Int8Activations& x, int64_t t) {
  __m512 even = _mm512_setzero_ps(), odd = _mm512_setzero_ps();
  int64_t p = 0;
  for (; p + 2 <= x.pairs; p += 2) {
    even =
        pair_madd<kType>(row_pair<kType>(row, x.K / 32, p), activation_pair<kType>(x, t, p), even);
    odd = pair_madd<kType>(row_pair<kType>(row, x.K / 32, p + 1),
                           activation_pair<kType>(x, t, p + 1), odd);
  }
  if (p < x.pairs)
    even =
        pair_madd<kType>(row_pair<kType>(row, x.K / 32, p), activation_pair<kType>(x, t, p), even);
  return hsum(_mm512_add_ps(even, odd));
}

// R rows already unpacked (panel[i * pairs + p]) against TT tokens from t0, with the pair order
// and accumulators of row_dot().
template <DType kType, int R, int TT>
inline void panel_tile(const WeightPair* panel, const Int8Activations& x, int64_t t0, float* y,
                       int64_t ldy) {
  const int64_t pairs = x.pairs;
  __m512 acc[2][R][TT];
  RWKV_UNROLL
  for (int i = 0; i < R; ++i) {
    RWKV_UNROLL
    for (int t = 0; t < TT; ++t) acc[0][i][t] = acc[1][i][t] = _mm512_setzero_ps();
  }
  const auto step = [&](int64_t p, __m512(&sums)[R][TT]) {
    RWKV_UNROLL
    for (int t = 0; t < TT; ++t) {
      const ActivationPair a = activation_pair<kType>(x, t0 + t, p);
      RWKV_UNROLL
      for (int i = 0; i < R; ++i)
        sums[i][t] = pair_madd<kType>(panel[i * pairs + p], a, sums[i][t]);
    }
  };
  int64_t p = 0;
  for (; p + 2 <= pairs; p += 2) {
    step(p, acc[0]);
    step(p + 1, acc[1]);
  }
  if (p < pairs) step(p, acc[0]);
  RWKV_UNROLL
  for (int i = 0; i < R; ++i) {
    RWKV_UNROLL
    for (int t = 0; t < TT; ++t) y[t * ldy + i] = hsum(_mm512_add_ps(acc[0][i][t], acc[1][i][t]));
  }
}

// All T tokens against R rows unpacked in `panel`, tokens two at a time.
template <DType kType, int R>
inline void panel_rows(const WeightPair* panel, const Int8Activations& x, float* y, int64_t O) {
  int64_t t = 0;
  for (; t + 2 <= x.T; t += 2) panel_tile<kType, R, 2>(panel, x, t, y + t * O, O);
  if (t < x.T) panel_tile<kType, R, 1>(panel, x, t, y + t * O, O);
}

template <DType kType>
void rows_int8(const Tensor& w, const Int8Activations& x, float* y, int64_t r0, int64_t r1) {
  const int64_t O = w.rows(), blocks = x.K / 32;
  const uint64_t row_bytes = w.row_bytes();
  if (x.T == 1) {
    // One token: each row streams from memory once, one row at a time.
    for (int64_t r = r0; r < r1; ++r) y[r] = row_dot<kType>(w.data + uint64_t(r) * row_bytes, x, 0);
    return;
  }
  // Several tokens: four rows are unpacked once into a panel (L1-resident) that every token
  // reads, so the unpacking is not repeated per token.
  // Storage aligned by hand: std::vector does not promise 64-byte alignment here.
  thread_local std::vector<uint8_t> panel_buffer;
  panel_buffer.resize(sizeof(WeightPair) * size_t(4 * x.pairs) + 64);
  WeightPair* panel = reinterpret_cast<WeightPair*>(
      (reinterpret_cast<uintptr_t>(panel_buffer.data()) + 63) & ~uintptr_t(63));
  int64_t r = r0;
  for (; r < r1;) {
    const int64_t n = std::min<int64_t>(4, r1 - r);
    for (int64_t i = 0; i < n; ++i)
      for (int64_t p = 0; p < x.pairs; ++p)
        panel[i * x.pairs + p] = row_pair<kType>(w.data + uint64_t(r + i) * row_bytes, blocks, p);
    if (n == 4) {
      panel_rows<kType, 4>(panel, x, y + r, O);
    } else {
      for (int64_t i = 0; i < n; ++i) panel_rows<kType, 1>(panel + i * x.pairs, x, y + r + i, O);
    }
    r += n;
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
    // Lane terms per pair: vpdpbusd with ones sums each lane's four q.
    const float* scale = out.scale.data() + t * blocks;
    for (int64_t p = 0; p < pairs; ++p) {
      const size_t lane = size_t((t * pairs + p) * 16);
      const __m512i q = _mm512_loadu_si512(out.q.data() + (t * pairs + p) * 64);
      const __m512i sum = _mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_set1_epi8(1), q);
      const float d1 = 2 * p + 1 < blocks ? scale[2 * p + 1] : 0.0f;
      const __m512i block_of_lane =
          _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1);
      const __m512 d = _mm512_permutexvar_ps(
          block_of_lane, _mm512_castps128_ps512(_mm_setr_ps(scale[2 * p], d1, 0, 0)));
      _mm512_storeu_ps(out.lane_scale.data() + lane, d);
      _mm512_storeu_si512(out.lane_bias.data() + lane,
                          _mm512_mullo_epi32(sum, _mm512_set1_epi32(-block_zero_level(dtype))));
      _mm512_storeu_ps(out.lane_qsum.data() + lane, _mm512_mul_ps(d, _mm512_cvtepi32_ps(sum)));
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
