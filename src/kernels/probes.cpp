#include "kernels/probes.h"

#include <immintrin.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <memory>
#include <vector>

#include "core/cpu.h"
#include "core/weight_memory.h"

#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx512f,avx2,fma"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx512f,avx2,fma")
#endif

namespace rwkv::kernels {

namespace {

double now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// Sums a range with independent 256-bit adds: bound by the memory, not the ALUs.
float sum_range_avx2(const float* p, size_t n) {
  __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
  for (size_t i = 0; i + 32 <= n; i += 32) {
    a0 = _mm256_add_ps(a0, _mm256_loadu_ps(p + i));
    a1 = _mm256_add_ps(a1, _mm256_loadu_ps(p + i + 8));
    a2 = _mm256_add_ps(a2, _mm256_loadu_ps(p + i + 16));
    a3 = _mm256_add_ps(a3, _mm256_loadu_ps(p + i + 24));
  }
  const __m256 s = _mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3));
  float out[8];
  _mm256_storeu_ps(out, s);
  return out[0] + out[7];
}

// 8 independent FMA chains per thread (enough to cover the FMA latency) for `iters` rounds.
template <typename Vec, Vec (*Fma)(Vec, Vec, Vec), Vec (*Set1)(float)>
float fma_loop(int64_t iters) {
  Vec acc[8];
  for (int i = 0; i < 8; ++i) acc[i] = Set1(float(i));
  const Vec m = Set1(0.999999f), a = Set1(1e-7f);
  for (int64_t it = 0; it < iters; ++it)
    // Unrolled so the chains stay in registers: GCC -O2 otherwise keeps acc[] on the stack and
    // measures store-to-load latency instead of the FMA units (about 70 instead of 260 GFLOP/s).
    _Pragma("GCC unroll 8") for (int i = 0; i < 8; ++i) acc[i] = Fma(acc[i], m, a);
  float out[16];
  std::memcpy(out, &acc[7], sizeof(float) * 4);
  return out[0];
}

__m512 set1_512(float v) { return _mm512_set1_ps(v); }
__m256 set1_256(float v) { return _mm256_set1_ps(v); }
__m512 fma_512(__m512 a, __m512 b, __m512 c) { return _mm512_fmadd_ps(a, b, c); }
__m256 fma_256(__m256 a, __m256 b, __m256 c) { return _mm256_fmadd_ps(a, b, c); }

}  // namespace

double measure_read_bandwidth(ThreadPool& pool, size_t bytes, int runs) {
  const size_t n = bytes / sizeof(float);
  // In 2 MiB pages, as the weights that generation streams: through 4 KiB pages the same read
  // measured 2-6% slower on Zen 5, which flattered every fraction of this bandwidth.
  const std::shared_ptr<uint8_t> memory = allocate_weights(n * sizeof(float));
  float* const buf = reinterpret_cast<float*>(memory.get());
  // Filling once makes the pages resident before timing.
  pool.parallel_for(pool.size(), [&](int64_t t) {
    const size_t part = n / size_t(pool.size());
    std::fill(buf + size_t(t) * part, buf + size_t(t + 1) * part, 1.0f);
  });
  std::vector<double> gbps;
  std::atomic<float> sink{0};
  for (int r = 0; r < runs; ++r) {
    const double start = now();
    const int64_t pieces = int64_t(pool.size()) * 16;
    pool.parallel_for(pieces, [&](int64_t i) {
      const size_t part = n / size_t(pieces);
      const float* p = buf + size_t(i) * part;
      float s = 0;
      if (cpu_features().avx2_fma) {
        s = sum_range_avx2(p, part);
      } else {
        for (size_t j = 0; j < part; j += 16) s += p[j];  // one float per cache line
      }
      sink.store(s, std::memory_order_relaxed);
    });
    gbps.push_back(double(bytes) / (now() - start) / 1e9);
  }
  std::sort(gbps.begin(), gbps.end());
  return gbps[gbps.size() / 2];
}

double measure_fma_peak(ThreadPool& pool) {
  const bool wide = cpu_features().avx512;
  const int64_t iters = 20'000'000;
  std::atomic<float> sink{0};
  const double start = now();
  pool.parallel_for(pool.size(), [&](int64_t) {
    sink.store(wide ? fma_loop<__m512, fma_512, set1_512>(iters)
                    : fma_loop<__m256, fma_256, set1_256>(iters),
               std::memory_order_relaxed);
  });
  const double lanes = wide ? 16 : 8;
  return double(pool.size()) * double(iters) * 8 * lanes * 2 / (now() - start) / 1e9;
}

}  // namespace rwkv::kernels

#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif
