// AVX2 + FMA variants of the kernels, 8-lane vectors: one token streams each weight row once
// (plain floats widened and ggml blocks unpacked in registers, four accumulator chains); several
// tokens decode four rows into an L1 panel that they all read; scalar tails where a row is not
// a multiple of 8. And the int8-activation kernel, 8 rows per vector (at the end).
// Headers come before the target pragma so that no inline function they define is compiled
// for this ISA and then shared with code that runs on any CPU.
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "core/quant.h"
#include "core/simd.h"
#include "kernels/half_table.h"
#include "kernels/int8.h"
#include "kernels/prefetch.h"
#include "kernels/variants.h"
#include "rwkv/aligned.h"

#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma,f16c"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c")
#endif

namespace rwkv::kernels::avx2 {

namespace {

// The fp16 at p in all 8 lanes: one broadcast load from the table.
inline __m256 broadcast_half(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return _mm256_set1_ps(kHalfToFloat[h]);
}

template <DType kType>
inline __m256 load8(const uint8_t* row, int64_t k) {
  if constexpr (kType == DType::F32) {
    return _mm256_loadu_ps(reinterpret_cast<const float*>(row) + k);
  } else if constexpr (kType == DType::F16) {
    return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(row + 2 * k)));
  } else {
    const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(row + 2 * k));
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(b), 16));
  }
}

template <DType kType>
inline float load1(const uint8_t* row, int64_t k) {
  float v;
  dequantize(kType, row + k * kElementBytes<kType>, 1, &v);
  return v;
}

inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// The 32 weights of one ggml block (or I8 row block) as float32 in four vectors, elements 8q to
// 8q + 7 in w[q]: exactly the values of the scalar dequantize() (a small integer times the fp16
// scale, exact in float32, plus at most the reference's one rounded addition of the offset).
template <DType kType>
inline void block_vectors(const uint8_t* b, __m256 (&w)[4]) {
  if constexpr (kType == DType::I8 || kType == DType::Q8_0) {
    const uint8_t* q = b + (kType == DType::I8 ? 0 : 2);
    RWKV_UNROLL
    for (int j = 0; j < 4; ++j) {
      const __m128i v = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(q + 8 * j));
      w[j] = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(v));
      if constexpr (kType == DType::Q8_0) w[j] = _mm256_mul_ps(w[j], broadcast_half(b));
    }
  } else {
    const uint8_t* p = b;
    const __m256 d = broadcast_half(p);
    p += 2;
    __m256 m = _mm256_setzero_ps();
    if constexpr (kHasMin<kType>) {
      m = broadcast_half(p);
      p += 2;
    }
    uint32_t qh = 0;
    if constexpr (kFiveBit<kType>) {
      std::memcpy(&qh, p, 4);
      p += 4;
    }
    const __m128i bytes = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
    const __m128i mask = _mm_set1_epi8(0x0f);
    __m128i halves[2] = {_mm_and_si128(bytes, mask), _mm_and_si128(_mm_srli_epi16(bytes, 4), mask)};
    // Q4_0's levels less 8 as signed bytes: two subtractions a block instead of four.
    constexpr bool kSignedBytes = !kHasMin<kType> && !kFiveBit<kType>;
    if constexpr (kSignedBytes) {
      for (__m128i& h : halves) h = _mm_sub_epi8(h, _mm_set1_epi8(8));
    }
    // Bit j of a lane's index selects the fifth bit from qh.
    const __m256i lane_bit = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
    RWKV_UNROLL
    for (int j = 0; j < 4; ++j) {
      const __m128i src = j % 2 == 0 ? halves[j / 2] : _mm_srli_si128(halves[j / 2], 8);
      __m256i q = kSignedBytes ? _mm256_cvtepi8_epi32(src) : _mm256_cvtepu8_epi32(src);
      if constexpr (kFiveBit<kType>) {
        const __m256i bits =
            _mm256_and_si256(_mm256_set1_epi32(int((qh >> (8 * j)) & 0xff)), lane_bit);
        q = _mm256_add_epi32(
            q, _mm256_and_si256(_mm256_cmpeq_epi32(bits, lane_bit), _mm256_set1_epi32(16)));
      }
      if constexpr (kFiveBit<kType> && !kHasMin<kType>)
        q = _mm256_sub_epi32(q, _mm256_set1_epi32(16));
      const __m256 v = _mm256_cvtepi32_ps(q);
      w[j] = kHasMin<kType> ? _mm256_fmadd_ps(v, d, m) : _mm256_mul_ps(v, d);
    }
  }
}

// Row of K weights of any type as float32.
template <DType kType>
void decode_row(const uint8_t* row, int64_t K, float* out) {
  if constexpr (kIsBlock<kType>) {
    for (int64_t i = 0; i < K / 32; ++i) {
      __m256 w[4];
      block_vectors<kType>(row + i * kBlockBytes<kType>, w);
      for (int j = 0; j < 4; ++j) _mm256_storeu_ps(out + 32 * i + 8 * j, w[j]);
    }
  } else {
    int64_t k = 0;
    for (; k + 8 <= K; k += 8) _mm256_storeu_ps(out + k, load8<kType>(row, k));
    for (; k < K; ++k) out[k] = load1<kType>(row, k);
  }
}

// Every path of this file sums a row in one order: element e goes to accumulator (e / 8) % 4
// (lane e % 8) in order of e, for every whole vector of 8, and the row's dot is hsum((a0 + a1)
// + (a2 + a3)) plus the last K % 8 products in order, each fused with std::fma so that no
// optimization level can contract one tail and not the other. Four independent chains keep a
// streaming row from waiting on the FMA latency, and one token alone and inside a chunk give the
// same bits.
inline float quarters_sum(const __m256 (&a)[4]) {
  return hsum(_mm256_add_ps(_mm256_add_ps(a[0], a[1]), _mm256_add_ps(a[2], a[3])));
}

// How far ahead of a streaming row it is prefetched (about two 2048-wide BF16 rows): one thread
// streamed a BF16 matrix at ~29 GB/s with 1 KB, ~40 with 8 KB (hint: kernels/prefetch.h).
constexpr int64_t kPrefetchBytes = 8192;

// One to three tokens: the row streams once, one row at a time (a single sequential stream
// reads DRAM faster than interleaved ones), blocks unpacked in registers once for all the
// tokens. TT x 4 accumulators and the 4 weight vectors fill the 16 registers at TT = 3.
template <DType kType, int TT>
[[gnu::always_inline]] inline void row_dots(const uint8_t* row, const float* x, int64_t K, float* y,
                                            int64_t ldy) {
  __m256 a[TT][4];
  RWKV_UNROLL
  for (int t = 0; t < TT; ++t)
    for (__m256& e : a[t]) e = _mm256_setzero_ps();
  // 32 weights a step: one ggml block, or 32 plain elements.
  constexpr int64_t kStepBytes = kIsBlock<kType> ? kBlockBytes<kType> : 32 * kElementBytes<kType>;
  int64_t k = 0;
  for (const uint8_t* at = row; k + 32 <= K; k += 32, at += kStepBytes) {
    prefetch_streamed(at + kPrefetchBytes);
    __m256 w[4];
    if constexpr (kIsBlock<kType>) {
      block_vectors<kType>(at, w);
    } else {
      RWKV_UNROLL
      for (int q = 0; q < 4; ++q) w[q] = load8<kType>(at, 8 * q);
    }
    RWKV_UNROLL
    for (int t = 0; t < TT; ++t) {
      RWKV_UNROLL
      for (int q = 0; q < 4; ++q)
        a[t][q] = _mm256_fmadd_ps(w[q], _mm256_loadu_ps(x + t * K + k + 8 * q), a[t][q]);
    }
  }
  RWKV_UNROLL
  for (int t = 0; t < TT; ++t) {
    if constexpr (kIsBlock<kType>) {
      y[t * ldy] = quarters_sum(a[t]);  // K is a whole number of blocks
    } else {
      int64_t kt = k;
      for (int q = 0; kt + 8 <= K; kt += 8, ++q)
        a[t][q] = _mm256_fmadd_ps(load8<kType>(row, kt), _mm256_loadu_ps(x + t * K + kt), a[t][q]);
      float sum = quarters_sum(a[t]);
      for (; kt < K; ++kt) sum = std::fma(load1<kType>(row, kt), x[t * K + kt], sum);
      y[t * ldy] = sum;
    }
  }
}

// R rows of plain kType weights (row stride ld bytes; float32 for decoded panels) against TT
// tokens, in the order above. The quarters advance in turns over chunks of K that stay in L1,
// R x TT accumulators at a time: 4 rows x 3 tokens and the 4 weight vectors fill the 16
// registers (x is read as a memory operand), which measured faster than 4 x 2 and 4 x 4
// (spills).
template <DType kType, int R, int TT>
inline void rows_tile(const uint8_t* rows, uint64_t ld, const float* x, int64_t K, float* y,
                      int64_t ldy) {
  constexpr int64_t kChunk = 256;
  __m256 sums[4][R][TT];
  for (int q = 0; q < 4; ++q)
    for (int i = 0; i < R; ++i)
      for (int t = 0; t < TT; ++t) sums[q][i][t] = _mm256_setzero_ps();
  for (int64_t k0 = 0; k0 < K; k0 += kChunk) {
    const int64_t k1 = std::min(K, k0 + kChunk);
    for (int q = 0; q < 4; ++q) {
      __m256 acc[R][TT];
      RWKV_UNROLL
      for (int i = 0; i < R; ++i) {
        RWKV_UNROLL
        for (int t = 0; t < TT; ++t) acc[i][t] = sums[q][i][t];
      }
      for (int64_t k = k0 + 8 * q; k + 8 <= k1; k += 32) {
        __m256 w[R];
        RWKV_UNROLL
        for (int i = 0; i < R; ++i) w[i] = load8<kType>(rows + i * ld, k);
        RWKV_UNROLL
        for (int t = 0; t < TT; ++t) {
          const __m256 xv = _mm256_loadu_ps(x + t * K + k);
          RWKV_UNROLL
          for (int i = 0; i < R; ++i) acc[i][t] = _mm256_fmadd_ps(w[i], xv, acc[i][t]);
        }
      }
      RWKV_UNROLL
      for (int i = 0; i < R; ++i) {
        RWKV_UNROLL
        for (int t = 0; t < TT; ++t) sums[q][i][t] = acc[i][t];
      }
    }
  }
  for (int i = 0; i < R; ++i)
    for (int t = 0; t < TT; ++t) {
      const __m256 a[4] = {sums[0][i][t], sums[1][i][t], sums[2][i][t], sums[3][i][t]};
      float sum = quarters_sum(a);
      for (int64_t k = K - K % 8; k < K; ++k)
        sum = std::fma(load1<kType>(rows + i * ld, k), x[t * K + k], sum);
      y[t * ldy + i] = sum;
    }
}

// R float32 rows (row stride ld bytes: a decoded panel, or an F32 tensor itself) against all
// T tokens, three at a time.
template <int R>
inline void f32_rows_times_tokens(const uint8_t* rows, uint64_t ld, const float* x, int64_t T,
                                  int64_t K, float* y, int64_t ldy) {
  int64_t t = 0;
  for (; t + 3 <= T; t += 3) rows_tile<DType::F32, R, 3>(rows, ld, x + t * K, K, y + t * ldy, ldy);
  if (T - t == 2) rows_tile<DType::F32, R, 2>(rows, ld, x + t * K, K, y + t * ldy, ldy);
  if (T - t == 1) rows_tile<DType::F32, R, 1>(rows, ld, x + t * K, K, y + t * ldy, ldy);
}

// Several tokens of 16-bit floats: rows are taken in blocks of about this many bytes, which
// stay in L2, once a 4-row float panel and three tokens' x rows no longer fit this L1.
constexpr uint64_t kRowBlockBytes = 256 << 10;
constexpr int64_t kL1Bytes = 32 << 10;

// Several tokens of plain-float weights: tokens outside, rows inside, over blocks of rows that
// stay in L2 (kRowBlockBytes), so a group's x rows stay in L1 while the block's rows pass by,
// read as stored and widened in the tile (instead of x streaming from L2 once per 4 rows).
template <DType kType>
void plain_rows_times_tokens(const Tensor& w, const float* x, int64_t T, float* y, int64_t r0,
                             int64_t r1) {
  const int64_t K = w.cols(), O = w.rows();
  const uint64_t ld = w.row_bytes();
  const int64_t block_rows = std::max<int64_t>(4, int64_t(kRowBlockBytes / ld) / 4 * 4);
  for (int64_t rb = r0; rb < r1; rb += block_rows) {
    const int64_t rb_end = std::min(r1, rb + block_rows);
    int64_t t = 0;
    const auto token_group = [&]<int TT>() {
      int64_t r = rb;
      for (; r + 4 <= rb_end; r += 4)
        rows_tile<kType, 4, TT>(w.row(r), ld, x + t * K, K, y + t * O + r, O);
      for (; r < rb_end; ++r) rows_tile<kType, 1, TT>(w.row(r), ld, x + t * K, K, y + t * O + r, O);
      t += TT;
    };
    while (t + 3 <= T) token_group.template operator()<3>();
    if (T - t == 2) token_group.template operator()<2>();
    if (T - t == 1) token_group.template operator()<1>();
  }
}

// Up to this many tokens stream the weights (row_dots()); more share a decoded panel, which
// made two tokens of Q4_0 cost 3x one token's time (Q5_1 2.2x, F16 1.3x). At four tokens the
// panel measured faster for Q5_1 and F16 (RWKV-7 2048 x 24).
constexpr int64_t kStreamedTokens = 3;

template <DType kType>
void linear_typed(const Tensor& w, const float* x, int64_t T, float* y, int64_t r0, int64_t r1) {
  const int64_t K = w.cols(), O = w.rows();
  if (T <= kStreamedTokens) {
    const uint64_t row_bytes = w.row_bytes();
    const uint8_t* row = w.row(r0);
    for (int64_t r = r0; r < r1; ++r, row += row_bytes) {
      if (T == 1) row_dots<kType, 1>(row, x, K, y + r, O);
      if (T == 2) row_dots<kType, 2>(row, x, K, y + r, O);
      if (T == 3) row_dots<kType, 3>(row, x, K, y + r, O);
    }
    return;
  }
  int64_t r = r0;
  if constexpr (kType == DType::F32) {
    // Float32 rows are their own panel.
    const uint64_t ld = w.row_bytes();
    for (; r + 4 <= r1; r += 4) f32_rows_times_tokens<4>(w.row(r), ld, x, T, K, y + r, O);
    for (; r < r1; ++r) f32_rows_times_tokens<1>(w.row(r), ld, x, T, K, y + r, O);
  } else {
    // While a 4-row float panel and three tokens' x rows fit a 32 KiB L1, decoding the panel
    // once serves every token best; beyond, 16-bit rows are read as stored (measured: BF16 at
    // K = 1024, 120 against 107 GFLOPS; at 2048, 83 against 103).
    if (!kIsBlock<kType> && 7 * K * 4 > kL1Bytes)
      return plain_rows_times_tokens<kType>(w, x, T, y, r0, r1);
    // Several tokens: four rows are decoded once into an L1 panel that every token reads.
    const int64_t ld = K + 8;  // rows a little more than K apart, so they do not share L1 sets
    thread_local AlignedVector<float> panel;  // 32-byte loads within one line
    panel.resize(size_t(4 * ld));
    const auto* panel_rows = reinterpret_cast<const uint8_t*>(panel.data());
    for (; r + 4 <= r1; r += 4) {
      for (int i = 0; i < 4; ++i) decode_row<kType>(w.row(r + i), K, panel.data() + i * ld);
      f32_rows_times_tokens<4>(panel_rows, uint64_t(ld) * 4, x, T, K, y + r, O);
    }
    for (; r < r1; ++r) {
      decode_row<kType>(w.row(r), K, panel.data());
      f32_rows_times_tokens<1>(panel_rows, uint64_t(ld) * 4, x, T, K, y + r, O);
    }
  }
}

}  // namespace

void linear_rows(const Tensor& w, const float* x, int64_t T, float* y, int64_t r0, int64_t r1) {
  switch (w.dtype) {
    case DType::F32:
      return linear_typed<DType::F32>(w, x, T, y, r0, r1);
    case DType::F16:
      return linear_typed<DType::F16>(w, x, T, y, r0, r1);
    case DType::BF16:
      return linear_typed<DType::BF16>(w, x, T, y, r0, r1);
    case DType::Q4_0:
      return linear_typed<DType::Q4_0>(w, x, T, y, r0, r1);
    case DType::Q4_1:
      return linear_typed<DType::Q4_1>(w, x, T, y, r0, r1);
    case DType::Q5_0:
      return linear_typed<DType::Q5_0>(w, x, T, y, r0, r1);
    case DType::Q5_1:
      return linear_typed<DType::Q5_1>(w, x, T, y, r0, r1);
    case DType::Q8_0:
      return linear_typed<DType::Q8_0>(w, x, T, y, r0, r1);
    case DType::I8:
      return linear_typed<DType::I8>(w, x, T, y, r0, r1);
  }
}

namespace {

// y[t][c, c + 8 NV) for TT tokens (NV a multiple of 4: whole blocks): TT x NV accumulators in
// registers, each output summed over the rows in order with one FMA per row, whatever T, the
// tile or the column split.
template <DType kType, int TT, int NV>
inline void cols_tile(const float* x, int64_t ldx, const Tensor& w, uint64_t row_bytes, float* y,
                      int64_t c) {
  const int64_t I = w.rows(), O = w.cols();
  __m256 acc[TT][NV];
  RWKV_UNROLL
  for (int t = 0; t < TT; ++t) {
    RWKV_UNROLL
    for (int v = 0; v < NV; ++v) acc[t][v] = _mm256_setzero_ps();
  }
  for (int64_t i = 0; i < I; ++i) {
    const uint8_t* row = w.data + uint64_t(i) * row_bytes;
    RWKV_UNROLL
    for (int v0 = 0; v0 < NV; v0 += 4) {
      __m256 wv[4];
      if constexpr (kIsBlock<kType>) {
        block_vectors<kType>(row + (c + 8 * v0) / 32 * kBlockBytes<kType>, wv);
      } else {
        RWKV_UNROLL
        for (int j = 0; j < 4; ++j) wv[j] = load8<kType>(row, c + 8 * (v0 + j));
      }
      RWKV_UNROLL
      for (int t = 0; t < TT; ++t) {
        const __m256 a = _mm256_set1_ps(x[t * ldx + i]);
        RWKV_UNROLL
        for (int j = 0; j < 4; ++j) acc[t][v0 + j] = _mm256_fmadd_ps(a, wv[j], acc[t][v0 + j]);
      }
    }
  }
  RWKV_UNROLL
  for (int t = 0; t < TT; ++t) {
    RWKV_UNROLL
    for (int v = 0; v < NV; ++v) _mm256_storeu_ps(y + t * O + c + 8 * v, acc[t][v]);
  }
}

template <DType kType>
void matmul_typed(const float* x, int64_t ldx, int64_t T, const Tensor& w, float* y, int64_t c0,
                  int64_t c1) {
  const int64_t I = w.rows(), O = w.cols();
  const uint64_t row_bytes = w.row_bytes();
  int64_t c = c0;
  // One token: eight column vectors keep both FMA units busy despite the latency.
  if (T == 1)
    for (; c + 64 <= c1; c += 64) cols_tile<kType, 1, 8>(x, ldx, w, row_bytes, y, c);
  for (; c + 32 <= c1; c += 32) {
    int64_t t = 0;
    for (; t + 2 <= T; t += 2) cols_tile<kType, 2, 4>(x + t * ldx, ldx, w, row_bytes, y + t * O, c);
    if (t < T) cols_tile<kType, 1, 4>(x + t * ldx, ldx, w, row_bytes, y + t * O, c);
  }
  // Plain floats: the last columns one by one, each the same in-order FMA chain.
  for (; c < c1; ++c)
    for (int64_t t = 0; t < T; ++t) {
      float sum = 0;
      for (int64_t i = 0; i < I; ++i)
        sum = std::fma(x[t * ldx + i], load1<kType>(w.data + uint64_t(i) * row_bytes, c), sum);
      y[t * O + c] = sum;
    }
}

}  // namespace

void matmul_cols(const float* x, int64_t ldx, int64_t T, const Tensor& w, float* y, int64_t c0,
                 int64_t c1) {
  switch (w.dtype) {
    case DType::F32:
      return matmul_typed<DType::F32>(x, ldx, T, w, y, c0, c1);
    case DType::F16:
      return matmul_typed<DType::F16>(x, ldx, T, w, y, c0, c1);
    case DType::BF16:
      return matmul_typed<DType::BF16>(x, ldx, T, w, y, c0, c1);
    case DType::Q4_0:
      return matmul_typed<DType::Q4_0>(x, ldx, T, w, y, c0, c1);
    case DType::Q4_1:
      return matmul_typed<DType::Q4_1>(x, ldx, T, w, y, c0, c1);
    case DType::Q5_0:
      return matmul_typed<DType::Q5_0>(x, ldx, T, w, y, c0, c1);
    case DType::Q5_1:
      return matmul_typed<DType::Q5_1>(x, ldx, T, w, y, c0, c1);
    case DType::Q8_0:
      return matmul_typed<DType::Q8_0>(x, ldx, T, w, y, c0, c1);
    case DType::I8:
      return matmul_typed<DType::I8>(x, ldx, T, w, y, c0, c1);
  }
}

// linear() with int8 activations (kernels/int8.h), for CPUs without AVX-512 VNNI. vpmaddubsw
// multiplies unsigned by signed bytes into 16-bit pairs and vpmaddwd sums those into four-byte
// lanes, as vpdpbusd does. The pairs are 16-bit: nibble levels (at most 31 x 127 x 2) fit, Q8_0's
// do not as unsigned, so Q8_0 (and I8) multiplies |w| by q with w's sign (ggml's trick) and needs
// no zero-level correction. Outputs go 8 rows at a time, one row per lane, so that each block's
// exact integer is scaled once per row and token in the scalar reference's order: this kernel
// equals the reference bit for bit, and one token equals the same token in a chunk.

namespace {

constexpr int kRows = 8;
constexpr bool kSigned(DType t) { return t == DType::Q8_0 || t == DType::I8; }

// The 32 weight bytes of block b in element order: levels (unsigned) for nibble types, the
// stored int8 values for Q8_0 and I8.
template <DType kType>
inline __m256i block_bytes(const uint8_t* b) {
  if constexpr (kSigned(kType)) {
    return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + (kType == DType::I8 ? 0 : 2)));
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
    return levels;
  }
}

// Four-byte lanes of weight bytes w times activation bytes q, each the exact sum of its four
// products (of the level, before the zero-level correction, for nibble types).
template <DType kType>
inline __m256i lane_dots(__m256i w, __m256i q) {
  const __m256i pairs = kSigned(kType)
                            ? _mm256_maddubs_epi16(_mm256_abs_epi8(w), _mm256_sign_epi8(q, w))
                            : _mm256_maddubs_epi16(w, q);
  return _mm256_madd_epi16(pairs, _mm256_set1_epi16(1));
}

// Lane i of the result: the sum of the 8 lanes of v[i].
inline __m256i row_sums(const __m256i (&v)[kRows]) {
  const __m256i a = _mm256_hadd_epi32(v[0], v[1]), b = _mm256_hadd_epi32(v[2], v[3]);
  const __m256i c = _mm256_hadd_epi32(v[4], v[5]), d = _mm256_hadd_epi32(v[6], v[7]);
  // Lane i < 4 of ab holds row i's lanes 0-3, lane 4 + i its lanes 4-7; cd the same for 4-7.
  const __m256i ab = _mm256_hadd_epi32(a, b), cd = _mm256_hadd_epi32(c, d);
  return _mm256_add_epi32(_mm256_permute2x128_si256(ab, cd, 0x20),
                          _mm256_permute2x128_si256(ab, cd, 0x31));
}

// The fp16 values in the low 16 bits of each lane, as float32.
inline __m256 low_halves(__m256i v) {
  const __m256i pick = _mm256_setr_epi8(0, 1, 4, 5, 8, 9, 12, 13, -1, -1, -1, -1, -1, -1, -1, -1, 0,
                                        1, 4, 5, 8, 9, 12, 13, -1, -1, -1, -1, -1, -1, -1, -1);
  const __m256i packed = _mm256_permute4x64_epi64(_mm256_shuffle_epi8(v, pick), 0x08);
  return _mm256_cvtph_ps(_mm256_castsi256_si128(packed));
}

// The 8 rows of a group (a short last group repeats its last row) and their per-block scales.
template <DType kType>
struct RowGroup {
  const uint8_t* row[kRows];

  RowGroup(const uint8_t* data, uint64_t row_bytes, int64_t r, int64_t n) {
    for (int i = 0; i < kRows; ++i)
      row[i] = data + uint64_t(r + std::min<int64_t>(i, n - 1)) * row_bytes;
  }

  // d (and m) of block b of each row, one row per lane (fp16 d then fp16 m at the block start).
  void scales(int64_t b, __m256& d, __m256& m) const {
    if constexpr (kType == DType::I8) {
      d = _mm256_set1_ps(1.0f);  // the row scale is applied to the outputs
      m = _mm256_setzero_ps();
    } else {
      int32_t v[kRows];
      RWKV_UNROLL
      for (int i = 0; i < kRows; ++i) std::memcpy(&v[i], row[i] + b * kBlockBytes<kType>, 4);
      const __m256i dm = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(v));
      d = low_halves(dm);
      m = kHasMin<kType> ? low_halves(_mm256_srli_epi32(dm, 16)) : _mm256_setzero_ps();
    }
  }
};

// sum + block b's term for 8 outputs: S the exact block dot products, d and m the weights'.
template <DType kType>
inline __m256 chain_step(__m256 sum, __m256i S, __m256 d, __m256 m, const Int8Activations& x,
                         int64_t t, int64_t b) {
  const int64_t i = t * (x.K / 32) + b;
  sum = _mm256_fmadd_ps(_mm256_cvtepi32_ps(S), _mm256_mul_ps(d, _mm256_set1_ps(x.scale[size_t(i)])),
                        sum);
  if constexpr (kHasMin<kType>)
    sum = _mm256_fmadd_ps(m, _mm256_set1_ps(x.block_qsum[size_t(i)]), sum);
  return sum;
}

// The block's integer starts from -zero * sum(q) (nibble levels are offset; signed bytes not).
template <DType kType>
inline __m256i block_start(const Int8Activations& x, int64_t t, int64_t b) {
  if constexpr (kSigned(kType)) return _mm256_setzero_si256();
  return _mm256_set1_epi32(x.block_bias[size_t(t * (x.K / 32) + b)]);
}

inline void store_rows(float* y, __m256 v, int64_t n) {
  alignas(32) float out[kRows];
  _mm256_store_ps(out, v);
  std::copy(out, out + n, y);
}

// All TT tokens of x against a group of rows, each row streamed once: per block, each row's bytes
// are unpacked once for all the tokens, and each token's 8 rows' lane dot products are summed down
// to one lane per row. The next group is prefetched meanwhile, a share per block: 8 interleaved
// rows are more streams than the hardware prefetcher follows.
template <DType kType, int TT>
void group_tokens(const RowGroup<kType>& g, const Int8Activations& x, float* y, int64_t ldy,
                  int64_t n, const uint8_t* next, int64_t next_bytes) {
  const int64_t blocks = x.K / 32;
  const int64_t share = (next_bytes / blocks + 64) & ~int64_t(63);
  __m256 sum[TT];
  RWKV_UNROLL
  for (int t = 0; t < TT; ++t) sum[t] = _mm256_setzero_ps();
  for (int64_t b = 0; b < blocks; ++b) {
    for (int64_t at = b * share; at < std::min(next_bytes, (b + 1) * share); at += 64)
      prefetch_streamed(next + at);
    __m256i qb[TT];
    RWKV_UNROLL
    for (int t = 0; t < TT; ++t)
      qb[t] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x.row_q(t) + 32 * b));
    __m256i lanes[TT][kRows];
    RWKV_UNROLL
    for (int i = 0; i < kRows; ++i) {
      const __m256i w = block_bytes<kType>(g.row[i] + b * kBlockBytes<kType>);
      RWKV_UNROLL
      for (int t = 0; t < TT; ++t) lanes[t][i] = lane_dots<kType>(w, qb[t]);
    }
    __m256 d, m;
    g.scales(b, d, m);
    RWKV_UNROLL
    for (int t = 0; t < TT; ++t)
      sum[t] = chain_step<kType>(
          sum[t], _mm256_add_epi32(row_sums(lanes[t]), block_start<kType>(x, t, b)), d, m, x, t, b);
  }
  RWKV_UNROLL
  for (int t = 0; t < TT; ++t) store_rows(y + t * ldy, sum[t], n);
}

// Up to this many tokens stream the rows (group_tokens()); more transpose each group once into
// a panel that they all read, which made two tokens cost 1.5x one token's time.
constexpr int64_t kStreamedInt8Tokens = 4;

// group_tokens() for x.T (1 to kStreamedInt8Tokens) tokens.
template <DType kType, int TT = 1>
void streamed_tokens(const RowGroup<kType>& g, const Int8Activations& x, float* y, int64_t ldy,
                     int64_t n, const uint8_t* next, int64_t next_bytes) {
  if constexpr (TT < kStreamedInt8Tokens)
    if (x.T != TT) return streamed_tokens<kType, TT + 1>(g, x, y, ldy, n, next, next_bytes);
  group_tokens<kType, TT>(g, x, y, ldy, n, next, next_bytes);
}

// Several tokens: the group's bytes are transposed once into a panel, one vector per block and
// four-element column (a row in each lane), so every token meets them with one vpmaddubsw +
// vpmaddwd per four columns, the four activation bytes broadcast, and the block's integers build
// up in the lanes without any reduction.
struct Panel {
  __m256i* bytes = nullptr;           // [block][8 columns of four bytes]
  __m256 *d = nullptr, *m = nullptr;  // [block]
  AlignedVector<uint8_t> storage;

  // Room for `blocks` blocks.
  void reserve(int64_t blocks) {
    storage.resize(size_t(32 * 10 * blocks));
    bytes = reinterpret_cast<__m256i*>(storage.data());
    d = reinterpret_cast<__m256*>(bytes + 8 * blocks);
    m = d + blocks;
  }
};

template <DType kType>
void pack_group(const RowGroup<kType>& g, int64_t blocks, Panel& panel) {
  for (int64_t b = 0; b < blocks; ++b) {
    __m256i v[kRows];
    RWKV_UNROLL
    for (int i = 0; i < kRows; ++i) v[i] = block_bytes<kType>(g.row[i] + b * kBlockBytes<kType>);
    // An 8 x 8 transpose of four-byte columns.
    __m256i t[kRows], u[kRows];
    RWKV_UNROLL
    for (int i = 0; i < kRows; i += 2) {
      t[i] = _mm256_unpacklo_epi32(v[i], v[i + 1]);
      t[i + 1] = _mm256_unpackhi_epi32(v[i], v[i + 1]);
    }
    RWKV_UNROLL
    for (int i = 0; i < kRows; i += 4) {
      u[i] = _mm256_unpacklo_epi64(t[i], t[i + 2]);
      u[i + 1] = _mm256_unpackhi_epi64(t[i], t[i + 2]);
      u[i + 2] = _mm256_unpacklo_epi64(t[i + 1], t[i + 3]);
      u[i + 3] = _mm256_unpackhi_epi64(t[i + 1], t[i + 3]);
    }
    __m256i* column = panel.bytes + b * 8;
    RWKV_UNROLL
    for (int c = 0; c < 4; ++c) {
      column[c] = _mm256_permute2x128_si256(u[c], u[c + 4], 0x20);
      column[c + 4] = _mm256_permute2x128_si256(u[c], u[c + 4], 0x31);
    }
    g.scales(b, panel.d[b], panel.m[b]);
  }
}

// Activation bytes 4c to 4c + 3 of block b of token t in every lane.
inline __m256i broadcast_four(const Int8Activations& x, int64_t t, int64_t b, int c) {
  int32_t four;
  std::memcpy(&four, x.row_q(t) + 32 * b + 4 * c, 4);
  return _mm256_set1_epi32(four);
}

// The packed group against TT tokens from t0.
template <DType kType, int TT>
void panel_tile(const Panel& panel, const Int8Activations& x, int64_t t0, float* y, int64_t ldy,
                int64_t n) {
  const int64_t blocks = x.K / 32;
  __m256 sum[TT];
  RWKV_UNROLL
  for (int t = 0; t < TT; ++t) sum[t] = _mm256_setzero_ps();
  for (int64_t b = 0; b < blocks; ++b) {
    __m256i dot[TT];
    RWKV_UNROLL
    for (int t = 0; t < TT; ++t) dot[t] = block_start<kType>(x, t0 + t, b);
    const __m256i* column = panel.bytes + b * 8;
    if constexpr (kSigned(kType)) {
      RWKV_UNROLL
      for (int c = 0; c < 8; ++c) {
        const __m256i w = _mm256_load_si256(column + c);
        RWKV_UNROLL
        for (int t = 0; t < TT; ++t)
          dot[t] = _mm256_add_epi32(dot[t], lane_dots<kType>(w, broadcast_four(x, t0 + t, b, c)));
      }
    } else {
      // Nibble levels: four columns' 16-bit pairs (each at most 31 x 127 x 2) add up without
      // overflow before one vpmaddwd widens them.
      RWKV_UNROLL
      for (int c = 0; c < 8; c += 4) {
        __m256i w[4];
        RWKV_UNROLL
        for (int j = 0; j < 4; ++j) w[j] = _mm256_load_si256(column + c + j);
        RWKV_UNROLL
        for (int t = 0; t < TT; ++t) {
          __m256i pairs = _mm256_maddubs_epi16(w[0], broadcast_four(x, t0 + t, b, c));
          RWKV_UNROLL
          for (int j = 1; j < 4; ++j)
            pairs = _mm256_add_epi16(
                pairs, _mm256_maddubs_epi16(w[j], broadcast_four(x, t0 + t, b, c + j)));
          dot[t] = _mm256_add_epi32(dot[t], _mm256_madd_epi16(pairs, _mm256_set1_epi16(1)));
        }
      }
    }
    RWKV_UNROLL
    for (int t = 0; t < TT; ++t)
      sum[t] = chain_step<kType>(sum[t], dot[t], panel.d[b], panel.m[b], x, t0 + t, b);
  }
  RWKV_UNROLL
  for (int t = 0; t < TT; ++t) store_rows(y + t * ldy, sum[t], n);
}

template <DType kType>
void rows_int8(const Tensor& w, const Int8Activations& x, float* y, int64_t r0, int64_t r1) {
  const int64_t O = w.rows(), blocks = x.K / 32;
  const uint64_t row_bytes = w.row_bytes();
  if (x.T <= kStreamedInt8Tokens) {
    for (int64_t r = r0; r < r1; r += kRows) {
      const int64_t n = std::min<int64_t>(kRows, r1 - r);
      const int64_t next = std::min(r + kRows, r1), next_n = std::min<int64_t>(kRows, r1 - next);
      streamed_tokens<kType>(RowGroup<kType>(w.data, row_bytes, r, n), x, y + r, O, n,
                             w.data + uint64_t(next) * row_bytes, int64_t(next_n * row_bytes));
    }
    return;
  }
  thread_local Panel panel;
  panel.reserve(blocks);
  for (int64_t r = r0; r < r1; r += kRows) {
    const int64_t n = std::min<int64_t>(kRows, r1 - r);
    pack_group<kType>(RowGroup<kType>(w.data, row_bytes, r, n), blocks, panel);
    int64_t t = 0;
    for (; t + 4 <= x.T; t += 4) panel_tile<kType, 4>(panel, x, t, y + t * O + r, O, n);
    for (; t < x.T; ++t) panel_tile<kType, 1>(panel, x, t, y + t * O + r, O, n);
  }
}

}  // namespace

void linear_rows_int8(const Tensor& w, const Int8Activations& x, float* y, int64_t r0, int64_t r1) {
  with_block_type(w.dtype, [&](auto type) { rows_int8<type.value>(w, x, y, r0, r1); });
}

}  // namespace rwkv::kernels::avx2

#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif
