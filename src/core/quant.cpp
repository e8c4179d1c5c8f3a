#include "core/quant.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <stdexcept>
#include <vector>

namespace rwkv {

namespace {

inline uint16_t load_u16(const uint8_t* p) {
  uint16_t v;
  std::memcpy(&v, p, 2);
  return v;
}

}  // namespace

// ggml v101 blocks: elements j and j+16 share byte j of the nibble array (low, high nibble);
// Q5 types take a fifth bit for element i from bit i of the 32-bit `qh`.
BlockLevels unpack_block(DType dtype, const uint8_t* b) {
  BlockLevels u;
  if (dtype == DType::I8) {
    u.d = 1;
    for (int j = 0; j < 32; ++j) u.level[j] = int(int8_t(b[j])) + 128;
    return u;
  }
  u.d = fp16_to_fp32(load_u16(b));
  const bool has_min = dtype == DType::Q4_1 || dtype == DType::Q5_1;
  if (has_min) u.m = fp16_to_fp32(load_u16(b + 2));
  const uint8_t* p = b + (has_min ? 4 : 2);
  if (dtype == DType::Q8_0) {
    for (int j = 0; j < 32; ++j) u.level[j] = int(int8_t(p[j])) + 128;
    return u;
  }
  uint32_t qh = 0;
  if (dtype == DType::Q5_0 || dtype == DType::Q5_1) {
    std::memcpy(&qh, p, 4);
    p += 4;
  }
  for (int j = 0; j < 16; ++j) {
    u.level[j] = (p[j] & 0xf) | int((qh >> j) & 1) << 4;
    u.level[j + 16] = (p[j] >> 4) | int((qh >> (j + 16)) & 1) << 4;
  }
  return u;
}

namespace {

void dequantize_block(DType dtype, const uint8_t* b, float* y) {
  const BlockLevels u = unpack_block(dtype, b);
  const int zero = block_zero_level(dtype);
  if (dtype == DType::Q4_1 || dtype == DType::Q5_1) {
    for (int j = 0; j < 32; ++j) y[j] = float(u.level[j]) * u.d + u.m;
  } else {
    for (int j = 0; j < 32; ++j) y[j] = float(u.level[j] - zero) * u.d;
  }
}

}  // namespace

void dequantize(DType dtype, const uint8_t* src, int64_t n, float* dst) {
  switch (dtype) {
    case DType::F32:
      std::memcpy(dst, src, size_t(n) * 4);
      return;
    case DType::F16: {
      // Every half has a float32 twin; a 256 KiB table beats the bit manipulation per element.
      static const std::vector<float> table = [] {
        std::vector<float> t(65536);
        for (uint32_t h = 0; h < 65536; ++h) t[h] = fp16_to_fp32(uint16_t(h));
        return t;
      }();
      for (int64_t i = 0; i < n; ++i) dst[i] = table[load_u16(src + 2 * i)];
      return;
    }
    case DType::BF16:
      for (int64_t i = 0; i < n; ++i) dst[i] = bf16_to_fp32(load_u16(src + 2 * i));
      return;
    case DType::I8:
      for (int64_t i = 0; i < n; ++i) dst[i] = float(int8_t(src[i]));
      return;
    default: {
      const DTypeInfo& info = dtype_info(dtype);
      for (int64_t i = 0; i < n / info.block_elems; ++i)
        dequantize_block(dtype, src + i * info.block_bytes, dst + i * info.block_elems);
    }
  }
}

void dequantize_rows(const Tensor& t, int64_t r0, int64_t n, float* dst) {
  const int64_t cols = t.cols();
  dequantize(t.dtype, t.row(r0), n * cols, dst);
  if (t.dtype != DType::I8) return;
  for (int64_t r = 0; r < n; ++r)
    for (int64_t c = 0; c < cols; ++c) dst[r * cols + c] *= t.row_scale[r0 + r];
}

}  // namespace rwkv

// ---------------------------------------------------------------------------------------------
// Encoders.
//
// Every block type stores levels u (unsigned, 4, 5 or 8 bits) and decodes element j as
// (u_j - zero) * d for the symmetric types (Q4_0, Q5_0, Q8_0) or u_j * d + m for the ones with
// an offset (Q4_1, Q5_1). Encoding is choosing d (and m) per block and then the nearest level
// for every element.

namespace rwkv {

namespace {

constexpr int kBlock = 32;

inline void store_u16(uint8_t* p, uint16_t v) { std::memcpy(p, &v, 2); }

// The grid of one block type.
struct Grid {
  bool offset;  // Q4_1/Q5_1: x ≈ u * d + m; otherwise x ≈ (u - zero) * d
  int levels;   // 16, 32 or 256
  int zero;     // level decoding to 0 for the symmetric types
  int nmax() const { return levels - 1; }
};

Grid grid_of(DType t) {
  switch (t) {
    case DType::Q4_0:
      return {false, 16, 8};
    case DType::Q4_1:
      return {true, 16, 0};
    case DType::Q5_0:
      return {false, 32, 16};
    case DType::Q5_1:
      return {true, 32, 0};
    default:
      return {false, 256, 128};  // Q8_0: int8 stored as is
  }
}

// Writes a block from its levels u[0..31] (u - zero for Q8_0 is the stored int8). Elements j
// and j + 16 share nibble byte j; Q5 types keep bit 4 of element j in bit j of `qh`.
void pack_block(DType t, uint16_t d, uint16_t m, const int* u, uint8_t* b) {
  store_u16(b, d);
  if (t == DType::Q8_0) {
    for (int j = 0; j < kBlock; ++j) b[2 + j] = uint8_t(int8_t(u[j] - 128));
    return;
  }
  const bool has_m = t == DType::Q4_1 || t == DType::Q5_1;
  const bool five = t == DType::Q5_0 || t == DType::Q5_1;
  uint8_t* p = b + 2;
  if (has_m) {
    store_u16(p, m);
    p += 2;
  }
  if (five) {
    uint32_t qh = 0;
    for (int j = 0; j < kBlock; ++j) qh |= uint32_t((u[j] >> 4) & 1) << j;
    std::memcpy(p, &qh, 4);
    p += 4;
  }
  for (int j = 0; j < 16; ++j) p[j] = uint8_t((u[j] & 0xf) | (u[j + 16] & 0xf) << 4);
}

// Squared error of levels u with scale d (and offset m) against x, in double.
double block_sse(const Grid& g, const float* x, const int* u, float d, float m) {
  double sse = 0;
  for (int j = 0; j < kBlock; ++j) {
    const float y = g.offset ? float(u[j]) * d + m : float(u[j] - g.zero) * d;
    const double e = double(x[j]) - double(y);
    sse += e * e;
  }
  return sse;
}

// The encoded block of one method: stored fp16 scale/offset and levels.
struct Encoded {
  uint16_t d = 0, m = 0;
  int u[kBlock];
};

// Round to nearest with the scale fixed by the block's extremes; this mirrors the arithmetic of
// ggml's reference quantizers (float reciprocal, truncation of x * id + zero + 0.5, which is
// rounding for the non-negative values involved) so the bytes match rwkv.cpp's files. The
// products are separate statements so no compiler fuses them into an FMA, which would change
// the rounding.
void encode_reference(DType t, const Grid& g, const float* x, Encoded& e) {
  if (t == DType::Q8_0) {
    float amax = 0;
    for (int j = 0; j < kBlock; ++j) amax = std::max(amax, std::fabs(x[j]));
    const float d = amax / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    e.d = fp32_to_fp16(d);
    for (int j = 0; j < kBlock; ++j) {
      const float v = x[j] * id;
      e.u[j] = int(std::round(v)) + 128;
    }
    return;
  }
  if (g.offset) {
    float lo = x[0], hi = x[0];
    for (int j = 1; j < kBlock; ++j) {
      lo = std::min(lo, x[j]);
      hi = std::max(hi, x[j]);
    }
    const float d = (hi - lo) / float(g.nmax());
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    e.d = fp32_to_fp16(d);
    e.m = fp32_to_fp16(lo);
    for (int j = 0; j < kBlock; ++j) {
      const float v = (x[j] - lo) * id;
      e.u[j] = std::min(g.nmax(), int(v + 0.5f));
    }
    return;
  }
  // Symmetric 4/5-bit: the element of largest magnitude (the first one on ties) lands exactly
  // on the extra level -zero, whatever its sign.
  float amax = 0, peak = 0;
  for (int j = 0; j < kBlock; ++j)
    if (amax < std::fabs(x[j])) {
      amax = std::fabs(x[j]);
      peak = x[j];
    }
  const float d = peak / -float(g.zero);
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  e.d = fp32_to_fp16(d);
  const float bias = float(g.zero) + 0.5f;
  for (int j = 0; j < kBlock; ++j) {
    const float v = x[j] * id;
    e.u[j] = std::min(g.nmax(), int(v + bias));
  }
}

// The search below tries many grids per block; written with four-float vectors (a GCC/Clang
// extension: SSE on x86, NEON on ARM) it costs ~15 ns per weight instead of ~40.
typedef float F4 __attribute__((vector_size(16)));
constexpr int kVecs = kBlock / 4;

inline F4 splat(float a) { return F4{a, a, a, a}; }
inline float hsum(F4 a) { return (a[0] + a[2]) + (a[1] + a[3]); }

// A least-squares fit x ≈ (q - zero) * d (symmetric types) or q * d + m (offset types) for
// fixed levels q.
struct Fit {
  float d = 0, m = 0;
  float explained = -1;  // sum(x^2) minus the fit's squared error; larger is better
  bool ok() const { return explained >= 0; }
};

// The fit from the sums of q (relative to `zero` for symmetric types), q^2 and x q.
Fit fit_from_sums(const Grid& g, float sx, float sq, float sqq, float sxq) {
  Fit f;
  if (!g.offset) {
    if (sqq > 0 && sxq != 0) {
      f.d = sxq / sqq;
      f.explained = sxq * sxq / sqq;
    }
    return f;
  }
  const float n = float(kBlock), det = n * sqq - sq * sq;
  if (det <= 0) return f;
  f.d = (n * sxq - sq * sx) / det;
  f.m = (sx * sqq - sq * sxq) / det;
  if (f.d > 0) f.explained = std::max(0.0f, f.d * sxq + f.m * sx);
  return f;
}

// The levels of every element on a grid, clamp(round(x * iscale + shift), 0, nmax), and their
// fit. Rounding adds and removes 1.5 * 2^23 (ties to even), which needs neither SSE4.1 nor
// libm; two sets of accumulators halve the add latency chain of this, the inner loop.
Fit fit_grid(const Grid& g, const F4* x, float sx, float iscale, float shift,
             F4* levels = nullptr) {
  const F4 is = splat(iscale), sh = splat(shift), hi = splat(float(g.nmax())), lo = splat(0.0f);
  const F4 magic = splat(12582912.0f), z = splat(g.offset ? 0.0f : float(g.zero));
  F4 sq0 = {}, sqq0 = {}, sxq0 = {}, sq1 = {}, sqq1 = {}, sxq1 = {};
  auto level = [&](int i) {
    F4 v = x[i] * is + sh;
    v = v < lo ? lo : v;
    v = v > hi ? hi : v;
    v = (v + magic) - magic;
    if (levels) levels[i] = v;
    return v - z;
  };
  for (int i = 0; i < kVecs; i += 2) {
    const F4 q0 = level(i), q1 = level(i + 1);
    sq0 += q0;
    sqq0 += q0 * q0;
    sxq0 += x[i] * q0;
    sq1 += q1;
    sqq1 += q1 * q1;
    sxq1 += x[i + 1] * q1;
  }
  return fit_from_sums(g, sx, hsum(sq0 + sq1), hsum(sqq0 + sqq1), hsum(sxq0 + sxq1));
}

// The grid of a given scale (and offset): every element's nearest level, and its fit.
Fit fit_scale(const Grid& g, const F4* x, float sx, float d, float m, F4* levels = nullptr) {
  const float id = 1.0f / d;
  return fit_grid(g, x, sx, id, g.offset ? -m * id : float(g.zero), levels);
}

// Candidate grids: stretch the reference scale so the block's extreme lands anywhere from two
// levels inside the grid to half a level beyond it (clipping it), on either side for the
// symmetric types, and score each by its least-squares fit. The best one is refined (levels
// re-chosen for the fit, fitted again), rounded to fp16, its levels re-chosen for the stored
// values (what the decoder uses), and kept only if its squared error beats the reference
// block's. Six stretches per side: more changed the error by under 0.5% on real models.
void encode_search(DType t, const Grid& g, const float* x, Encoded& e) {
  encode_reference(t, g, x, e);
  const double ref_sse = block_sse(g, x, e.u, fp16_to_fp32(e.d), fp16_to_fp32(e.m));
  if (ref_sse == 0) return;

  F4 xv[kVecs];
  std::memcpy(xv, x, sizeof xv);
  float lo = x[0], hi = x[0], amax = 0, peak = 0, sx = 0;
  for (int j = 0; j < kBlock; ++j) {
    lo = std::min(lo, x[j]);
    hi = std::max(hi, x[j]);
    sx += x[j];
    if (amax < std::fabs(x[j])) {
      amax = std::fabs(x[j]);
      peak = x[j];
    }
  }
  if (hi == lo) return;

  constexpr int kSteps = 6;
  const float nmax = float(g.nmax()), zero = float(g.zero);
  float best = -1, best_iscale = 0, best_shift = 0;
  for (int sign = 0; sign < (g.offset ? 1 : 2); ++sign) {
    // Offset types spread [lo, hi] over s levels centred on the grid; symmetric ones put
    // `peak` on level -s (the side with the extra level) or +s.
    const float top = g.offset ? nmax : (sign == 0 ? zero : zero - 1.0f);
    for (int k = 0; k < kSteps; ++k) {
      const float s = top - 2.0f + 2.5f * float(k) / float(kSteps - 1);
      const float iscale = g.offset ? s / (hi - lo) : (sign == 0 ? -s : s) / peak;
      const float shift = g.offset ? 0.5f * (nmax - s) - lo * iscale : zero;
      const Fit f = fit_grid(g, xv, sx, iscale, shift);
      if (f.ok() && f.explained > best) {
        best = f.explained;
        best_iscale = iscale;
        best_shift = shift;
      }
    }
  }
  if (best < 0) return;

  Fit f = fit_grid(g, xv, sx, best_iscale, best_shift);
  for (int it = 0; it < 2 && f.ok(); ++it) f = fit_scale(g, xv, sx, f.d, f.m);
  if (!f.ok()) return;
  const uint16_t dh = fp32_to_fp16(f.d), mh = fp32_to_fp16(f.m);
  const float df = fp16_to_fp32(dh), mf = fp16_to_fp32(mh);
  if (df == 0 || !std::isfinite(df) || !std::isfinite(mf)) return;
  F4 q[kVecs];
  fit_scale(g, xv, sx, df, mf, q);
  int u[kBlock];
  for (int j = 0; j < kBlock; ++j) u[j] = int(q[j / 4][j % 4]);
  if (block_sse(g, x, u, df, mf) < ref_sse) {
    e.d = dh;
    e.m = mh;
    std::copy_n(u, kBlock, e.u);
  }
}

}  // namespace

void quantize(DType dtype, const float* src, int64_t n, uint8_t* dst, QuantMethod method) {
  switch (dtype) {
    case DType::F32:
      std::memcpy(dst, src, size_t(n) * 4);
      return;
    case DType::F16:
      for (int64_t i = 0; i < n; ++i) store_u16(dst + 2 * i, fp32_to_fp16(src[i]));
      return;
    case DType::BF16:
      for (int64_t i = 0; i < n; ++i) store_u16(dst + 2 * i, fp32_to_bf16(src[i]));
      return;
    case DType::I8:
      throw std::invalid_argument("quantize: I8 needs rows (quantize_rows_i8)");
    default:
      break;
  }
  const Grid g = grid_of(dtype);
  const int64_t block_bytes = dtype_info(dtype).block_bytes;
  Encoded e;
  for (int64_t b = 0; b < n / kBlock; ++b) {
    const float* x = src + b * kBlock;
    if (method == QuantMethod::kReference)
      encode_reference(dtype, g, x, e);
    else
      encode_search(dtype, g, x, e);
    pack_block(dtype, e.d, e.m, e.u, dst + b * block_bytes);
  }
}

void quantize_rows_i8(const float* src, int64_t rows, int64_t cols, int8_t* dst, float* scale) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* x = src + r * cols;
    float amax = 0;
    for (int64_t c = 0; c < cols; ++c) amax = std::max(amax, std::fabs(x[c]));
    const float d = amax / 127.0f, id = d > 0 ? 1.0f / d : 0.0f;
    scale[r] = d;
    for (int64_t c = 0; c < cols; ++c)
      dst[r * cols + c] = int8_t(std::clamp(std::nearbyint(x[c] * id), -127.0f, 127.0f));
  }
}

double quantization_sse(DType dtype, const float* src, int64_t n, const uint8_t* q) {
  const DTypeInfo& info = dtype_info(dtype);
  const int64_t step = is_quantized(dtype) ? info.block_elems : kBlock;
  float y[kBlock];
  double sse = 0;
  for (int64_t i = 0; i < n; i += step) {
    const int64_t len = std::min<int64_t>(step, n - i);
    dequantize(dtype, q + i / info.block_elems * info.block_bytes, len, y);
    for (int64_t j = 0; j < len; ++j) {
      const double e = double(src[i + j]) - double(y[j]);
      sse += e * e;
    }
  }
  return sse;
}

}  // namespace rwkv
