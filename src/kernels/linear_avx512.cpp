// AVX-512 variants of linear() and matmul(). Plain float weights (F32, F16, BF16) are widened to
// float32 while they are loaded; ggml blocks are unpacked to float32 in registers inside the
// multiply tile for up to four tokens, and into a small panel of rows shared by more. Products
// and sums stay in float32 (exact decoding, FMA), so results differ from the scalar reference
// only by summation order.
// Headers come before the target pragma so that no inline function they define is compiled
// for this ISA and then shared with code that runs on any CPU.
#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "core/simd.h"
#include "kernels/half_table.h"
#include "kernels/int8.h"
#include "kernels/prefetch.h"
#include "kernels/variants.h"
#include "rwkv/aligned.h"

#if defined(__clang__)
#pragma clang attribute push( \
    __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,fma,f16c"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,fma,f16c")
// GCC 12 flags the deliberately undefined pass-through lanes inside its own AVX-512 intrinsics
// (GCC bug 105593) wherever they are inlined.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

// Needs the ISA, so after the pragma (its helpers have internal linkage).
#include "kernels/avx512_util.h"

namespace rwkv::kernels::avx512 {

namespace {

// The fp16 at p in all 16 lanes: one broadcast load from the table (no shuffle-port work).
inline __m512 broadcast_half(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return _mm512_set1_ps(kHalfToFloat[h]);
}

// 16 weights of a plain-float row starting at element k, as float32.
template <DType kType>
inline __m512 load16(const uint8_t* row, int64_t k) {
  if constexpr (kType == DType::F32) {
    return _mm512_loadu_ps(reinterpret_cast<const float*>(row) + k);
  } else if constexpr (kType == DType::F16) {
    return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(row + 2 * k)));
  } else {
    const __m256i b = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(row + 2 * k));
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(b), 16));
  }
}

template <DType kType>
inline __m512 load_tail(const uint8_t* row, int64_t k, __mmask16 m) {
  if constexpr (kType == DType::F32) {
    return _mm512_maskz_loadu_ps(m, reinterpret_cast<const float*>(row) + k);
  } else {
    const __m256i b = _mm256_maskz_loadu_epi16(m, row + 2 * k);
    if constexpr (kType == DType::F16) return _mm512_cvtph_ps(b);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(b), 16));
  }
}

// The 32 weights of one ggml block as float32, elements 0-15 in `lo` and 16-31 in `hi`: exactly
// the values of the scalar dequantize() (each is one product of a small integer and the fp16
// scale, exact in float32, plus at most one rounded addition of the offset). Unpacked in
// registers from the block bytes, so a matrix-vector product reads each weight byte once and
// writes nothing.
template <DType kType>
inline void block_vectors(const uint8_t* b, __m512& lo, __m512& hi) {
  if constexpr (kType == DType::Q8_0 || kType == DType::I8) {
    const uint8_t* q = b + (kType == DType::I8 ? 0 : 2);  // I8: 32 integers, d = 1
    lo = _mm512_cvtepi32_ps(
        _mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(q))));
    hi = _mm512_cvtepi32_ps(
        _mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(q + 16))));
    if constexpr (kType == DType::Q8_0) {
      const __m512 d = broadcast_half(b);
      lo = _mm512_mul_ps(lo, d);
      hi = _mm512_mul_ps(hi, d);
    }
  } else {
    const __m512 d = broadcast_half(b);
    // The block's 16 (or 32) possible values form a table in one (two) registers, and a
    // permute, which reads only the low 4 (5) bits of each index, turns levels into weights.
    const __m512 level = _mm512_setr_ps(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    // (q - zero) * d is exact, so computing it as (level - zero) * d, or q * d + m with the one
    // rounding of the reference's addition as an FMA, gives the reference's values.
    const __m512 m = kHasMin<kType> ? broadcast_half(b + 2) : _mm512_setzero_ps();
    const __m512 base =
        kHasMin<kType> ? level : _mm512_sub_ps(level, _mm512_set1_ps(kFiveBit<kType> ? 16 : 8));
    const __m512 table0 = kHasMin<kType> ? _mm512_fmadd_ps(base, d, m) : _mm512_mul_ps(base, d);
    const uint8_t* p = b + (kHasMin<kType> ? 4 : 2);
    const uint8_t* qh = p;
    if constexpr (kFiveBit<kType>) p += 4;
    // Byte j holds element j (low nibble) and j + 16 (high nibble).
    const __m512i bytes =
        _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    const __m512i hi_nibbles = _mm512_srli_epi32(bytes, 4);
    if constexpr (kFiveBit<kType>) {
      const __m512 table1 = _mm512_fmadd_ps(_mm512_add_ps(base, _mm512_set1_ps(16)), d, m);
      // Fifth bits: qh in every lane, rotated so that lane j has bit j (or j + 16) at bit 4,
      // then merged under the nibble (bits above 4 are left as they are: the permute reads
      // only bits 0-4). Shifts and bitwise operations run on either vector port; moving qh
      // to mask registers instead took two more operations on the shuffle port.
      int32_t qh_bits;
      std::memcpy(&qh_bits, qh, 4);
      const __m512i qh_lanes = _mm512_set1_epi32(qh_bits);
      const __m512i lo_bit4 = _mm512_rorv_epi32(
          qh_lanes, _mm512_setr_epi32(28, 29, 30, 31, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11));
      const __m512i hi_bit4 = _mm512_rorv_epi32(
          qh_lanes,
          _mm512_setr_epi32(12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27));
      // (nibble & 0x0f) | (bit4 & ~0x0f): ternary logic table 0xe4 on (A, B, C).
      const __m512i low4 = _mm512_set1_epi32(0x0f);
      const __m512i q0 = _mm512_ternarylogic_epi32(bytes, lo_bit4, low4, 0xe4);
      const __m512i q1 = _mm512_ternarylogic_epi32(hi_nibbles, hi_bit4, low4, 0xe4);
      lo = _mm512_permutex2var_ps(table0, q0, table1);
      hi = _mm512_permutex2var_ps(table0, q1, table1);
    } else {
      lo = _mm512_permutexvar_ps(bytes, table0);
      hi = _mm512_permutexvar_ps(hi_nibbles, table0);
    }
  }
}

// Several tokens of plain-float weights: rows are taken in blocks of about this many bytes,
// which stay in L2 (2 MiB or more on the CPUs this targets) while every token passes.
constexpr uint64_t kRowBlockBytes = 256 << 10;

// How far ahead of a one-token tile each weight row is prefetched (about two 2048-wide BF16 rows
// ahead). On Zen 5 the hardware prefetchers alone left one thread streaming a BF16 matrix at
// ~30 GB/s; 8 KB ahead, ~38 (2 threads: 43-55 -> 49-74 GB/s, with the machine's probe at 50-78).
// The hint: kernels/prefetch.h.
constexpr int64_t kPrefetchBytes = 8192;

// out[i][t] = dot(row i, x row t) for R weight rows and TT tokens: R x TT accumulators of 16
// lanes, so each weight vector loaded serves TT tokens and each x vector R rows. Lane j of an
// accumulator sums elements j, j + 16, j + 32, ... in order whatever R and TT are, so an output
// does not depend on T or on which rows and tokens share its tile. For ggml blocks, elements
// 0-15 and 16-31 of each block go to two accumulators, added at the end: two independent FMA
// chains, so one row alone (one token) is not bound by the FMA latency.
template <DType kType, int R, int TT>
inline void tile(const uint8_t* const* rows, const float* x, int64_t K, float* y, int64_t ldy) {
  __m512 acc[R][TT];
  RWKV_UNROLL
  for (int i = 0; i < R; ++i) {
    RWKV_UNROLL
    for (int t = 0; t < TT; ++t) acc[i][t] = _mm512_setzero_ps();
  }
  if constexpr (kIsBlock<kType>) {
    const int64_t bb = kBlockBytes<kType>;
    __m512 acc_hi[R][TT];
    RWKV_UNROLL
    for (int i = 0; i < R; ++i) {
      RWKV_UNROLL
      for (int t = 0; t < TT; ++t) acc_hi[i][t] = _mm512_setzero_ps();
    }
#pragma GCC unroll 4
    for (int64_t k = 0, b = 0; k < K; k += 32, b += bb) {
      __m512 w[R][2];
      // Only where the weights stream (one row at a time); larger tiles reread them from L1.
      if constexpr (R == 1) prefetch_streamed(rows[0] + b + kPrefetchBytes);
      RWKV_UNROLL
      for (int i = 0; i < R; ++i) block_vectors<kType>(rows[i] + b, w[i][0], w[i][1]);
      RWKV_UNROLL
      for (int t = 0; t < TT; ++t) {
        const __m512 x0 = _mm512_loadu_ps(x + t * K + k), x1 = _mm512_loadu_ps(x + t * K + k + 16);
        RWKV_UNROLL
        for (int i = 0; i < R; ++i) acc[i][t] = _mm512_fmadd_ps(w[i][0], x0, acc[i][t]);
        RWKV_UNROLL
        for (int i = 0; i < R; ++i) acc_hi[i][t] = _mm512_fmadd_ps(w[i][1], x1, acc_hi[i][t]);
      }
    }
    RWKV_UNROLL
    for (int i = 0; i < R; ++i) {
      RWKV_UNROLL
      for (int t = 0; t < TT; ++t) acc[i][t] = _mm512_add_ps(acc[i][t], acc_hi[i][t]);
    }
  } else {
    int64_t k = 0;
    for (; k + 16 <= K; k += 16) {
      // Where the weights stream (one row at a time), as for ggml blocks above; 16-bit types
      // read half a line a vector (kernels/prefetch.h says when that prefetches).
      if constexpr (R == 1) {
        if (kElementBytes<kType> == 4 || kPrefetchEveryStep || k % 32 == 0)
          prefetch_streamed(rows[0] + k * kElementBytes<kType> + kPrefetchBytes);
      }
      __m512 w[R];
      RWKV_UNROLL
      for (int i = 0; i < R; ++i) w[i] = load16<kType>(rows[i], k);
      RWKV_UNROLL
      for (int t = 0; t < TT; ++t) {
        const __m512 xv = _mm512_loadu_ps(x + t * K + k);
        RWKV_UNROLL
        for (int i = 0; i < R; ++i) acc[i][t] = _mm512_fmadd_ps(w[i], xv, acc[i][t]);
      }
    }
    if (k < K) {
      const __mmask16 m = __mmask16((1u << (K - k)) - 1);
      __m512 w[R];
      RWKV_UNROLL
      for (int i = 0; i < R; ++i) w[i] = load_tail<kType>(rows[i], k, m);
      RWKV_UNROLL
      for (int t = 0; t < TT; ++t) {
        const __m512 xv = _mm512_maskz_loadu_ps(m, x + t * K + k);
        RWKV_UNROLL
        for (int i = 0; i < R; ++i) acc[i][t] = _mm512_fmadd_ps(w[i], xv, acc[i][t]);
      }
    }
  }
  RWKV_UNROLL
  for (int i = 0; i < R; ++i) {
    RWKV_UNROLL
    for (int t = 0; t < TT; ++t) y[t * ldy + i] = hsum(acc[i][t]);
  }
}

// All T tokens against R rows, tokens four at a time.
template <DType kType, int R>
inline void rows_times_tokens(const uint8_t* const* rows, const float* x, int64_t T, int64_t K,
                              float* y, int64_t ldy) {
  int64_t t = 0;
  for (; t + 4 <= T; t += 4) tile<kType, R, 4>(rows, x + t * K, K, y + t * ldy, ldy);
  switch (T - t) {
    case 3:
      tile<kType, R, 3>(rows, x + t * K, K, y + t * ldy, ldy);
      break;
    case 2:
      tile<kType, R, 2>(rows, x + t * K, K, y + t * ldy, ldy);
      break;
    case 1:
      tile<kType, R, 1>(rows, x + t * K, K, y + t * ldy, ldy);
      break;
    default:
      break;
  }
}

// The block order of tile() (the first and the second 16 elements of every block summed in two
// accumulators, added at the end) over R rows decoded to float32 with the halves apart
// (split_row()), against x split alike: each sum is one contiguous pass over K / 2 columns.
// (Both sums over naturally ordered rows need twice the accumulators, so they took turns over
// chunks of K: 5-10% slower at K = 1024 and 2048.)
template <int R, int TT>
inline void split_block_tile(const float* rows, int64_t ld_rows, const float* x, int64_t K,
                             float* y, int64_t ldy) {
  const int64_t H = K / 2;
  __m512 first[R][TT];
  for (int half = 0; half < 2; ++half) {
    __m512 acc[R][TT];
    RWKV_UNROLL
    for (int i = 0; i < R; ++i) {
      RWKV_UNROLL
      for (int t = 0; t < TT; ++t) acc[i][t] = _mm512_setzero_ps();
    }
    for (int64_t k = half * H; k < (half + 1) * H; k += 16) {
      __m512 w[R];
      RWKV_UNROLL
      for (int i = 0; i < R; ++i) w[i] = _mm512_load_ps(rows + i * ld_rows + k);
      RWKV_UNROLL
      for (int t = 0; t < TT; ++t) {
        const __m512 xv = _mm512_load_ps(x + t * K + k);
        RWKV_UNROLL
        for (int i = 0; i < R; ++i) acc[i][t] = _mm512_fmadd_ps(w[i], xv, acc[i][t]);
      }
    }
    RWKV_UNROLL
    for (int i = 0; i < R; ++i) {
      RWKV_UNROLL
      for (int t = 0; t < TT; ++t) {
        if (half == 0)
          first[i][t] = acc[i][t];
        else
          y[t * ldy + i] = hsum(_mm512_add_ps(first[i][t], acc[i][t]));
      }
    }
  }
}

template <int R>
inline void split_rows_times_tokens(const float* rows, int64_t ld_rows, const float* x, int64_t T,
                                    int64_t K, float* y, int64_t ldy) {
  int64_t t = 0;
  for (; t + 4 <= T; t += 4) split_block_tile<R, 4>(rows, ld_rows, x + t * K, K, y + t * ldy, ldy);
  switch (T - t) {
    case 3:
      return split_block_tile<R, 3>(rows, ld_rows, x + t * K, K, y + t * ldy, ldy);
    case 2:
      return split_block_tile<R, 2>(rows, ld_rows, x + t * K, K, y + t * ldy, ldy);
    case 1:
      return split_block_tile<R, 1>(rows, ld_rows, x + t * K, K, y + t * ldy, ldy);
    default:
      return;
  }
}

// A row of ggml blocks as float32, each block's first 16 values in the row's first half and its
// second 16 in the second half, block by block.
template <DType kType>
void split_row(const uint8_t* row, int64_t K, float* out) {
  const int64_t bb = kBlockBytes<kType>;
  for (int64_t i = 0; i < K / 32; ++i) {
    __m512 lo, hi;
    block_vectors<kType>(row + i * bb, lo, hi);
    _mm512_store_ps(out + 16 * i, lo);
    _mm512_store_ps(out + K / 2 + 16 * i, hi);
  }
}

// x's T rows of K with each block's halves apart, as split_row() lays out the weights.
inline void split_tokens(const float* x, int64_t T, int64_t K, float* out) {
  for (int64_t t = 0; t < T; ++t, x += K, out += K)
    for (int64_t b = 0; b < K / 32; ++b) {
      _mm512_store_ps(out + 16 * b, _mm512_loadu_ps(x + 32 * b));
      _mm512_store_ps(out + K / 2 + 16 * b, _mm512_loadu_ps(x + 32 * b + 16));
    }
}

// Tokens a panel of split rows serves at a time.
constexpr int64_t kSplitTokens = 64;

// Up to this many tokens stream the weights one row at a time, each row meeting every token
// (tile() with one row): blocking rows for several tokens (a decoded panel, or four rows at
// once) made two tokens, a server's step for two sequences, cost 1.7-3x one.
constexpr int64_t kStreamedTokens = 4;

// tile<kType, 1, T>() over `rows` consecutive rows from row0.
template <DType kType, int TT = 1>
void rows_streamed(const uint8_t* row0, uint64_t row_bytes, const float* x, int64_t T, int64_t K,
                   float* y, int64_t O, int64_t rows) {
  if constexpr (TT < kStreamedTokens)
    if (T != TT) return rows_streamed<kType, TT + 1>(row0, row_bytes, x, T, K, y, O, rows);
  for (int64_t i = 0; i < rows; ++i, row0 += row_bytes) tile<kType, 1, TT>(&row0, x, K, y + i, O);
}

template <DType kType>
void linear_direct(const Tensor& w, const float* x, int64_t T, float* y, int64_t r0, int64_t r1) {
  const int64_t K = w.cols(), O = w.rows();
  const uint64_t row_bytes = w.row_bytes();
  const uint8_t* row0 = w.data + uint64_t(r0) * row_bytes;
  int64_t r = r0;
  // One row at a time for one to kStreamedTokens tokens: one sequential stream reads DRAM much
  // faster than interleaved ones (a 256 MB F16 matrix on one thread: ~33 vs ~22 GB/s for four
  // rows), and the row's FMA chains still keep up with it.
  if (T <= kStreamedTokens) {
    rows_streamed<kType>(row0, row_bytes, x, T, K, y + r, O, r1 - r);
    return;
  }
  if constexpr (kIsBlock<kType>) {
    // Several tokens: six rows (then four) are unpacked into a float32 panel, which every token
    // of a group of up to kSplitTokens then reads (the group bounds the copy of x: 2 MB at K =
    // 8192). Six rows read each x vector for 24 products instead of 16.
    // Rows one cache line further apart than K, so that they do not share L1 sets.
    const int64_t ld_panel = K + 16;
    thread_local AlignedVector<float> panel_buffer, x_buffer;
    panel_buffer.resize(size_t(6 * ld_panel));
    x_buffer.resize(size_t(std::min(T, kSplitTokens) * K));
    float* panel = panel_buffer.data();
    float* x_split = x_buffer.data();
    // Rows in panels of six, then one of four; singles are left to the tail below.
    const int64_t rows = (r1 - r) / 6 * 6 + (r1 - r) % 6 / 4 * 4;
    for (int64_t t0 = 0; t0 < T && rows > 0; t0 += kSplitTokens) {
      const int64_t n = std::min(kSplitTokens, T - t0);
      split_tokens(x + t0 * K, n, K, x_split);
      const uint8_t* row = row0;
      for (int64_t i = r; i < r + rows;) {
        const int R = i + 6 <= r + rows ? 6 : 4;
        for (int j = 0; j < R; ++j) split_row<kType>(row + j * row_bytes, K, panel + j * ld_panel);
        if (R == 6)
          split_rows_times_tokens<6>(panel, ld_panel, x_split, n, K, y + t0 * O + i, O);
        else
          split_rows_times_tokens<4>(panel, ld_panel, x_split, n, K, y + t0 * O + i, O);
        i += R;
        row += R * row_bytes;
      }
    }
    r += rows;
    row0 += rows * row_bytes;
  } else {
    // Tokens outside, rows inside, over blocks of rows that stay in L2: a tile's 4-6 token rows
    // of x stay in L1 while the block's weight rows pass by, instead of x streaming from L2.
    const int64_t block_rows = std::max<int64_t>(4, int64_t(kRowBlockBytes / row_bytes) / 4 * 4);
    for (; r + 4 <= r1;) {
      const int64_t rb_end = r + std::min<int64_t>(block_rows, (r1 - r) / 4 * 4);
      int64_t t = 0;
      const auto token_group = [&]<int TT>() {
        const uint8_t* row = row0;
        for (int64_t i = r; i < rb_end; i += 4, row += 4 * row_bytes) {
          const uint8_t* rows[4] = {row, row + row_bytes, row + 2 * row_bytes, row + 3 * row_bytes};
          tile<kType, 4, TT>(rows, x + t * K, K, y + t * O + i, O);
        }
        t += TT;
      };
      while (t + 6 <= T) token_group.template operator()<6>();
      if (T - t >= 4) token_group.template operator()<4>();
      if (T - t == 3) token_group.template operator()<3>();
      if (T - t == 2) token_group.template operator()<2>();
      if (T - t == 1) token_group.template operator()<1>();
      row0 += (rb_end - r) * row_bytes;
      r = rb_end;
    }
  }
  for (; r < r1; ++r, row0 += row_bytes) rows_times_tokens<kType, 1>(&row0, x, T, K, y + r, O);
}

// NV vectors of 16 weights of row `row`, columns [c, c + 16 NV), as float32; `last` masks the
// final vector's columns (ggml blocks: NV is even and the columns are whole blocks).
template <DType kType, int NV>
inline void row_vectors(const uint8_t* row, int64_t c, __mmask16 last, __m512 (&w)[NV]) {
  if constexpr (kIsBlock<kType>) {
    static_assert(NV % 2 == 0);
    const int64_t bb = kBlockBytes<kType>;
    RWKV_UNROLL
    for (int v = 0; v < NV; v += 2)
      block_vectors<kType>(row + (c / 32 + v / 2) * bb, w[v], w[v + 1]);
  } else {
    RWKV_UNROLL
    for (int v = 0; v + 1 < NV; ++v) w[v] = load16<kType>(row, c + 16 * v);
    w[NV - 1] = last == 0xffff ? load16<kType>(row, c + 16 * (NV - 1))
                               : load_tail<kType>(row, c + 16 * (NV - 1), last);
  }
}

// y[t][c, c + 16 NV) for TT tokens: TT x NV accumulators, each output summed over the rows in
// order with one FMA per row, as a row-by-row axpy would (so the result does not depend on T,
// the tile or the column split).
template <DType kType, int TT, int NV>
inline void cols_tile(const float* x, int64_t ldx, const Tensor& w, uint64_t row_bytes, float* y,
                      int64_t c, __mmask16 last) {
  const int64_t I = w.rows(), O = w.cols();
  __m512 acc[TT][NV];
  RWKV_UNROLL
  for (int t = 0; t < TT; ++t) {
    RWKV_UNROLL
    for (int v = 0; v < NV; ++v) acc[t][v] = _mm512_setzero_ps();
  }
  for (int64_t i = 0; i < I; ++i) {
    __m512 wv[NV];
    row_vectors<kType, NV>(w.data + uint64_t(i) * row_bytes, c, last, wv);
    RWKV_UNROLL
    for (int t = 0; t < TT; ++t) {
      const __m512 a = _mm512_set1_ps(x[t * ldx + i]);
      RWKV_UNROLL
      for (int v = 0; v < NV; ++v) acc[t][v] = _mm512_fmadd_ps(a, wv[v], acc[t][v]);
    }
  }
  RWKV_UNROLL
  for (int t = 0; t < TT; ++t) {
    RWKV_UNROLL
    for (int v = 0; v + 1 < NV; ++v) _mm512_storeu_ps(y + t * O + c + 16 * v, acc[t][v]);
    _mm512_mask_storeu_ps(y + t * O + c + 16 * (NV - 1), last, acc[t][NV - 1]);
  }
}

// All T tokens for NV column vectors at c, tokens four at a time.
template <DType kType, int NV>
inline void cols_times_tokens(const float* x, int64_t ldx, int64_t T, const Tensor& w,
                              uint64_t row_bytes, float* y, int64_t c, __mmask16 last) {
  const int64_t O = w.cols();
  int64_t t = 0;
  for (; t + 4 <= T; t += 4)
    cols_tile<kType, 4, NV>(x + t * ldx, ldx, w, row_bytes, y + t * O, c, last);
  switch (T - t) {
    case 3:
      return cols_tile<kType, 3, NV>(x + t * ldx, ldx, w, row_bytes, y + t * O, c, last);
    case 2:
      return cols_tile<kType, 2, NV>(x + t * ldx, ldx, w, row_bytes, y + t * O, c, last);
    case 1:
      return cols_tile<kType, 1, NV>(x + t * ldx, ldx, w, row_bytes, y + t * O, c, last);
    default:
      return;
  }
}

template <DType kType>
void matmul_typed(const float* x, int64_t ldx, int64_t T, const Tensor& w, float* y, int64_t c0,
                  int64_t c1) {
  const uint64_t row_bytes = w.row_bytes();  // once: it divides by the block size
  int64_t c = c0;
  // One token has one FMA chain per accumulator and nothing else to overlap with it: eight
  // column vectors at a time keep the FMA latency covered (the sums are the same).
  if (T == 1)
    for (; c + 128 <= c1; c += 128) cols_tile<kType, 1, 8>(x, ldx, w, row_bytes, y, c, 0xffff);
  for (; c + 64 <= c1; c += 64) cols_times_tokens<kType, 4>(x, ldx, T, w, row_bytes, y, c, 0xffff);
  const int64_t rest = c1 - c;
  if (rest == 0) return;
  const int n_vectors = int((rest + 15) / 16);
  const __mmask16 last = __mmask16((1u << (rest - 16 * (n_vectors - 1))) - 1);
  if constexpr (kIsBlock<kType>) {
    cols_times_tokens<kType, 2>(x, ldx, T, w, row_bytes, y, c, last);  // whole blocks: rest is 32
  } else {
    switch (n_vectors) {
      case 3:
        return cols_times_tokens<kType, 3>(x, ldx, T, w, row_bytes, y, c, last);
      case 2:
        return cols_times_tokens<kType, 2>(x, ldx, T, w, row_bytes, y, c, last);
      default:
        return cols_times_tokens<kType, 1>(x, ldx, T, w, row_bytes, y, c, last);
    }
  }
}

}  // namespace

void linear_rows(const Tensor& w, const float* x, int64_t T, float* y, int64_t r0, int64_t r1) {
  switch (w.dtype) {
    case DType::F32:
      return linear_direct<DType::F32>(w, x, T, y, r0, r1);
    case DType::F16:
      return linear_direct<DType::F16>(w, x, T, y, r0, r1);
    case DType::BF16:
      return linear_direct<DType::BF16>(w, x, T, y, r0, r1);
    case DType::Q4_0:
      return linear_direct<DType::Q4_0>(w, x, T, y, r0, r1);
    case DType::Q4_1:
      return linear_direct<DType::Q4_1>(w, x, T, y, r0, r1);
    case DType::Q5_0:
      return linear_direct<DType::Q5_0>(w, x, T, y, r0, r1);
    case DType::Q5_1:
      return linear_direct<DType::Q5_1>(w, x, T, y, r0, r1);
    case DType::Q8_0:
      return linear_direct<DType::Q8_0>(w, x, T, y, r0, r1);
    case DType::I8:
      return linear_direct<DType::I8>(w, x, T, y, r0, r1);
  }
}

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

}  // namespace rwkv::kernels::avx512

#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC diagnostic pop
#pragma GCC pop_options
#endif
