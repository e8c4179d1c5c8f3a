#include "kernels/wkv.h"

namespace rwkv::kernels {

namespace {

// One head of RWKV-5/6 for one token (inputs offset to the head).
void wkv5_head(const float* r, const float* k, const float* v, const float* w, const float* u,
               int64_t N, float* S, float* y) {
  for (int64_t j = 0; j < N; ++j) y[j] = 0;
  for (int64_t i = 0; i < N; ++i) {
    const float ri = r[i], ki = k[i], ui = u[i], wi = w[i];
    float* Si = S + i * N;
    for (int64_t j = 0; j < N; ++j) {
      const float kv = ki * v[j];
      y[j] += ri * (ui * kv + Si[j]);
      Si[j] = kv + wi * Si[j];
    }
  }
}

// Rows [i, i + Q) of one RWKV-7 head for one token. The two dot products per row are sequential
// sums; Q rows side by side give Q independent chains (each row's order is unchanged).
template <int Q>
void wkv7_rows(const float* r, const float* w, const float* k, const float* v, const float* kk,
               const float* a, int64_t N, int64_t i, float* S, float* y) {
  // Fully unrolled so that sa[] and out[] live in registers (GCC -O2 keeps them on the stack).
#define RWKV_UNROLL_ROWS _Pragma("GCC unroll 4")
  float sa[Q] = {}, out[Q] = {};
  // sa = S_i . (-kk), from the old state.
  for (int64_t j = 0; j < N; ++j) {
    RWKV_UNROLL_ROWS
    for (int q = 0; q < Q; ++q) sa[q] -= S[(i + q) * N + j] * kk[j];
  }
  for (int64_t j = 0; j < N; ++j) {
    RWKV_UNROLL_ROWS
    for (int q = 0; q < Q; ++q) {
      float& s = S[(i + q) * N + j];
      s = s * w[j] + sa[q] * kk[j] * a[j] + v[i + q] * k[j];
      out[q] += s * r[j];
    }
  }
#undef RWKV_UNROLL_ROWS
  for (int q = 0; q < Q; ++q) y[i + q] = out[q];
}

void wkv7_head(const float* r, const float* w, const float* k, const float* v, const float* kk,
               const float* a, int64_t N, float* S, float* y) {
  int64_t i = 0;
  for (; i + 4 <= N; i += 4) wkv7_rows<4>(r, w, k, v, kk, a, N, i, S, y);
  for (; i < N; ++i) wkv7_rows<1>(r, w, k, v, kk, a, N, i, S, y);
}

// Calls head_fn(h) for every head, over the pool when there is one.
template <typename Fn>
void for_each_head(int64_t H, ThreadPool* pool, const Fn& head_fn) {
  if (pool && pool->size() > 1 && H > 1) {
    pool->parallel_for(H, head_fn);
  } else {
    for (int64_t h = 0; h < H; ++h) head_fn(h);
  }
}

}  // namespace

void wkv5(const float* r, const float* k, const float* v, const float* w, int64_t w_stride,
          const float* u, int64_t T, int64_t H, int64_t N, float* state, float* y,
          ThreadPool* pool) {
  const int64_t C = H * N;
  for_each_head(H, pool, [&](int64_t h) {
    const int64_t o = h * N;
    for (int64_t t = 0; t < T; ++t)
      wkv5_head(r + t * C + o, k + t * C + o, v + t * C + o, w + t * w_stride + o, u + o, N,
                state + h * N * N, y + t * C + o);
  });
}

void wkv7(const float* r, const float* w, const float* k, const float* v, const float* kk,
          const float* a, int64_t T, int64_t H, int64_t N, float* state, float* y,
          ThreadPool* pool) {
  const int64_t C = H * N;
  for_each_head(H, pool, [&](int64_t h) {
    const int64_t o = h * N;
    for (int64_t t = 0; t < T; ++t) {
      const int64_t to = t * C + o;
      wkv7_head(r + to, w + to, k + to, v + to, kk + to, a + to, N, state + h * N * N, y + to);
    }
  });
}

}  // namespace rwkv::kernels
