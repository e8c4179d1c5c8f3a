// Scalar reference kernels: the specification SIMD variants are tested against.
#include <vector>

#include "core/quant.h"
#include "kernels/kernels.h"

namespace rwkv::kernels {

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

// Returns row r of w as float32, decoding into `buf` unless it is already float32.
const float* row_f32(const Tensor& w, int64_t r, std::vector<float>& buf) {
  if (w.dtype == DType::F32) return reinterpret_cast<const float*>(w.row(r));
  buf.resize(size_t(w.cols()));
  dequantize(w.dtype, w.row(r), w.cols(), buf.data());
  return buf.data();
}

}  // namespace

void linear(const Tensor& w, const float* x, int64_t T, float* y) {
  thread_local std::vector<float> buf;
  const int64_t rows = w.rows(), cols = w.cols();
  for (int64_t r = 0; r < rows; ++r) {
    const float* row = row_f32(w, r, buf);
    for (int64_t t = 0; t < T; ++t) y[t * rows + r] = dot(row, x + t * cols, cols);
  }
}

void matmul(const float* x, int64_t T, const Tensor& w, float* y) {
  thread_local std::vector<float> buf;
  const int64_t rows = w.rows(), cols = w.cols();
  for (int64_t i = 0; i < T * cols; ++i) y[i] = 0;
  for (int64_t r = 0; r < rows; ++r) {
    const float* row = row_f32(w, r, buf);
    for (int64_t t = 0; t < T; ++t) {
      const float xr = x[t * rows + r];
      float* yt = y + t * cols;
      for (int64_t c = 0; c < cols; ++c) yt[c] += xr * row[c];
    }
  }
}

void layer_norm(const float* x, const float* weight, const float* bias, int64_t n, float eps,
                float* y) {
  // Two passes in double: mean, then variance about the mean (as torch computes it).
  double mean = 0;
  for (int64_t i = 0; i < n; ++i) mean += x[i];
  mean /= double(n);
  double var = 0;
  for (int64_t i = 0; i < n; ++i) var += (x[i] - mean) * (x[i] - mean);
  var /= double(n);
  const float inv = float(1.0 / std::sqrt(var + eps));
  for (int64_t i = 0; i < n; ++i) y[i] = (x[i] - float(mean)) * inv * weight[i] + bias[i];
}

void group_norm(const float* x, const float* weight, const float* bias, int64_t n_groups,
                int64_t group_size, float eps, float* y) {
  for (int64_t g = 0; g < n_groups; ++g) {
    const int64_t o = g * group_size;
    layer_norm(x + o, weight + o, bias + o, group_size, eps, y + o);
  }
}

}  // namespace rwkv::kernels
