// AVX-512 VNNI kernel of linear() with int8 activations (kernels/int8.h). Weight levels are
// unpacked to unsigned bytes and meet the int8 activations in vpdpbusd (64 products per
// instruction), starting from -zero * sum(q), so each block's dot product is an exact integer.
// Outputs are computed 16 rows at a time, one row per lane, so that each block's integer and
// its float32 scaling happen once per row and token, in the scalar reference's order.
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

// Levels of pair p (blocks 2p and 2p + 1) of a row; an odd last block pairs with an all-zero
// one, whose products are never added.
template <DType kType>
inline __m512i row_pair(const uint8_t* row, int64_t blocks, int64_t p) {
  alignas(64) static const uint8_t kZeroBlock[64] = {};
  const uint8_t* b0 = row + 2 * p * kBlockBytes<kType>;
  return pair_levels<kType>(b0, 2 * p + 1 < blocks ? b0 + kBlockBytes<kType> : kZeroBlock);
}

// Every output is a chain over the blocks in order, sum = fma(S, d_w * d_x, sum) (then
// fma(m_w, d_x * sum q, sum) for Q4_1/Q5_1), with S the exact integer dot product of the block:
// the scalar reference's arithmetic, so this kernel equals it bit for bit, and one token equals
// the same token in a chunk. Rows go 16 at a time with a row in each lane.
constexpr int kGroup = 16;

// vpermt2d indices of the even and the odd lanes of the 32 lanes [a | b].
inline __m512i even_lanes() {
  return _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
}
inline __m512i odd_lanes() { return _mm512_add_epi32(even_lanes(), _mm512_set1_epi32(1)); }

// Lane k of the result = the sum of lanes 2k and 2k + 1 of the 32 lanes [a | b].
inline __m512i pair_sums(__m512i a, __m512i b) {
  return _mm512_add_epi32(_mm512_permutex2var_epi32(a, even_lanes(), b),
                          _mm512_permutex2var_epi32(a, odd_lanes(), b));
}

// The 16 rows of a group (a short last group repeats its last row) and their per-block scales.
template <DType kType>
struct RowGroup {
  const uint8_t* row[kGroup];

  RowGroup(const uint8_t* data, uint64_t row_bytes, int64_t r, int64_t n) {
    for (int i = 0; i < kGroup; ++i)
      row[i] = data + uint64_t(r + std::min<int64_t>(i, n - 1)) * row_bytes;
  }

  // d (and m) of block b of each row, one row per lane (fp16 d then fp16 m at the block start).
  void scales(int64_t b, __m512& d, __m512& m) const {
    if constexpr (kType == DType::I8) {
      d = _mm512_set1_ps(1.0f);  // the row scale is applied to the outputs
      m = _mm512_setzero_ps();
    } else {
      // Four-byte loads inserted lane by lane: faster here than vpgatherdd.
      const int64_t at = b * kBlockBytes<kType>;
      const auto load = [&](int i) {
        int32_t v;
        std::memcpy(&v, row[i] + at, 4);
        return v;
      };
      __m128i quarter[4];
      RWKV_UNROLL
      for (int j = 0; j < 4; ++j) {
        __m128i v = _mm_cvtsi32_si128(load(4 * j));
        v = _mm_insert_epi32(v, load(4 * j + 1), 1);
        v = _mm_insert_epi32(v, load(4 * j + 2), 2);
        quarter[j] = _mm_insert_epi32(v, load(4 * j + 3), 3);
      }
      const __m512i dm = _mm512_inserti32x4(
          _mm512_inserti32x4(_mm512_inserti32x4(_mm512_castsi128_si512(quarter[0]), quarter[1], 1),
                             quarter[2], 2),
          quarter[3], 3);
      d = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(dm));
      m = kHasMin<kType> ? _mm512_cvtph_ps(_mm512_cvtepi32_epi16(_mm512_srli_epi32(dm, 16)))
                         : _mm512_setzero_ps();
    }
  }
};

// sum + block b's term for 16 outputs: S the exact block dot products, d and m the weights'.
template <DType kType>
inline __m512 chain_step(__m512 sum, __m512i S, __m512 d, __m512 m, const Int8Activations& x,
                         int64_t t, int64_t b) {
  const int64_t i = t * (x.K / 32) + b;
  sum = _mm512_fmadd_ps(_mm512_cvtepi32_ps(S), _mm512_mul_ps(d, _mm512_set1_ps(x.scale[size_t(i)])),
                        sum);
  if constexpr (kHasMin<kType>)
    sum = _mm512_fmadd_ps(m, _mm512_set1_ps(x.block_qsum[size_t(i)]), sum);
  return sum;
}

// Bytes [begin, end) of p into L1, a line at a time.
inline void prefetch(const uint8_t* p, int64_t begin, int64_t end) {
  for (int64_t at = begin; at < end; at += 64)
    _mm_prefetch(reinterpret_cast<const char*>(p + at), _MM_HINT_T0);
}

inline void store_group(float* y, __m512 v, int64_t n) {
  _mm512_mask_storeu_ps(y, __mmask16((1u << n) - 1), v);
}

// One token against a group of rows, each row streamed once: per pair of blocks, the 16 rows'
// lane dot products are summed down to one lane per row and block by a tree of pair_sums.
template <DType kType>
void group_one_token(const RowGroup<kType>& g, const Int8Activations& x, int64_t t, float* y,
                     int64_t n, const uint8_t* next, int64_t next_bytes) {
  const int64_t blocks = x.K / 32;
  const int8_t* q = x.row_q(t);
  const int32_t* bias = x.row_lane_bias(t);
  // The next group's bytes are prefetched in order, a share per pair: the 16 interleaved rows
  // are more streams than the hardware prefetcher follows.
  const int64_t share = (next_bytes / x.pairs + 64) & ~int64_t(63);
  __m512 sum = _mm512_setzero_ps();
  for (int64_t p = 0; p < x.pairs; ++p) {
    prefetch(next, p * share, std::min(next_bytes, (p + 1) * share));
    const __m512i qp = _mm512_loadu_si512(q + 64 * p);
    const __m512i bp = _mm512_loadu_si512(bias + 16 * p);
    const auto dot = [&](int i) {
      return _mm512_dpbusd_epi32(bp, row_pair<kType>(g.row[i], blocks, p), qp);
    };
    __m512i quads[4];
    RWKV_UNROLL
    for (int j = 0; j < 4; ++j)
      quads[j] = pair_sums(pair_sums(dot(4 * j), dot(4 * j + 1)),
                           pair_sums(dot(4 * j + 2), dot(4 * j + 3)));
    // Lanes 2i and 2i + 1 of halves[h] are row 8h + i's blocks 2p and 2p + 1.
    const __m512i half0 = pair_sums(quads[0], quads[1]), half1 = pair_sums(quads[2], quads[3]);
    __m512 d, m;
    g.scales(2 * p, d, m);
    sum = chain_step<kType>(sum, _mm512_permutex2var_epi32(half0, even_lanes(), half1), d, m, x, t,
                            2 * p);
    if (2 * p + 1 < blocks) {
      g.scales(2 * p + 1, d, m);
      sum = chain_step<kType>(sum, _mm512_permutex2var_epi32(half0, odd_lanes(), half1), d, m, x, t,
                              2 * p + 1);
    }
  }
  store_group(y, sum, n);
}

// Several tokens: the group's levels are transposed once into a panel, one vector per block
// and four-element column (a row in each lane), so every token meets them with one vpdpbusd
// per four columns, the four activation bytes broadcast, and the block's integer sums build up
// in the lanes without any reduction.
struct Panel {
  __m512i* levels = nullptr;          // [block][group][8 columns of four bytes]
  __m512 *d = nullptr, *m = nullptr;  // [block][group]
  int groups = 0;
  std::vector<uint8_t> storage;

  // Room for `blocks` blocks of up to 2 groups. Aligned by hand: std::vector does not promise
  // 64-byte alignment.
  void reserve(int64_t blocks) {
    const size_t n = size_t(blocks * 2);
    storage.resize(64 * (10 * n + 1));
    levels = reinterpret_cast<__m512i*>((reinterpret_cast<uintptr_t>(storage.data()) + 63) &
                                        ~uintptr_t(63));
    d = reinterpret_cast<__m512*>(levels + 8 * n);
    m = d + n;
  }
};

// Bit-reversed 0-15: rows enter the transpose in this order so that they leave it in natural
// order, one per lane.
constexpr int kBitReversed[kGroup] = {0, 8, 4, 12, 2, 10, 6, 14, 1, 9, 5, 13, 3, 11, 7, 15};

template <DType kType>
void pack_group(const RowGroup<kType>& g, int64_t blocks, int64_t pairs, int slot, Panel& panel) {
  const __m512i even = even_lanes(), odd = odd_lanes();
  for (int64_t p = 0; p < pairs; ++p) {
    // A 16 x 16 transpose of four-byte columns in four perfect shuffles: vector c then holds
    // column kBitReversed[c] of the pair (block 2p + column / 8, bytes 4 * (column % 8)).
    __m512i v[kGroup];
    RWKV_UNROLL
    for (int i = 0; i < kGroup; ++i) v[i] = row_pair<kType>(g.row[kBitReversed[i]], blocks, p);
    RWKV_UNROLL
    for (int round = 0; round < 4; ++round) {
      __m512i next[kGroup];
      RWKV_UNROLL
      for (int k = 0; k < 8; ++k) {
        next[2 * k] = _mm512_permutex2var_epi32(v[k], even, v[k + 8]);
        next[2 * k + 1] = _mm512_permutex2var_epi32(v[k], odd, v[k + 8]);
      }
      RWKV_UNROLL
      for (int i = 0; i < kGroup; ++i) v[i] = next[i];
    }
    RWKV_UNROLL
    for (int c = 0; c < kGroup; ++c) {
      const int column = kBitReversed[c];
      const int64_t b = 2 * p + column / 8;
      if (b < blocks) panel.levels[size_t((b * panel.groups + slot) * 8 + column % 8)] = v[c];
    }
  }
  for (int64_t b = 0; b < blocks; ++b) {
    const size_t i = size_t(b * panel.groups + slot);
    g.scales(b, panel.d[i], panel.m[i]);
  }
}

// G packed groups (16 G rows) against TT tokens from t0.
template <DType kType, int G, int TT>
void panel_tile(const Panel& panel, const Int8Activations& x, int64_t t0, float* y, int64_t ldy,
                int64_t n_last) {
  const int64_t blocks = x.K / 32;
  __m512 sum[G][TT];
  RWKV_UNROLL
  for (int r = 0; r < G; ++r) {
    RWKV_UNROLL
    for (int t = 0; t < TT; ++t) sum[r][t] = _mm512_setzero_ps();
  }
  for (int64_t b = 0; b < blocks; ++b) {
    __m512i dot[G][TT];
    RWKV_UNROLL
    for (int t = 0; t < TT; ++t) {
      const __m512i bias = _mm512_set1_epi32(x.block_bias[size_t((t0 + t) * blocks + b)]);
      RWKV_UNROLL
      for (int r = 0; r < G; ++r) dot[r][t] = bias;
    }
    const __m512i* levels = panel.levels + b * G * 8;
    RWKV_UNROLL
    for (int c = 0; c < 8; ++c) {
      __m512i w[G];
      RWKV_UNROLL
      for (int r = 0; r < G; ++r) w[r] = _mm512_load_si512(levels + r * 8 + c);
      RWKV_UNROLL
      for (int t = 0; t < TT; ++t) {
        int32_t four;
        std::memcpy(&four, x.row_q(t0 + t) + 32 * b + 4 * c, 4);
        const __m512i a = _mm512_set1_epi32(four);
        RWKV_UNROLL
        for (int r = 0; r < G; ++r) dot[r][t] = _mm512_dpbusd_epi32(dot[r][t], w[r], a);
      }
    }
    RWKV_UNROLL
    for (int r = 0; r < G; ++r) {
      const __m512 d = panel.d[size_t(b * G + r)], m = panel.m[size_t(b * G + r)];
      RWKV_UNROLL
      for (int t = 0; t < TT; ++t)
        sum[r][t] = chain_step<kType>(sum[r][t], dot[r][t], d, m, x, t0 + t, b);
    }
  }
  RWKV_UNROLL
  for (int r = 0; r < G; ++r) {
    RWKV_UNROLL
    for (int t = 0; t < TT; ++t)
      store_group(y + t * ldy + kGroup * r, sum[r][t], r == G - 1 ? n_last : kGroup);
  }
}

// All tokens against G packed groups, kTile tokens at a time.
template <DType kType, int G>
void panel_tokens(const Panel& panel, const Int8Activations& x, float* y, int64_t O,
                  int64_t n_last) {
  constexpr int kTile = 4;
  int64_t t = 0;
  for (; t + kTile <= x.T; t += kTile)
    panel_tile<kType, G, kTile>(panel, x, t, y + t * O, O, n_last);
  for (; t < x.T; ++t) panel_tile<kType, G, 1>(panel, x, t, y + t * O, O, n_last);
}

template <DType kType>
void rows_int8(const Tensor& w, const Int8Activations& x, float* y, int64_t r0, int64_t r1) {
  const int64_t O = w.rows(), blocks = x.K / 32;
  const uint64_t row_bytes = w.row_bytes();
  if (x.T == 1) {
    // The first group up front (each later one is prefetched while its predecessor runs).
    prefetch(w.data + uint64_t(r0) * row_bytes, 0,
             std::min<int64_t>(kGroup, r1 - r0) * int64_t(row_bytes));
    for (int64_t r = r0; r < r1; r += kGroup) {
      const int64_t n = std::min<int64_t>(kGroup, r1 - r);
      const int64_t next = std::min(r + kGroup, r1), next_n = std::min<int64_t>(kGroup, r1 - next);
      group_one_token<kType>(RowGroup<kType>(w.data, row_bytes, r, n), x, 0, y + r, n,
                             w.data + uint64_t(next) * row_bytes, int64_t(next_n * row_bytes));
    }
    return;
  }
  // Two groups (32 rows) per panel: each broadcast of activations then feeds two vpdpbusd.
  constexpr int kGroups = 2;
  thread_local Panel panel;
  panel.reserve(blocks);
  for (int64_t r = r0; r < r1; r += kGroups * kGroup) {
    const int64_t n = std::min<int64_t>(kGroups * kGroup, r1 - r);
    panel.groups = n > kGroup ? 2 : 1;
    for (int s = 0; s < panel.groups; ++s) {
      const int64_t rs = r + s * kGroup;
      pack_group<kType>(RowGroup<kType>(w.data, row_bytes, rs, std::min<int64_t>(kGroup, r1 - rs)),
                        blocks, x.pairs, s, panel);
    }
    if (panel.groups == 2)
      panel_tokens<kType, 2>(panel, x, y + r, O, n - kGroup);
    else
      panel_tokens<kType, 1>(panel, x, y + r, O, n);
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
      _mm512_storeu_si512(out.lane_bias.data() + lane,
                          _mm512_mullo_epi32(sum, _mm512_set1_epi32(-block_zero_level(dtype))));
      // Block terms: the lanes of each block summed (integers, so in any order).
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
