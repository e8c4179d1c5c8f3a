// AVX2 + FMA variants of the kernels: the same scheme as linear_avx512.cpp with 8-lane vectors
// (plain float weights widened while loaded, ggml blocks decoded to float32 first), and scalar
// tails where a row is not a multiple of 8; and the int8-activation kernel (at the end).
// Headers come before the target pragma so that no inline function they define is compiled
// for this ISA and then shared with code that runs on any CPU.
#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "core/quant.h"
#include "kernels/int8.h"
#include "kernels/variants.h"

#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma,f16c"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c")
#endif

namespace rwkv::kernels::avx2 {

namespace {

inline float half(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return _cvtsh_ss(h);
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
  dequantize(kType, row + k * (kType == DType::F32 ? 4 : 2), 1, &v);
  return v;
}

// Fully unrolled small loops keep a tile's accumulators and weights in registers (GCC -O2 left
// them on the stack otherwise).
#define RWKV_UNROLL _Pragma("GCC unroll 16")

inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

template <DType kType, int R, int TT>
inline void tile(const uint8_t* const* rows, const float* x, int64_t K, float* y, int64_t ldy) {
  __m256 acc[R][TT];
  RWKV_UNROLL
  for (int i = 0; i < R; ++i) {
    RWKV_UNROLL
    for (int t = 0; t < TT; ++t) acc[i][t] = _mm256_setzero_ps();
  }
  int64_t k = 0;
  for (; k + 8 <= K; k += 8) {
    __m256 w[R];
    RWKV_UNROLL
    for (int i = 0; i < R; ++i) w[i] = load8<kType>(rows[i], k);
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
    for (int t = 0; t < TT; ++t) {
      float s = hsum(acc[i][t]);
      for (int64_t j = k; j < K; ++j) s += load1<kType>(rows[i], j) * x[t * K + j];
      y[t * ldy + i] = s;
    }
  }
}

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

template <DType kType>
void linear_plain(const Tensor& w, const float* x, int64_t T, float* y, int64_t r0, int64_t r1) {
  const int64_t K = w.cols(), O = w.rows();
  int64_t r = r0;
  for (; r + 4 <= r1; r += 4) {
    const uint8_t* rows[4] = {w.row(r), w.row(r + 1), w.row(r + 2), w.row(r + 3)};
    rows_times_tokens<kType, 4>(rows, x, T, K, y + r, O);
  }
  for (; r < r1; ++r) {
    const uint8_t* rows[1] = {w.row(r)};
    rows_times_tokens<kType, 1>(rows, x, T, K, y + r, O);
  }
}

// Decodes 32 ggml-block weights to float32, 8 at a time.
template <DType kType>
inline void decode_block(const uint8_t* b, float* out) {
  if constexpr (kType == DType::I8) {
    for (int j = 0; j < 4; ++j) {
      const __m128i q = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(b + 8 * j));
      _mm256_storeu_ps(out + 8 * j, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q)));
    }
  } else if constexpr (kType == DType::Q8_0) {
    const __m256 d = _mm256_set1_ps(half(b));
    for (int j = 0; j < 4; ++j) {
      const __m128i q = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(b + 2 + 8 * j));
      _mm256_storeu_ps(out + 8 * j, _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q)), d));
    }
  } else {
    const uint8_t* p = b;
    const __m256 d = _mm256_set1_ps(half(p));
    p += 2;
    __m256 m = _mm256_setzero_ps();
    if constexpr (kHasMin<kType>) {
      m = _mm256_set1_ps(half(p));
      p += 2;
    }
    uint32_t qh = 0;
    if constexpr (kFiveBit<kType>) {
      std::memcpy(&qh, p, 4);
      p += 4;
    }
    const __m128i bytes = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
    const __m128i mask = _mm_set1_epi8(0x0f);
    const __m128i halves[2] = {_mm_and_si128(bytes, mask),
                               _mm_and_si128(_mm_srli_epi16(bytes, 4), mask)};
    // Bit j of a lane's index selects the fifth bit from qh.
    const __m256i lane_bit = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
    for (int j = 0; j < 4; ++j) {
      const __m128i src = j % 2 == 0 ? halves[j / 2] : _mm_srli_si128(halves[j / 2], 8);
      __m256i q = _mm256_cvtepu8_epi32(src);
      if constexpr (kFiveBit<kType>) {
        const __m256i bits =
            _mm256_and_si256(_mm256_set1_epi32(int((qh >> (8 * j)) & 0xff)), lane_bit);
        q = _mm256_add_epi32(
            q, _mm256_and_si256(_mm256_cmpeq_epi32(bits, lane_bit), _mm256_set1_epi32(16)));
      }
      if constexpr (!kHasMin<kType>)
        q = _mm256_sub_epi32(q, _mm256_set1_epi32(kFiveBit<kType> ? 16 : 8));
      __m256 v = _mm256_cvtepi32_ps(q);
      v = kHasMin<kType> ? _mm256_fmadd_ps(v, d, m) : _mm256_mul_ps(v, d);
      _mm256_storeu_ps(out + 8 * j, v);
    }
  }
}

template <DType kType>
void decode_row(const uint8_t* row, int64_t K, float* out) {
  for (int64_t i = 0; i < K / 32; ++i)
    decode_block<kType>(row + i * kBlockBytes<kType>, out + 32 * i);
}

template <DType kType>
void linear_blocks(const Tensor& w, const float* x, int64_t T, float* y, int64_t r0, int64_t r1) {
  const int64_t K = w.cols(), O = w.rows();
  thread_local std::vector<float> buf;
  buf.resize(size_t(4 * K));
  for (int64_t r = r0; r < r1; r += 4) {
    const int n = int(std::min<int64_t>(4, r1 - r));
    const uint8_t* rows[4];
    for (int i = 0; i < n; ++i) {
      decode_row<kType>(w.row(r + i), K, buf.data() + i * K);
      rows[i] = reinterpret_cast<const uint8_t*>(buf.data() + i * K);
    }
    if (n == 4) {
      rows_times_tokens<DType::F32, 4>(rows, x, T, K, y + r, O);
    } else {
      for (int i = 0; i < n; ++i) rows_times_tokens<DType::F32, 1>(rows + i, x, T, K, y + r + i, O);
    }
  }
}

}  // namespace

void linear_rows(const Tensor& w, const float* x, int64_t T, float* y, int64_t r0, int64_t r1) {
  switch (w.dtype) {
    case DType::F32:
      return linear_plain<DType::F32>(w, x, T, y, r0, r1);
    case DType::F16:
      return linear_plain<DType::F16>(w, x, T, y, r0, r1);
    case DType::BF16:
      return linear_plain<DType::BF16>(w, x, T, y, r0, r1);
    case DType::Q4_0:
      return linear_blocks<DType::Q4_0>(w, x, T, y, r0, r1);
    case DType::Q4_1:
      return linear_blocks<DType::Q4_1>(w, x, T, y, r0, r1);
    case DType::Q5_0:
      return linear_blocks<DType::Q5_0>(w, x, T, y, r0, r1);
    case DType::Q5_1:
      return linear_blocks<DType::Q5_1>(w, x, T, y, r0, r1);
    case DType::Q8_0:
      return linear_blocks<DType::Q8_0>(w, x, T, y, r0, r1);
    case DType::I8:
      return linear_blocks<DType::I8>(w, x, T, y, r0, r1);
  }
}

namespace {

// Weight row i of w as float32.
void decode_row_any(const Tensor& w, int64_t i, float* out) {
  const int64_t K = w.cols();
  const uint8_t* row = w.row(i);
  switch (w.dtype) {
    case DType::Q4_0:
      return decode_row<DType::Q4_0>(row, K, out);
    case DType::Q4_1:
      return decode_row<DType::Q4_1>(row, K, out);
    case DType::Q5_0:
      return decode_row<DType::Q5_0>(row, K, out);
    case DType::Q5_1:
      return decode_row<DType::Q5_1>(row, K, out);
    case DType::Q8_0:
      return decode_row<DType::Q8_0>(row, K, out);
    case DType::I8:
      return decode_row<DType::I8>(row, K, out);
    default:
      return dequantize(w.dtype, row, K, out);
  }
}

}  // namespace

void matmul_cols(const float* x, int64_t T, const Tensor& w, float* y, int64_t c0, int64_t c1) {
  thread_local std::vector<float> buf;
  const int64_t I = w.rows(), O = w.cols(), n = c1 - c0;
  buf.resize(size_t(O));
  for (int64_t t = 0; t < T; ++t) std::fill(y + t * O + c0, y + t * O + c1, 0.0f);
  for (int64_t i = 0; i < I; ++i) {
    decode_row_any(w, i, buf.data());
    const float* row = buf.data() + c0;
    for (int64_t t = 0; t < T; ++t) {
      const __m256 a = _mm256_set1_ps(x[t * I + i]);
      float* yt = y + t * O + c0;
      int64_t c = 0;
      for (; c + 8 <= n; c += 8)
        _mm256_storeu_ps(yt + c,
                         _mm256_fmadd_ps(a, _mm256_loadu_ps(row + c), _mm256_loadu_ps(yt + c)));
      for (; c < n; ++c) yt[c] += x[t * I + i] * row[c];
    }
  }
}

// linear() with int8 activations (kernels/int8.h), for CPUs without AVX-512 VNNI: one block
// (32 bytes) per 256-bit vector. vpmaddubsw multiplies unsigned by signed bytes into 16-bit pairs
// and vpmaddwd sums those into the same four-byte lanes vpdpbusd fills, so each lane holds the
// same exact integer. The pairs are 16-bit: nibble levels (at most 31 x 127 x 2) fit, Q8_0's do
// not as unsigned, so Q8_0 (and I8) multiplies |w| by q with w's sign (ggml's trick) and needs
// no zero-level correction.

namespace {

// The 8 lane sums of one block against the 32 q of `xq`, as exact integers: sum over the lane's
// four elements of (level - zero) * q.
template <DType kType>
inline __m256i block_lanes(const uint8_t* b, const int8_t* xq, const int32_t* lane_bias) {
  const __m256i q = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq));
  const __m256i ones = _mm256_set1_epi16(1);
  if constexpr (kType == DType::Q8_0 || kType == DType::I8) {
    const __m256i w =
        _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + (kType == DType::I8 ? 0 : 2)));
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
    const __m256 scale = kType == DType::I8 ? _mm256_loadu_ps(lane_scale + 8 * b)
                                            : _mm256_mul_ps(_mm256_set1_ps(half(blk)),
                                                            _mm256_loadu_ps(lane_scale + 8 * b));
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
  with_block_type(w.dtype, [&](auto type) { rows_int8<type.value>(w, x, y, r0, r1); });
}

}  // namespace rwkv::kernels::avx2

#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif
