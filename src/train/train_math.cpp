#include "train/train_math.h"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <vector>

#include "core/simd.h"
#include "kernels/kernels.h"

#ifdef RWKV_HAVE_OPENBLAS
#include <cblas.h>
#endif

namespace rwkv::train {

#ifdef RWKV_HAVE_OPENBLAS
void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, const float* A,
          const float* B, float* C, bool accumulate, ThreadPool* pool) {
  if (M == 0 || N == 0) return;
  if (K == 0) {
    if (!accumulate) std::fill_n(C, M * N, 0.0f);
    return;
  }
  const int64_t lda = trans_a ? M : K, ldb = trans_b ? K : N;
  auto run = [&](int64_t m0, int64_t m, int64_t n0, int64_t n) {
    const float* a = A + (trans_a ? m0 : m0 * lda);
    const float* b = B + (trans_b ? n0 * ldb : n0);
    cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
                trans_b ? CblasTrans : CblasNoTrans, int(m), int(n), int(K), 1.0f, a, int(lda), b,
                int(ldb), accumulate ? 1.0f : 0.0f, C + m0 * N + n0, int(N));
  };
  const bool split_m = M >= N;
  const int64_t len = split_m ? M : N;
  // OpenBLAS runs on one thread (see setup_gemm); the pool takes pieces of C's longer side, two
  // per thread so that one slowed by other work holds the rest up less. Each piece packs the
  // whole of the other operand again, so no more.
  const int64_t pieces =
      pool && pool->size() > 1 ? std::min<int64_t>(2 * pool->size(), len / 64) : 1;
  if (pieces <= 1) {
    run(0, M, 0, N);
    return;
  }
  const int64_t step = (len + pieces - 1) / pieces;
  pool->parallel_for(pieces, [&](int64_t i) {
    const int64_t p0 = i * step, p = std::min(step, len - p0);
    if (p <= 0) return;
    if (split_m)
      run(p0, p, 0, N);
    else
      run(0, M, p0, p);
  });
}
// Two sets of threads on the same cores (the pool's and OpenBLAS's, which spin between calls)
// slowed each other; the pool does all the threading.
void setup_gemm() { openblas_set_num_threads(1); }
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
void setup_gemm() {}
const char* gemm_backend() { return "builtin"; }
#endif

void parallel_ranges(ThreadPool* pool, int64_t n, int64_t align,
                     const std::function<void(int64_t, int64_t)>& fn) {
  if (n <= 0) return;
  const int64_t units = (n + align - 1) / align;
  const int64_t pieces = pool ? std::min<int64_t>(units, 4 * pool->size()) : 1;
  const int64_t len = (units + pieces - 1) / pieces * align;
  if (pieces == 1) {
    fn(0, n);
    return;
  }
  pool->parallel_for((n + len - 1) / len,
                     [&](int64_t i) { fn(i * len, std::min(n, (i + 1) * len)); });
}

void layer_norm_fwd(const float* x, const float* w, const float* b, int64_t rows, int64_t n,
                    float eps, float* y, float* mean, float* rstd, ThreadPool* pool) {
  parallel_ranges(pool, rows, 1, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const kernels::NormStats s = kernels::layer_norm(x + r * n, w, b, n, eps, y + r * n);
      mean[r] = s.mean;
      rstd[r] = s.rstd;
    }
  });
}

void layer_norm_bwd(const float* x, const float* w, const float* mean, const float* rstd,
                    const float* dy, int64_t rows, int64_t n, float* dx, bool accumulate_dx,
                    float* dw, float* db, ThreadPool* pool) {
  // dx by rows; dw and db by columns, each summed over the rows in order.
  parallel_ranges(pool, rows, 1, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
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
      }
      const float mg = float(sum_g / double(n)), mgx = float(sum_gx / double(n));
      float* dxr = dx + r * n;
      for (int64_t i = 0; i < n; ++i) {
        const float xhat = (xr[i] - m) * s;
        const float v = s * (dyr[i] * w[i] - mg - xhat * mgx);
        dxr[i] = accumulate_dx ? dxr[i] + v : v;
      }
    }
  });
  parallel_ranges(pool, n, 16, [&](int64_t i0, int64_t i1) {
    for (int64_t r = 0; r < rows; ++r) {
      const float *xr = x + r * n, *dyr = dy + r * n;
      const float m = mean[r], s = rstd[r];
      for (int64_t i = i0; i < i1; ++i) {
        dw[i] += dyr[i] * ((xr[i] - m) * s);
        db[i] += dyr[i];
      }
    }
  });
}

void shift_fwd(const float* x, int64_t B, int64_t T, int64_t C, float* carry, int64_t carry_stride,
               float* prev) {
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

namespace {

using F16 = simd::Lanes<16>::type;
typedef int32_t I16 __attribute__((vector_size(64)));

// e^x in 16 lanes: 2^n e^r with n = round(x / ln 2), |r| <= ln(2) / 2, and e^r by its Taylor
// polynomial to degree 7 (relative error below 1e-7 before rounding); x is clamped to
// [-87, 87], inside float's normal range.
// Vectors pass by reference: clang rejects 64-byte vector arguments and results in the clone
// compiled without AVX-512 (they would change the ABI).
[[gnu::always_inline]] inline void exp16(const F16& x_in, F16& out) {
  F16 x = x_in < -87.0f ? F16{} - 87.0f : x_in;
  x = x > 87.0f ? F16{} + 87.0f : x;
  // Adding 1.5 * 2^23 rounds x / ln 2 to an integer held in the low mantissa bits.
  const float shifter = 12582912.0f;
  const F16 t = x * 1.44269504f + shifter, n = t - shifter;
  const F16 r = (x - n * 0.693145752f) - n * 1.42860677e-6f;  // ln 2 in two parts
  F16 p = r * (1.0f / 5040) + 1.0f / 720;
  for (const float c : {1.0f / 120, 1.0f / 24, 1.0f / 6, 0.5f, 1.0f, 1.0f}) p = p * r + c;
  I16 bits;
  std::memcpy(&bits, &t, sizeof bits);
  bits = (bits - 0x4B400000 + 127) << 23;  // 2^n
  F16 scale;
  std::memcpy(&scale, &bits, sizeof scale);
  out = p * scale;
}

// z[i] = e^(z[i] - shift) for i < n; returns their sum.
__attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default"))) double exp_shifted(
    float* z, int64_t n, float shift) {
  double sum = 0;
  int64_t i = 0;
  // Float sums over blocks of 256, then in double.
  for (; i + 256 <= n; i += 256) {
    F16 acc{};
    for (int64_t j = i; j < i + 256; j += 16) {
      F16 e;
      std::memcpy(&e, z + j, sizeof e);
      exp16(e - shift, e);
      simd::store<16>(z + j, e);
      acc += e;
    }
    sum += simd::hsum<16>(acc);
  }
  for (; i < n; ++i) {
    z[i] = std::exp(z[i] - shift);
    sum += z[i];
  }
  return sum;
}

}  // namespace

double cross_entropy(float* logits, const int* targets, int64_t rows, int64_t V, float scale,
                     float max_coef, ThreadPool* pool) {
  std::vector<double> loss(static_cast<size_t>(rows));
  parallel_ranges(pool, rows, 1, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      float* z = logits + r * V;
      float* top = std::max_element(z, z + V);
      const float mx = *top;
      const float target = z[targets[r]];
      // One exp per logit, kept for the softmax.
      const double sum = exp_shifted(z, V, mx);
      loss[size_t(r)] = double(mx) + std::log(sum) - target;
      const float norm = float(double(scale) / sum);
      for (int64_t i = 0; i < V; ++i) z[i] *= norm;
      z[targets[r]] -= scale;
      *top += max_coef * mx;
    }
  });
  double total = 0;
  for (double l : loss) total += l;
  return total;
}

}  // namespace rwkv::train
