#include "train/train_math.h"

#include <algorithm>
#include <cstring>
#include <vector>

#ifdef RWKV_HAVE_OPENBLAS
#include <cblas.h>
#endif

namespace rwkv::train {

#ifdef RWKV_HAVE_OPENBLAS
void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, const float* A,
          const float* B, float* C, bool accumulate, ThreadPool*) {
  if (M == 0 || N == 0) return;
  if (K == 0) {
    if (!accumulate) std::fill_n(C, M * N, 0.0f);
    return;
  }
  cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
              trans_b ? CblasTrans : CblasNoTrans, int(M), int(N), int(K), 1.0f, A,
              int(trans_a ? M : K), B, int(trans_b ? K : N), accumulate ? 1.0f : 0.0f, C, int(N));
}
void set_gemm_threads(int n) { openblas_set_num_threads(std::max(1, n)); }
const char* gemm_backend() { return "openblas"; }
#else
// Both operands are brought to row-major (M x K) and (K x N) so each output row is a sum of
// scaled rows of B, contiguous and vectorisable; rows of C are spread over the pool.
void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, const float* A,
          const float* B, float* C, bool accumulate, ThreadPool* pool) {
  std::vector<float> at, bt;
  if (trans_a) {
    at.resize(size_t(M * K));
    for (int64_t k = 0; k < K; ++k)
      for (int64_t m = 0; m < M; ++m) at[size_t(m * K + k)] = A[k * M + m];
    A = at.data();
  }
  if (trans_b) {
    bt.resize(size_t(K * N));
    for (int64_t n = 0; n < N; ++n)
      for (int64_t k = 0; k < K; ++k) bt[size_t(k * N + n)] = B[n * K + k];
    B = bt.data();
  }
  auto row = [&](int64_t m) {
    float* c = C + m * N;
    if (!accumulate) std::fill_n(c, N, 0.0f);
    const float* a = A + m * K;
    for (int64_t k = 0; k < K; ++k) {
      const float s = a[k];
      const float* b = B + k * N;
      for (int64_t n = 0; n < N; ++n) c[n] += s * b[n];
    }
  };
  if (pool && M > 1)
    pool->parallel_for(M, row);
  else
    for (int64_t m = 0; m < M; ++m) row(m);
}
void set_gemm_threads(int) {}
const char* gemm_backend() { return "builtin"; }
#endif

void layer_norm_fwd(const float* x, const float* w, const float* b, int64_t rows, int64_t n,
                    float eps, float* y, float* mean, float* rstd) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * n;
    double m = 0;
    for (int64_t i = 0; i < n; ++i) m += xr[i];
    m /= double(n);
    double var = 0;
    for (int64_t i = 0; i < n; ++i) var += (xr[i] - m) * (xr[i] - m);
    var /= double(n);
    const float inv = float(1.0 / std::sqrt(var + eps));
    mean[r] = float(m);
    rstd[r] = inv;
    float* yr = y + r * n;
    for (int64_t i = 0; i < n; ++i) yr[i] = (xr[i] - float(m)) * inv * w[i] + b[i];
  }
}

void layer_norm_bwd(const float* x, const float* w, const float* mean, const float* rstd,
                    const float* dy, int64_t rows, int64_t n, float* dx, bool accumulate_dx,
                    float* dw, float* db) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * n;
    const float* dyr = dy + r * n;
    const float m = mean[r], s = rstd[r];
    // With xhat = (x - mean) * rstd and g = dy * w:
    // dx = rstd * (g - mean(g) - xhat * mean(g * xhat)).
    double sum_g = 0, sum_gx = 0;
    for (int64_t i = 0; i < n; ++i) {
      const float xhat = (xr[i] - m) * s;
      const float g = dyr[i] * w[i];
      sum_g += g;
      sum_gx += double(g) * xhat;
      dw[i] += dyr[i] * xhat;
      db[i] += dyr[i];
    }
    const float mg = float(sum_g / double(n)), mgx = float(sum_gx / double(n));
    float* dxr = dx + r * n;
    for (int64_t i = 0; i < n; ++i) {
      const float xhat = (xr[i] - m) * s;
      const float v = s * (dyr[i] * w[i] - mg - xhat * mgx);
      dxr[i] = accumulate_dx ? dxr[i] + v : v;
    }
  }
}

void shift_fwd(const float* x, int64_t B, int64_t T, int64_t C, float* carry,
               int64_t carry_stride, float* prev) {
  for (int64_t b = 0; b < B; ++b) {
    const float* xb = x + b * T * C;
    float* pb = prev + b * T * C;
    float* saved = carry + b * carry_stride;
    std::memcpy(pb, saved, size_t(C) * 4);
    if (T > 1) std::memcpy(pb + C, xb, size_t((T - 1) * C) * 4);
    std::memcpy(saved, xb + (T - 1) * C, size_t(C) * 4);
  }
}

void shift_bwd(const float* dprev, int64_t B, int64_t T, int64_t C, float* dcarry,
               int64_t carry_stride, float* dx) {
  for (int64_t b = 0; b < B; ++b) {
    const float* dp = dprev + b * T * C;
    float* dxb = dx + b * T * C;
    float* dc = dcarry + b * carry_stride;
    for (int64_t i = 0; i < C; ++i) dxb[(T - 1) * C + i] += dc[i];
    for (int64_t j = 0; j < (T - 1) * C; ++j) dxb[j] += dp[C + j];
    std::memcpy(dc, dp, size_t(C) * 4);
  }
}

double cross_entropy(float* logits, const int* targets, int64_t rows, int64_t V, float scale) {
  double loss = 0;
  for (int64_t r = 0; r < rows; ++r) {
    float* z = logits + r * V;
    const float mx = *std::max_element(z, z + V);
    double sum = 0;
    for (int64_t i = 0; i < V; ++i) sum += std::exp(double(z[i] - mx));
    const double lse = double(mx) + std::log(sum);
    loss += lse - z[targets[r]];
    for (int64_t i = 0; i < V; ++i) z[i] = scale * float(std::exp(double(z[i]) - lse));
    z[targets[r]] -= scale;
  }
  return loss;
}

}  // namespace rwkv::train
