// Scalar reference kernels: the specification every SIMD variant is tested against.
#include <algorithm>
#include <vector>

#include "core/quant.h"
#include "kernels/kernels.h"
#include "kernels/variants.h"

namespace rwkv::kernels {

namespace scalar {

namespace {
// Four partial sums keep the dependency chain short without changing accuracy much.
float dot(const float* a, const float* b, int64_t n) {
  float s0 = 0, s1 = 0, s2 = 0, s3 = 0;
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) {
    s0 += a[i] * b[i];
    s1 += a[i + 1] * b[i + 1];
    s2 += a[i + 2] * b[i + 2];
    s3 += a[i + 3] * b[i + 3];
  }
  for (; i < n; ++i) s0 += a[i] * b[i];
  return (s0 + s1) + (s2 + s3);
}
}  // namespace

void linear_rows(const Tensor& w, const float* x, int64_t T, float* y, int64_t r0, int64_t r1) {
  thread_local std::vector<float> buf;
  const int64_t rows = w.rows(), cols = w.cols();
  buf.resize(size_t(cols));
  for (int64_t r = r0; r < r1; ++r) {
    const float* row = reinterpret_cast<const float*>(w.row(r));
    if (w.dtype != DType::F32) {
      dequantize(w.dtype, w.row(r), cols, buf.data());
      row = buf.data();
    }
    for (int64_t t = 0; t < T; ++t) y[t * rows + r] = dot(row, x + t * cols, cols);
  }
}

void matmul_cols(const float* x, int64_t ldx, int64_t T, const Tensor& w, float* y, int64_t c0,
                 int64_t c1) {
  thread_local std::vector<float> buf;
  const int64_t I = w.rows(), O = w.cols();
  buf.resize(size_t(O));
  for (int64_t t = 0; t < T; ++t) std::fill(y + t * O + c0, y + t * O + c1, 0.0f);
  for (int64_t i = 0; i < I; ++i) {
    dequantize(w.dtype, w.row(i), O, buf.data());
    for (int64_t t = 0; t < T; ++t)
      for (int64_t c = c0; c < c1; ++c) y[t * O + c] += x[t * ldx + i] * buf[size_t(c)];
  }
}

}  // namespace scalar

namespace {
// sum of term(x[i]) in double over kLanes interleaved partial sums, added up in a fixed order:
// one chain of dependent double adds cost 4 cycles an element (a 2048-wide layer norm ~5 us, a
// few percent of generating a token, all of it on one thread); independent lanes vectorize. In
// double, the changed order stays far below float32's rounding.
template <typename Term>
double lane_sum(const float* x, int64_t n, const Term& term) {
  constexpr int kLanes = 16;
  double lanes[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes)
    for (int j = 0; j < kLanes; ++j) lanes[j] += term(double(x[i + j]));
  for (; i < n; ++i) lanes[0] += term(double(x[i]));
  double total = 0;
  for (int j = 0; j < kLanes; ++j) total += lanes[j];
  return total;
}
}  // namespace

NormStats layer_norm(const float* x, const float* weight, const float* bias, int64_t n, float eps,
                     float* y) {
  // Two passes in double: mean, then variance about the mean (as torch computes it).
  const double mean = lane_sum(x, n, [](double v) { return v; }) / double(n);
  const double var =
      lane_sum(x, n, [mean](double v) { return (v - mean) * (v - mean); }) / double(n);
  const float inv = float(1.0 / std::sqrt(var + eps));
  for (int64_t i = 0; i < n; ++i) y[i] = (x[i] - float(mean)) * inv * weight[i] + bias[i];
  return {float(mean), inv};
}

void group_norm(const float* x, const float* weight, const float* bias, int64_t n_groups,
                int64_t group_size, float eps, float* y) {
  for (int64_t g = 0; g < n_groups; ++g) {
    const int64_t o = g * group_size;
    layer_norm(x + o, weight + o, bias + o, group_size, eps, y + o);
  }
}

}  // namespace rwkv::kernels
