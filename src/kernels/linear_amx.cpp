// AMX kernel of linear() with int8 activations (kernels/int8.h), for several tokens. One tile
// product (TDPBSSD) multiplies 16 tokens' activations of one 32-value block with that block of a
// 16-row group: 16 x 16 exact block integers, 8192 byte products, where VNNI does 64 an
// instruction. Each block's integers then go through the float32 chain the VNNI kernel and the
// scalar reference follow (fma(S, d_w * d_x, sum) block by block), so this kernel equals them bit
// for bit and a token gives the same outputs alone (VNNI) as in a chunk (AMX).
//
// A group is unpacked once per call (by its first tile of tokens, block by block) into signed
// levels (level - zero) in the packed layout's order, which is the tile layout of a B operand: row
// k of a block holds the four values 4k..4k+3 of each of the 16 rows. Two sets of tiles alternate,
// so one block's product runs while the previous block's integers are scaled into the chains.
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
#include "rwkv/aligned.h"

#if defined(__clang__)
#pragma clang attribute push(                                                                 \
    __attribute__((                                                                           \
        target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,fma,f16c,amx-tile,amx-int8"))), \
    apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,fma,f16c,amx-tile,amx-int8")
// GCC bug 105593, as in the other AVX-512 files.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

// Needs the ISA, so after the pragma (its helpers have internal linkage).
#include "kernels/amx_tiles.h"
#include "kernels/int8_groups_avx512.h"

namespace rwkv::kernels::amx {

namespace {

// Tiles 0 and 1: activations (16 tokens x one block's 32 bytes); 2 and 3: weights (8 rows of 64
// bytes); 4 and 5: products (16 tokens x 16 rows, int32): two sets taking turns.
void configure_tiles() {
  TileConfig config;
  for (int a : {0, 1}) config.bytes_per_row[a] = 32, config.rows[a] = kTileTokens;
  for (int b : {2, 3}) config.bytes_per_row[b] = 64, config.rows[b] = 8;
  for (int c : {4, 5}) config.bytes_per_row[c] = 64, config.rows[c] = kTileTokens;
  load_tile_config(config);
}

// Bytes of one unpacked block of a group: 8 tile rows of 16 x 4 signed levels.
using UnpackedBlock = int8_t[8 * 64];

// Starts the block product of tile set kSet: q the tokens' bytes of the block (rows q_stride
// apart), `levels` the unpacked block.
template <int kSet>
inline void start_block(const int8_t* q, int64_t q_stride, const UnpackedBlock& levels) {
  tile_load_stored<2 + kSet>(levels);
  tile_load<kSet>(q, q_stride);
  tile_zero<4 + kSet>();
  tile_dot_int8<4 + kSet, kSet, 2 + kSet>();
}

using BlockProducts = int32_t[kTileTokens * 16];

// Unpacks block b of a packed group: its signed levels to `levels`, the rows' d then m to
// `scales` (32 floats).
template <DType kType>
inline void unpack_block(const uint8_t* group, int64_t b, UnpackedBlock& levels, float* scales) {
  const uint8_t* ahead = group + b * kGroupBlockBytes<kType> + kPrefetchBytes;
  RWKV_UNROLL
  for (int64_t at = 0; at < kGroupBlockBytes<kType>; at += 64) prefetch_streamed(ahead + at);
  const GroupBlock<kType> block(group, b);
  const __m512i zero = _mm512_set1_epi8(char(block_zero_level(kType)));
  RWKV_UNROLL
  for (int c = 0; c < 8; ++c)
    _mm512_store_si512(levels + 64 * c, _mm512_sub_epi8(block.column[c], zero));
  _mm512_store_ps(scales, block.d);
  _mm512_store_ps(scales + 16, block.m);
}

// How many blocks ahead of its product the first tile unpacks a block: a tile load of bytes
// just stored waits for the stores (unpacking right before the product: BM_Linear 2-6% slower).
constexpr int64_t kUnpackAhead = 4;

// The products of a group's `blocks` blocks with a tile of 16 tokens: q their bytes (rows
// q_stride apart); token_terms their d_x then d_x * sum q for each block (block-major, 32
// floats a block). The first `tokens` of them are stored to y (rows ldy apart), n outputs each.
// With kUnpack (the group's first tile), each block is unpacked from `group` into `levels` and
// `scales` just before its product, so reading the group overlaps the tile work; without, they
// hold it already.
template <DType kType, bool kUnpack>
void tile_of_tokens(const uint8_t* group, UnpackedBlock* levels, float* scales, int64_t blocks,
                    const int8_t* q, int64_t q_stride, const float* token_terms, int64_t tokens,
                    float* y, int64_t ldy, int64_t n) {
  alignas(64) BlockProducts products[2];
  __m512 sum[kTileTokens];
  RWKV_UNROLL
  for (int t = 0; t < kTileTokens; ++t) sum[t] = _mm512_setzero_ps();
  const auto add_block = [&](int64_t b) __attribute__((always_inline)) {
    const int32_t* S = products[b % 2];
    const float* terms = token_terms + 32 * b;
    const __m512 d = _mm512_load_ps(scales + 32 * b), m = _mm512_load_ps(scales + 32 * b + 16);
    RWKV_UNROLL
    for (int t = 0; t < kTileTokens; ++t)
      sum[t] =
          chain_step<kType>(sum[t], _mm512_load_si512(S + 16 * t), d, m, terms[t], terms[16 + t]);
  };
  const auto unpack = [&](int64_t b) __attribute__((always_inline)) {
    if (kUnpack && b < blocks) unpack_block<kType>(group, b, levels[b], scales + 32 * b);
  };
  const auto start = [&](int64_t b) __attribute__((always_inline)) {
    unpack(b + kUnpackAhead);
    if (b % 2 == 0)
      start_block<0>(q + 32 * b, q_stride, levels[b]);
    else
      start_block<1>(q + 32 * b, q_stride, levels[b]);
  };
  // Block b + 1's product starts, block b's is stored, and block b - 1's (stored a block ago:
  // loading a tile store's data right after it waits for the store) goes into the chains.
  const auto step = [&](int64_t b) __attribute__((always_inline)) {
    if (b + 1 < blocks) start(b + 1);
    if (b % 2 == 0)
      tile_store<4>(products[0]);
    else
      tile_store<5>(products[1]);
  };
  for (int64_t b = 0; b < kUnpackAhead; ++b) unpack(b);
  start(0);
  step(0);
  for (int64_t b = 1; b < blocks; ++b) {
    step(b);
    add_block(b - 1);
  }
  add_block(blocks - 1);
  // Unrolled with constant indices, so that the chains stay in registers.
  RWKV_UNROLL
  for (int t = 0; t < kTileTokens; ++t)
    if (t < tokens) store_group(y + t * ldy, sum[t], n);
}

template <DType kType>
void rows_int8(const Tensor& w, const Int8Activations& x, float* y, int64_t r0, int64_t r1) {
  const int64_t O = w.rows(), blocks = x.K / 32, q_stride = x.pairs * 64;
  const int64_t tiles = (x.T + kTileTokens - 1) / kTileTokens;
  const uint64_t group_bytes = kGroup * w.row_bytes();
  thread_local AlignedVector<uint8_t> packed;  // for a tensor not packed at load (tests)
  thread_local AlignedVector<int8_t> levels;
  thread_local AlignedVector<float> scales;
  levels.resize(size_t(blocks * sizeof(UnpackedBlock)));
  scales.resize(size_t(blocks * 32));
  auto* unpacked = reinterpret_cast<UnpackedBlock*>(levels.data());
  configure_tiles();
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
    for (int64_t i = 0; i < tiles; ++i) {
      const int64_t t0 = i * kTileTokens;
      (i == 0 ? tile_of_tokens<kType, true>
              : tile_of_tokens<kType, false>)(group, unpacked, scales.data(), blocks, x.row_q(t0),
                                              q_stride, x.tile_terms.data() + i * blocks * 32,
                                              std::min(kTileTokens, x.T - t0), y + t0 * O + r, O,
                                              n);
    }
  }
  tile_release();
}

}  // namespace

void linear_rows_int8(const Tensor& w, const Int8Activations& x, float* y, int64_t r0, int64_t r1) {
  with_block_type(w.dtype, [&](auto type) { rows_int8<type.value>(w, x, y, r0, r1); });
}

}  // namespace rwkv::kernels::amx

#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC diagnostic pop
#pragma GCC pop_options
#endif
