#include "kernels/wkv.h"

namespace rwkv::kernels {

void wkv5(const float* r, const float* k, const float* v, const float* w, const float* u, int64_t H,
          int64_t N, float* state, float* y) {
  for (int64_t h = 0; h < H; ++h) {
    const int64_t o = h * N;
    float* S = state + h * N * N;
    float* yh = y + o;
    for (int64_t j = 0; j < N; ++j) yh[j] = 0;
    for (int64_t i = 0; i < N; ++i) {
      const float ri = r[o + i], ki = k[o + i], ui = u[o + i], wi = w[o + i];
      float* Si = S + i * N;
      for (int64_t j = 0; j < N; ++j) {
        const float kv = ki * v[o + j];
        yh[j] += ri * (ui * kv + Si[j]);
        Si[j] = kv + wi * Si[j];
      }
    }
  }
}

void wkv7(const float* r, const float* w, const float* k, const float* v, const float* kk,
          const float* a, int64_t H, int64_t N, float* state, float* y) {
  for (int64_t h = 0; h < H; ++h) {
    const int64_t o = h * N;
    float* S = state + h * N * N;
    for (int64_t i = 0; i < N; ++i) {
      float* Si = S + i * N;
      // sa = S_i . (-kk), from the old state.
      float sa = 0;
      for (int64_t j = 0; j < N; ++j) sa -= Si[j] * kk[o + j];
      const float vi = v[o + i];
      float yi = 0;
      for (int64_t j = 0; j < N; ++j) {
        Si[j] = Si[j] * w[o + j] + sa * kk[o + j] * a[o + j] + vi * k[o + j];
        yi += Si[j] * r[o + j];
      }
      y[o + i] = yi;
    }
  }
}

}  // namespace rwkv::kernels
