// Small helpers shared by the AVX-512 kernel files. Include it after the file's target pragma
// (it needs AVX-512); everything here has internal linkage, so no copy compiled for one file's
// ISA is shared with another file.
#pragma once

#include <immintrin.h>

namespace rwkv::kernels {
namespace {

// Sum of the 16 lanes in a fixed order (halving). Spelled out because GCC 12 warns about the
// undefined upper lanes inside _mm512_reduce_add_ps.
inline float hsum(__m512 v) {
  v = _mm512_add_ps(v, _mm512_shuffle_f32x4(v, v, _MM_SHUFFLE(1, 0, 3, 2)));
  v = _mm512_add_ps(v, _mm512_shuffle_f32x4(v, v, _MM_SHUFFLE(2, 3, 0, 1)));
  __m128 s = _mm512_castps512_ps128(v);
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  return _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)));
}

}  // namespace
}  // namespace rwkv::kernels
