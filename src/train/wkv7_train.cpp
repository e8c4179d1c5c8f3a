#include "train/wkv7_train.h"

#include <algorithm>
#include <vector>

#include "core/simd.h"

namespace rwkv::train {

namespace {

using simd::hsum;
using simd::Lanes;
using simd::load;
using simd::store;

// One token: prev (N x N) to S (may be the same memory: row i of S depends only on row i of
// prev); with `keep`, y and sa (N each) of the token are written.
template <int W, bool keep>
[[gnu::always_inline]] inline void step(const Wkv7Head& in, int64_t t, int64_t N, const float* prev,
                                        float* S, float* b, float* y, float* sa) {
  using V = typename Lanes<W>::type;
  const int64_t o = t * in.stride;
  const float *r = in.r + o, *w = in.w + o, *k = in.k + o, *v = in.v + o, *kk = in.kk + o;
  const float* a = in.a + o;
  for (int64_t j = 0; j < N; ++j) b[j] = kk[j] * a[j];
  for (int64_t i = 0; i < N; ++i) {
    const float* Pi = prev + i * N;
    float* Si = S + i * N;
    V acc{};
    for (int64_t j = 0; j < N; j += W) acc += load<W>(Pi + j) * load<W>(kk + j);
    const float sai = -hsum<W>(acc), vi = v[i];
    V yacc{};
    for (int64_t j = 0; j < N; j += W) {
      const V s = load<W>(Pi + j) * load<W>(w + j) + sai * load<W>(b + j) + vi * load<W>(k + j);
      store<W>(Si + j, s);
      yacc += s * load<W>(r + j);
    }
    if constexpr (keep) {
      y[o + i] = hsum<W>(yacc);
      sa[o + i] = sai;
    }
  }
}

template <int W>
[[gnu::always_inline]] inline void fwd(const Wkv7Head& in, int64_t T, int64_t N, float* state,
                                       float* saved, float* y, float* sa) {
  std::vector<float> b(static_cast<size_t>(N));  // kk * a
  for (int64_t t = 0; t < T; ++t) {
    if (t % kWkv7Segment == 0) std::copy_n(state, N * N, saved + t / kWkv7Segment * N * N);
    step<W, true>(in, t, N, state, state, b.data(), y, sa);
  }
}

template <int W>
[[gnu::always_inline]] inline void bwd(const Wkv7Head& in, int64_t T, int64_t N, const float* saved,
                                       const float* sa, const float* dy, float* dS, float* dr,
                                       float* dw, float* dk, float* dv, float* dkk, float* da) {
  using V = typename Lanes<W>::type;
  const int64_t NN = N * N;
  // The states after each token of one segment, recomputed from the one saved at its start;
  // kk * a; then the sums over rows i of the per-key-channel gradients.
  std::vector<float> hist(static_cast<size_t>(kWkv7Segment * NN)), buf(static_cast<size_t>(6 * N));
  float *b = buf.data(), *gr = b + N, *gw = gr + N, *gk = gw + N, *gb = gk + N, *gkk = gb + N;
  for (int64_t t0 = (T - 1) / kWkv7Segment * kWkv7Segment; t0 >= 0; t0 -= kWkv7Segment) {
    const float* start = saved + t0 / kWkv7Segment * NN;
    const int64_t t1 = std::min(T, t0 + kWkv7Segment);
    for (int64_t t = t0; t < t1; ++t)
      step<W, false>(in, t, N, t > t0 ? &hist[size_t((t - 1 - t0) * NN)] : start,
                     &hist[size_t((t - t0) * NN)], b, nullptr, nullptr);
    for (int64_t t = t1 - 1; t >= t0; --t) {
      const int64_t o = t * in.stride;
      const float *r = in.r + o, *w = in.w + o, *k = in.k + o, *v = in.v + o, *kk = in.kk + o;
      const float* a = in.a + o;
      const float* S = &hist[size_t((t - t0) * NN)];
      const float* prev = t > t0 ? S - NN : start;
      for (int64_t j = 0; j < N; ++j) b[j] = kk[j] * a[j];
      std::fill(gr, gr + 5 * N, 0.0f);
      for (int64_t i = 0; i < N; ++i) {
        const float *Si = S + i * N, *Pi = prev + i * N;
        float* dSi = dS + i * N;
        const float dyi = dy[o + i], vi = v[i], sai = sa[o + i];
        V dvacc{}, dsaacc{};
        for (int64_t j = 0; j < N; j += W) {
          const V d = load<W>(dSi + j) + dyi * load<W>(r + j);  // y = S r
          store<W>(gr + j, load<W>(gr + j) + dyi * load<W>(Si + j));
          store<W>(gw + j, load<W>(gw + j) + d * load<W>(Pi + j));
          store<W>(gk + j, load<W>(gk + j) + vi * d);
          store<W>(gb + j, load<W>(gb + j) + sai * d);
          dvacc += d * load<W>(k + j);
          dsaacc += d * load<W>(b + j);
          store<W>(dSi + j, d);
        }
        dv[o + i] += hsum<W>(dvacc);
        // The previous state's gradient, through S diag(w) and through sa = prev (-kk).
        const float dsai = hsum<W>(dsaacc);
        for (int64_t j = 0; j < N; j += W) {
          store<W>(dSi + j, load<W>(dSi + j) * load<W>(w + j) - dsai * load<W>(kk + j));
          store<W>(gkk + j, load<W>(gkk + j) - dsai * load<W>(Pi + j));
        }
      }
      for (int64_t j = 0; j < N; ++j) {
        dr[o + j] += gr[j];
        dw[o + j] = gw[j];
        dk[o + j] += gk[j];
        dkk[o + j] = gkk[j] + gb[j] * a[j];
        da[o + j] = gb[j] * kk[j];
      }
    }
  }
}

}  // namespace

// One clone per ISA level; vectors of 16 channels where N allows, else one at a time.
__attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default"))) void wkv7_fwd(
    const Wkv7Head& in, int64_t T, int64_t N, float* state, float* saved, float* y, float* sa) {
  if (N % 16 == 0)
    fwd<16>(in, T, N, state, saved, y, sa);
  else
    fwd<1>(in, T, N, state, saved, y, sa);
}

__attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default"))) void wkv7_bwd(
    const Wkv7Head& in, int64_t T, int64_t N, const float* saved, const float* sa, const float* dy,
    float* dS, float* dr, float* dw, float* dk, float* dv, float* dkk, float* da) {
  if (N % 16 == 0)
    bwd<16>(in, T, N, saved, sa, dy, dS, dr, dw, dk, dv, dkk, da);
  else
    bwd<1>(in, T, N, saved, sa, dy, dS, dr, dw, dk, dv, dkk, da);
}

}  // namespace rwkv::train
