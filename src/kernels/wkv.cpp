#include "kernels/wkv.h"

#include <xmmintrin.h>

#include "core/simd.h"

namespace rwkv::kernels {

namespace {

// How far ahead of the state row being updated it is prefetched. A token reads each layer's
// state once, long after the weights streamed since evicted it from every cache, and a thread
// runs its heads' states as one piece of memory, so the hardware prefetcher alone (which stops
// at each 4 KiB page) leaves the update waiting on DRAM: WKV-7 from DRAM, 2 threads, 240
// layers, 6.1-6.2 -> 4.4-4.9 ms.
constexpr int64_t kStatePrefetchBytes = 2048;
[[gnu::always_inline]] inline void prefetch_state(const float* row, int64_t bytes) {
  const char* ahead = reinterpret_cast<const char*>(row) + kStatePrefetchBytes;
  for (int64_t b = 0; b < bytes; b += 64) _mm_prefetch(ahead + b, _MM_HINT_T0);
}

// One head of RWKV-5/6 for one token (inputs offset to the head). The inner loop has no
// reduction, so each clone vectorizes it as it stands. For head size 64 the outputs stay in
// registers across the rows (through y, which might alias the state, each row stored and
// reloaded them).
template <int kN>
[[gnu::always_inline]] inline void wkv5_rows(const float* r, const float* k, const float* v,
                                             const float* w, const float* u, int64_t n, float* S,
                                             float* y) {
  const int64_t N = kN > 0 ? kN : n;
  if constexpr (kN > 0) {
    using V = simd::Lanes<16>::type;
    using simd::load;
    constexpr int kVectors = kN / 16;
    V out[kVectors], vj[kVectors];
    RWKV_UNROLL
    for (int c = 0; c < kVectors; ++c) {
      out[c] = V{} - V{};
      vj[c] = load<16>(v + 16 * c);
    }
    for (int64_t i = 0; i < N; ++i) {
      const float ri = r[i], ki = k[i], ui = u[i], wi = w[i];
      float* Si = S + i * N;
      prefetch_state(Si, kN * 4);
      RWKV_UNROLL
      for (int c = 0; c < kVectors; ++c) {
        const V kv = ki * vj[c], s = load<16>(Si + 16 * c);
        out[c] += ri * (ui * kv + s);
        simd::store<16>(Si + 16 * c, kv + wi * s);
      }
    }
    RWKV_UNROLL
    for (int c = 0; c < kVectors; ++c) simd::store<16>(y + 16 * c, out[c]);
  } else {
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
}

__attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default"))) void wkv5_head(
    const float* r, const float* k, const float* v, const float* w, const float* u, int64_t N,
    float* S, float* y) {
  if (N == 64)  // every RWKV-5/6 model released
    wkv5_rows<64>(r, k, v, w, u, N, S, y);
  else
    wkv5_rows<0>(r, k, v, w, u, N, S, y);
}

// One RWKV-7 head for one token: row i of the state is S_i = S_i * w + (S_i . -kk) b + v_i k
// with b = kk * a, and y_i = S_i . r. Rows run W channels at a time; each dot product sums W
// lanes across the row, then the lanes pairwise. kN: the head size when known at compile time
// (the loops then unroll and several rows interleave), else 0 and n is.
template <int W, int kN>
[[gnu::always_inline]] inline void wkv7_rows(const float* r, const float* w, const float* k,
                                             const float* v, const float* kk, const float* a,
                                             int64_t n, float* S, float* y) {
  using V = typename simd::Lanes<W>::type;
  using simd::load;
  const int64_t N = kN > 0 ? kN : n;
  // Rows interleaved: four independent horizontal sums in flight (-16% time, 1 thread).
  constexpr int R = kN > 0 ? 4 : 1;
  for (int64_t i0 = 0; i0 < N; i0 += R) {
    if constexpr (kN > 0) prefetch_state(S + i0 * N, R * kN * 4);
    float sa[R];
    RWKV_UNROLL
    for (int q = 0; q < R; ++q) {
      const float* Si = S + (i0 + q) * N;
      V acc = V{} - V{};
      RWKV_UNROLL
      for (int64_t j = 0; j < N; j += W) acc -= load<W>(Si + j) * load<W>(kk + j);
      sa[q] = simd::hsum<W>(acc);
    }
    V out[R];
    RWKV_UNROLL
    for (int q = 0; q < R; ++q) {
      float* Si = S + (i0 + q) * N;
      const float vi = v[i0 + q];
      out[q] = V{} - V{};
      RWKV_UNROLL
      for (int64_t j = 0; j < N; j += W) {
        const V s = load<W>(Si + j) * load<W>(w + j) + sa[q] * (load<W>(kk + j) * load<W>(a + j)) +
                    vi * load<W>(k + j);
        simd::store<W>(Si + j, s);
        out[q] += s * load<W>(r + j);
      }
    }
    RWKV_UNROLL
    for (int q = 0; q < R; ++q) y[i0 + q] = simd::hsum<W>(out[q]);
  }
}

__attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default"))) void wkv7_head(
    const float* r, const float* w, const float* k, const float* v, const float* kk, const float* a,
    int64_t N, float* S, float* y) {
  if (N == 64)  // every RWKV-7 model released
    wkv7_rows<16, 64>(r, w, k, v, kk, a, N, S, y);
  else if (N % 16 == 0)
    wkv7_rows<16, 0>(r, w, k, v, kk, a, N, S, y);
  else
    wkv7_rows<1, 0>(r, w, k, v, kk, a, N, S, y);
}

// Calls head_fn(h) for every head, over the pool when there is one. Each thread takes its own
// run of consecutive heads (the states, 16 KB per head at N = 64, then stream as one piece of
// memory), two at a time; handing out single heads from one shared counter cost a cache-line
// transfer per head, which is slow where the two cores sit far apart (WKV-7 from L3, 24 layers:
// 750 against 250 us per token there).
template <typename Fn>
void for_each_head(int64_t H, ThreadPool* pool, const Fn& head_fn) {
  const auto heads = [&](int64_t h0, int64_t h1) {
    for (int64_t h = h0; h < h1; ++h) head_fn(h);
  };
  if (pool)
    pool->parallel_ranges(H, 1, 2, heads);
  else
    heads(0, H);
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
