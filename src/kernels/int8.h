// linear() with int8 activations, for ggml block weights: the activations are rounded to int8
// per 32-element block (scale max|x| / 127, as ggml's Q8_0), and each weight block meets its
// activation block in one exact integer dot product. This is the arithmetic of ggml (and so of
// rwkv.cpp) for quantized weights; VNNI does 64 byte products per instruction, where unpacking
// the weights to float32 costs several instructions per 16. It rounds the activations, so it is
// an opt-in (Tensor::int8_activations), not a kernel variant of the exact product.
//
// Both the scalar reference and the SIMD kernel read the activations from one layout, made once
// per call by quantize_activations(). The K values of a row go in pairs of blocks (64 bytes in
// natural order, the last pair padded with a zero block). Every kernel computes each output as
// the reference's chain over the blocks, with exact block integers, so all of them give the same
// bits.
#pragma once

#include <cstdint>
#include <type_traits>
#include <vector>

#include "core/tensor.h"
#include "rwkv/aligned.h"

namespace rwkv::kernels {

// T rows of K activations rounded for weights of `dtype` (K a multiple of 32).
struct Int8Activations {
  DType dtype = DType::Q8_0;
  int64_t T = 0, K = 0, pairs = 0;  // pairs = ceil(K / 64) per row
  AlignedVector<int8_t> q;          // (T, pairs, 64): 64-byte rows, each one aligned load
  std::vector<float> scale;         // (T, K / 32): d = max |x| / 127 of each block
  std::vector<int32_t> block_bias;  // (T, K / 32): -block_zero_level(dtype) * sum of q
  std::vector<float> block_qsum;    // (T, K / 32): d * sum of q (the offset term of Q4_1/Q5_1)
  // For the AMX kernel (amx::prepare_tiles, which also pads q with zero rows to a multiple of
  // 16): per tile of 16 tokens and block, the 16 tokens' scale then block_qsum (zero past T), so
  // that one pointer reaches a block's tokens.
  AlignedVector<float> tile_terms;  // (ceil(T / 16), K / 32, 2, 16)

  // Sizes every array for T rows of K, zeroed (so a padded last block reads as zero).
  void reset(DType weight_dtype, int64_t rows, int64_t k);

  const int8_t* row_q(int64_t t) const { return q.data() + t * pairs * 64; }
};

// The block layouts as compile-time facts, for the SIMD kernels. The kernels take I8 rows as
// blocks too (below).
template <DType kType>
constexpr bool kIsBlock = kType != DType::F32&& kType != DType::F16&& kType != DType::BF16;
template <DType kType>
constexpr bool kHasMin = kType == DType::Q4_1 || kType == DType::Q5_1;
template <DType kType>
constexpr bool kFiveBit = kType == DType::Q5_0 || kType == DType::Q5_1;
// I8 rows are handled as blocks of 32 stored integers with no scale of their own (d = 1); the
// row scale is applied to the outputs (kernels/dispatch.cpp).
template <DType kType>
constexpr int64_t kBlockBytes = kType == DType::Q4_0   ? 18
                                : kType == DType::Q4_1 ? 20
                                : kType == DType::Q5_0 ? 22
                                : kType == DType::Q5_1 ? 24
                                : kType == DType::I8   ? 32
                                                       : 34;
// Bytes per element of a plain-float type (F32, F16, BF16).
template <DType kType>
constexpr int64_t kElementBytes = kType == DType::F32 ? 4 : 2;
inline int64_t block_bytes_of(DType t) { return t == DType::I8 ? 32 : dtype_info(t).block_bytes; }

// fn(std::integral_constant<DType, t>{}) for the block type (or I8) t = dtype (nothing for plain
// floats).
template <typename Fn>
void with_block_type(DType dtype, const Fn& fn) {
  switch (dtype) {
    case DType::Q4_0:
      return fn(std::integral_constant<DType, DType::Q4_0>{});
    case DType::Q4_1:
      return fn(std::integral_constant<DType, DType::Q4_1>{});
    case DType::Q5_0:
      return fn(std::integral_constant<DType, DType::Q5_0>{});
    case DType::Q5_1:
      return fn(std::integral_constant<DType, DType::Q5_1>{});
    case DType::Q8_0:
      return fn(std::integral_constant<DType, DType::Q8_0>{});
    case DType::I8:
      return fn(std::integral_constant<DType, DType::I8>{});
    default:
      return;
  }
}

// The VNNI kernel's layout of a block-type (or I8) matrix, made once (by the loader, which keeps
// it in the repack cache, io/repack_cache.h, so later loads map it): rows in groups of 16 (a
// short last group padded with zero rows), each group its blocks in order, each block the 16
// rows' levels then their scales, so that one token streams a group sequentially with no
// shuffles and no reductions.
//   Levels of a block: nibble types 4 vectors of 64 bytes, lane i of vector k = bytes 4k..4k+3
//   of row i's 16 nibble bytes (low nibbles: elements 4k.., high: 16 + 4k..); Q8_0 and I8 8
//   vectors, lane i of vector c = elements 4c..4c+3 of row i as unsigned levels (int8 + 128).
//   Scales of a block: the 16 rows' fp16 d, then their fp16 m (Q4_1, Q5_1), then (Q5_0, Q5_1)
//   64 bytes of fifth bits, bit c of byte 4i + j = the fifth bit of row i's element 4c + j (so
//   byte p goes with byte p of every column vector). I8 has none (its row scales stay in the
//   tensor).
// A group takes 16 row_bytes(), so packing adds nothing but the padding of the last group.
uint64_t int8_groups_bytes(const Tensor& w);
// The version of that layout: a stored copy (the repack cache) of another version is rebuilt.
constexpr int kInt8GroupsLayout = 3;
// Packs groups [g0, g1) of w (rows 16 g0 ...) to `out`, which holds (g1 - g0) groups.
void pack_int8_groups(const Tensor& w, int64_t g0, int64_t g1, uint8_t* out);

namespace scalar {
// Rounds x (T, K) for weights of block type `dtype`: q = round-half-even(x * (1 / d)),
// d = max|x| / 127 per block (q = 0 where the block is all zero). Reuses `out`'s storage.
void quantize_activations(DType dtype, const float* x, int64_t T, int64_t K, Int8Activations& out);
// The specification: y[t][r] = a chain over blocks b in order, y = fma(S, d_w * d_x, y) (then
// y = fma(m_w, d_x * sum q, y)), with S the exact integer dot of the weight block's signed
// levels and q.
void linear_rows_int8(const Tensor& w, const Int8Activations& x, float* y, int64_t r0, int64_t r1);
}  // namespace scalar

namespace avx2 {
// AVX2 (vpmaddubsw + vpmaddwd, 8 rows per vector): the reference's arithmetic in its order, so
// equal to it bit for bit.
void linear_rows_int8(const Tensor& w, const Int8Activations& x, float* y, int64_t r0, int64_t r1);
}  // namespace avx2

namespace vnni {
// The same values as the scalar quantize_activations(), vectorized.
void quantize_activations(DType dtype, const float* x, int64_t T, int64_t K, Int8Activations& out);
// AVX-512 VNNI: the reference's arithmetic in its order, so equal to it bit for bit (and one
// token equals the same token in a chunk). Reads w.int8_groups when w has them, otherwise packs
// the rows as it goes; r0 is a multiple of 16.
void linear_rows_int8(const Tensor& w, const Int8Activations& x, float* y, int64_t r0, int64_t r1);
}  // namespace vnni

namespace amx {
constexpr int64_t kTileTokens = 16;
// Fills x.tile_terms from x's scales and block sums, and pads x.q with zero rows to a whole
// tile (once per call, before any thread runs).
void prepare_tiles(Int8Activations& x);
// AMX tiles (16 tokens x 16 rows x one block per product; kernels/linear_amx.cpp): the
// reference's arithmetic in its order, so equal to it and to the VNNI kernel bit for bit. Same
// inputs as vnni::linear_rows_int8, with x.tile_terms prepared (it unpacks each group once per
// call, so it pays from about a tile of tokens on). Needs CpuFeatures::amx_int8.
void linear_rows_int8(const Tensor& w, const Int8Activations& x, float* y, int64_t r0, int64_t r1);
}  // namespace amx

}  // namespace rwkv::kernels
