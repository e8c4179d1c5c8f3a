// AMX kernel of linear() for BF16 weights and float32 inputs (kernels/amx_bf16.h). The weights
// are the A operand, read in place (16 rows of 32 values a tile, the row length as stride); the
// inputs, split three ways and laid out once per call, are the B operand; the sums stay in the C
// tiles over the whole row and leave them once. One TDPBF16PS does 16 x 16 x 32 products (16
// rows, up to 16 columns: 5 tokens' three parts, or a third of 16 tokens'), about 5x what two
// FMA ports do even with three parts an input.
// Headers come before the target pragma so that no inline function they define is compiled
// for this ISA and then shared with code that runs on any CPU.
#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "core/cpu.h"
#include "core/simd.h"
#include "kernels/amx_bf16.h"

#if defined(__clang__)
#pragma clang attribute push(                                                                   \
    __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,amx-tile,amx-bf16"))), \
    apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,amx-tile,amx-bf16")
// GCC bug 105593, as in the other AVX-512 files.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

// Needs the ISA, so after the pragma (its helpers have internal linkage).
#include "kernels/amx_tiles.h"

namespace rwkv::kernels::amx {

namespace {

constexpr int64_t kGroupTokens = 16;
constexpr int64_t kRows = 16;  // weight rows of a tile

using TileFloats = float[kRows * 16];

// Tiles: 0 and 1 weights (A), taking turns; 2, 3, 4 the column tiles of the inputs (B); 5, 6, 7
// their sums (C).
void configure_tiles(const Bf16Inputs& x) {
  TileConfig config;
  const int last_columns = int(3 * x.group_tokens - 16 * (x.column_tiles - 1));
  for (int a : {0, 1}) config.bytes_per_row[a] = 64, config.rows[a] = kRows;
  for (int c = 0; c < x.column_tiles; ++c) {
    const uint16_t bytes = uint16_t(4 * (c + 1 < x.column_tiles ? 16 : last_columns));
    config.bytes_per_row[2 + c] = bytes, config.rows[2 + c] = 16;
    config.bytes_per_row[5 + c] = bytes, config.rows[5 + c] = kRows;
  }
  load_tile_config(config);
}

// Prefetches kLines lines from p on, into L2 (the Intel hint, kernels/prefetch.h; AMX is
// Intel's). As asm: GCC 12 deleted these loops' __builtin_prefetch calls as dead code.
template <int64_t kLines>
inline void prefetch_lines(const uint8_t* p) {
  RWKV_UNROLL
  for (int64_t i = 0; i < kLines; ++i) asm volatile("prefetcht1 %0" : : "m"(p[64 * i]));
}

// The sums of 16 rows (a: the first row's bytes, rows `stride` apart) with token group g,
// stored to sums (by column tile). `next` (when not null): the next 16 rows, one piece of
// memory, prefetched in order, 16 lines a chunk, so that memory sees one stream (RWKV-7 BF16
// generation: 3-6% faster than the AVX-512 kernel; prefetching each row a fixed distance ahead
// kept 16 streams open and ran 6-25% slower than no prefetch; 32 rows a step, 8% slower).
template <int kColumnTiles>
void row_group(const uint8_t* a, const uint8_t* next, int64_t stride, const Bf16Inputs& x,
               int64_t g, TileFloats (&sums)[kColumnTiles]) {
  const int64_t chunks = x.K / 32;
  tile_zero<5>();
  if constexpr (kColumnTiles >= 2) tile_zero<6>();
  if constexpr (kColumnTiles == 3) tile_zero<7>();
  const auto chunk = [&]<int kA>(int64_t k) {
    if (next) prefetch_lines<kRows>(next + k * kRows * 64);
    tile_load<kA>(a + k * 64, stride);
    tile_load<2>(x.tile(g, k, 0), 64);
    tile_dot_bf16<5, kA, 2>();
    if constexpr (kColumnTiles >= 2) {
      tile_load<3>(x.tile(g, k, 1), 64);
      tile_dot_bf16<6, kA, 3>();
    }
    if constexpr (kColumnTiles == 3) {
      tile_load<4>(x.tile(g, k, 2), 64);
      tile_dot_bf16<7, kA, 4>();
    }
  };
  int64_t k = 0;
  for (; k + 1 < chunks; k += 2) {
    chunk.template operator()<0>(k);
    chunk.template operator()<1>(k + 1);
  }
  if (k < chunks) chunk.template operator()<0>(k);
  tile_store<5>(sums[0]);
  if constexpr (kColumnTiles >= 2) tile_store<6>(sums[1]);
  if constexpr (kColumnTiles == 3) tile_store<7>(sums[2]);
}

// Rows [r0, r1) of y for every token: row groups read in place, the last one (when it would
// run past the matrix) from a zero-padded copy; each with every token group in turn, so that
// its rows are read from memory once.
template <int kColumnTiles>
void rows_bf16(const Tensor& w, const Bf16Inputs& x, float* y, int64_t r0, int64_t r1) {
  const int64_t O = w.rows(), stride = int64_t(w.row_bytes());
  const int64_t groups = (x.T + kGroupTokens - 1) / kGroupTokens;
  thread_local AlignedVector<uint8_t> padded;
  alignas(64) TileFloats sums[kColumnTiles];
  configure_tiles(x);
  for (int64_t r = r0; r < r1; r += kRows) {
    const uint8_t* a = w.data + r * stride;
    if (r + kRows > O) {  // rows past the matrix read as zero
      padded.assign(size_t(kRows * stride), 0);
      std::memcpy(padded.data(), a, size_t((O - r) * stride));
      a = padded.data();
    }
    const int64_t n = std::min(kRows, r1 - r);
    // The next rows, while the first token group runs (the others find these rows in L2); past
    // r1 too, where this thread's next rows most often start.
    const uint8_t* next = r + 2 * kRows <= O ? a + kRows * stride : nullptr;
    for (int64_t g = 0; g < groups; ++g) {
      row_group<kColumnTiles>(a, g == 0 ? next : nullptr, stride, x, g, sums);
      const int64_t t0 = g * kGroupTokens, tokens = std::min(kGroupTokens, x.T - t0);
      for (int64_t t = 0; t < tokens; ++t)
        for (int64_t i = 0; i < n; ++i) {
          const float* s = sums[0] + i * 16;
          const auto part = [&](int64_t p) {
            const int64_t j = 3 * t + p;
            return s[(j / 16) * kRows * 16 + j % 16];
          };
          y[(t0 + t) * O + r + i] = (part(0) + part(1)) + part(2);
        }
    }
  }
  tile_release();
}

}  // namespace

bool runs_bf16(const Tensor& w) {
  return w.dtype == DType::BF16 && w.cols() % 32 == 0 && cpu_features().amx_bf16;
}

void split_inputs(const float* x, int64_t T, int64_t K, Bf16Inputs& out) {
  out.T = T;
  out.K = K;
  out.group_tokens = std::min(T, kGroupTokens);
  out.column_tiles = (3 * out.group_tokens + 15) / 16;
  const int64_t groups = (T + kGroupTokens - 1) / kGroupTokens, chunks = K / 32;
  out.tiles.assign(size_t(groups * chunks * out.column_tiles * 512), 0);
  // Pair i of a chunk goes to row i of its column: dword offsets 16 i.
  const __m512i rows =
      _mm512_mullo_epi32(_mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
                         _mm512_set1_epi32(16));
  for (int64_t t = 0; t < T; ++t) {
    const int64_t g = t / kGroupTokens, tg = t % kGroupTokens;
    for (int64_t k = 0; k < chunks; ++k) {
      __m512 rest0 = _mm512_loadu_ps(x + t * K + 32 * k);
      __m512 rest1 = _mm512_loadu_ps(x + t * K + 32 * k + 16);
      for (int64_t p = 0; p < 3; ++p) {
        // Round to nearest even; what is left is exact in float32.
        const __m256i low = (__m256i)_mm512_cvtneps_pbh(rest0);
        const __m256i high = (__m256i)_mm512_cvtneps_pbh(rest1);
        const __m512i pairs = _mm512_inserti64x4(_mm512_castsi256_si512(low), high, 1);
        const __m512 widened0 =
            _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(low), 16));
        const __m512 widened1 =
            _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(high), 16));
        rest0 = _mm512_sub_ps(rest0, widened0);
        rest1 = _mm512_sub_ps(rest1, widened1);
        const int64_t j = 3 * tg + p;
        _mm512_i32scatter_epi32(out.tile(g, k, j / 16) + 2 * (j % 16), rows, pairs, 4);
      }
    }
  }
}

void linear_rows_bf16(const Tensor& w, const Bf16Inputs& x, float* y, int64_t r0, int64_t r1) {
  switch (x.column_tiles) {
    case 1:
      return rows_bf16<1>(w, x, y, r0, r1);
    case 2:
      return rows_bf16<2>(w, x, y, r0, r1);
    default:
      return rows_bf16<3>(w, x, y, r0, r1);
  }
}

}  // namespace rwkv::kernels::amx

#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC diagnostic pop
#pragma GCC pop_options
#endif
