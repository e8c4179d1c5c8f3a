// AVX-512 variants of linear() and matmul(). Plain float weights (F32, F16, BF16) are widened to
// float32 while they are loaded; ggml blocks are decoded a few rows at a time into float32 in
// L1/L2 and then multiplied like F32. Products and sums stay in float32 (exact widening, FMA), so
// results differ from the scalar reference only by summation order.
// Headers come before the target pragma so that no inline function they define is compiled
// for this ISA and then shared with code that runs on any CPU.
#include <immintrin.h>

#include <cstring>
#include <vector>

#include "kernels/variants.h"

#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,fma,f16c"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,fma,f16c")
#endif

namespace rwkv::kernels::avx512 {

namespace {

inline float half(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return _cvtsh_ss(h);
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

// out[i][t] = dot(row i, x row t) for R weight rows and TT tokens: R x TT accumulators of 16
// lanes, so each weight vector loaded serves TT tokens and each x vector R rows.
template <DType kType, int R, int TT>
inline void tile(const uint8_t* const* rows, const float* x, int64_t K, float* y, int64_t ldy) {
  __m512 acc[R][TT];
  for (int i = 0; i < R; ++i)
    for (int t = 0; t < TT; ++t) acc[i][t] = _mm512_setzero_ps();
  int64_t k = 0;
  for (; k + 16 <= K; k += 16) {
    __m512 w[R];
    for (int i = 0; i < R; ++i) w[i] = load16<kType>(rows[i], k);
    for (int t = 0; t < TT; ++t) {
      const __m512 xv = _mm512_loadu_ps(x + t * K + k);
      for (int i = 0; i < R; ++i) acc[i][t] = _mm512_fmadd_ps(w[i], xv, acc[i][t]);
    }
  }
  if (k < K) {
    const __mmask16 m = __mmask16((1u << (K - k)) - 1);
    __m512 w[R];
    for (int i = 0; i < R; ++i) w[i] = load_tail<kType>(rows[i], k, m);
    for (int t = 0; t < TT; ++t) {
      const __m512 xv = _mm512_maskz_loadu_ps(m, x + t * K + k);
      for (int i = 0; i < R; ++i) acc[i][t] = _mm512_fmadd_ps(w[i], xv, acc[i][t]);
    }
  }
  for (int i = 0; i < R; ++i)
    for (int t = 0; t < TT; ++t) y[t * ldy + i] = _mm512_reduce_add_ps(acc[i][t]);
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

// Decodes 32 ggml-block weights to float32.
template <DType kType>
inline void decode_block(const uint8_t* b, float* out) {
  if constexpr (kType == DType::Q8_0) {
    const __m512 d = _mm512_set1_ps(half(b));
    const __m128i lo = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b + 2));
    const __m128i hi = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b + 18));
    _mm512_storeu_ps(out, _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(lo)), d));
    _mm512_storeu_ps(out + 16, _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(hi)), d));
  } else {
    constexpr bool kHasMin = kType == DType::Q4_1 || kType == DType::Q5_1;
    constexpr bool kFiveBit = kType == DType::Q5_0 || kType == DType::Q5_1;
    const uint8_t* p = b;
    const __m512 d = _mm512_set1_ps(half(p));
    p += 2;
    __m512 m = _mm512_setzero_ps();
    if constexpr (kHasMin) {
      m = _mm512_set1_ps(half(p));
      p += 2;
    }
    uint32_t qh = 0;
    if constexpr (kFiveBit) {
      std::memcpy(&qh, p, 4);
      p += 4;
    }
    const __m128i bytes = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
    const __m128i mask = _mm_set1_epi8(0x0f);
    __m512i q[2] = {_mm512_cvtepu8_epi32(_mm_and_si128(bytes, mask)),
                    _mm512_cvtepu8_epi32(_mm_and_si128(_mm_srli_epi16(bytes, 4), mask))};
    for (int h = 0; h < 2; ++h) {
      if constexpr (kFiveBit)
        q[h] = _mm512_mask_add_epi32(q[h], __mmask16(qh >> (16 * h)), q[h], _mm512_set1_epi32(16));
      if constexpr (!kHasMin) q[h] = _mm512_sub_epi32(q[h], _mm512_set1_epi32(kFiveBit ? 16 : 8));
      __m512 v = _mm512_cvtepi32_ps(q[h]);
      v = kHasMin ? _mm512_fmadd_ps(v, d, m) : _mm512_mul_ps(v, d);
      _mm512_storeu_ps(out + 16 * h, v);
    }
  }
}

template <DType kType>
void decode_row(const uint8_t* row, int64_t K, float* out) {
  const int64_t bb = dtype_info(kType).block_bytes;
  for (int64_t i = 0; i < K / 32; ++i) decode_block<kType>(row + i * bb, out + 32 * i);
}

// Blocks: decode four rows into float32, then multiply as F32.
template <DType kType>
void linear_blocks(const Tensor& w, const float* x, int64_t T, float* y, int64_t r0, int64_t r1) {
  const int64_t K = w.cols(), O = w.rows();
  thread_local std::vector<float> buf;
  buf.resize(size_t(4 * K));
  int64_t r = r0;
  for (; r < r1; r += 4) {
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
  }
}

void decode_rows(const Tensor& w, int64_t r0, int64_t n, float* out) {
  const int64_t K = w.cols();
  for (int64_t i = 0; i < n; ++i) {
    const uint8_t* row = w.row(r0 + i);
    float* o = out + i * K;
    switch (w.dtype) {
      case DType::F32:
        std::memcpy(o, row, size_t(K) * 4);
        break;
      case DType::F16:
      case DType::BF16: {
        int64_t k = 0;
        const bool f16 = w.dtype == DType::F16;
        for (; k + 16 <= K; k += 16)
          _mm512_storeu_ps(o + k, f16 ? load16<DType::F16>(row, k) : load16<DType::BF16>(row, k));
        if (k < K) {
          const __mmask16 m = __mmask16((1u << (K - k)) - 1);
          _mm512_mask_storeu_ps(
              o + k, m, f16 ? load_tail<DType::F16>(row, k, m) : load_tail<DType::BF16>(row, k, m));
        }
        break;
      }
      case DType::Q4_0:
        decode_row<DType::Q4_0>(row, K, o);
        break;
      case DType::Q4_1:
        decode_row<DType::Q4_1>(row, K, o);
        break;
      case DType::Q5_0:
        decode_row<DType::Q5_0>(row, K, o);
        break;
      case DType::Q5_1:
        decode_row<DType::Q5_1>(row, K, o);
        break;
      case DType::Q8_0:
        decode_row<DType::Q8_0>(row, K, o);
        break;
    }
  }
}

void axpy_rows(const float* x, int64_t T, int64_t ldx, const float* row, int64_t n, float* y,
               int64_t ldy) {
  for (int64_t t = 0; t < T; ++t) {
    const __m512 a = _mm512_set1_ps(x[t * ldx]);
    float* yt = y + t * ldy;
    int64_t c = 0;
    for (; c + 16 <= n; c += 16)
      _mm512_storeu_ps(yt + c,
                       _mm512_fmadd_ps(a, _mm512_loadu_ps(row + c), _mm512_loadu_ps(yt + c)));
    for (; c < n; ++c) yt[c] += x[t * ldx] * row[c];
  }
}

}  // namespace rwkv::kernels::avx512

#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif
