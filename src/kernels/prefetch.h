// How the kernels prefetch the weights they stream once per token, chosen once for this CPU.
// A core's hardware prefetchers alone do not keep its stream fed, so each streaming loop
// prefetches 8 KB ahead of its reads (the kernels say what that gained). Which hint:
// - AMD Zen: non-temporal. The weights then do not push the WKV states and activations out of
//   L2/L3 (RWKV-6/7 generation +2-8% on Zen 5, every weight type).
// - Intel: into L2 (T1). There a non-temporal prefetch fills only L1 and leaves the L2
//   streamer idle, so a core's stream is limited by its L1 fill buffers: on Emerald Rapids one
//   core read 6.7 GB/s prefetching non-temporally 8 KB ahead against 15-16 GB/s with T0, T1 or
//   no prefetch, and RWKV-7 2048 x 24 generation ran at 46-60% of the machine's read bandwidth
//   instead of 87-100% (T1 measured 0-7% faster than T0 there; other CPUs get T1 too).
#pragma once

#include <xmmintrin.h>

#include "core/cpu.h"

namespace rwkv::kernels {

inline const bool kPrefetchNonTemporal = cpu_features().prefetch_non_temporal;
// Whether a loop that reads less than a cache line a step prefetches at every step (AMD: every
// 32-byte vector of F16/BF16 measured faster than once a line there) or once a line (on Intel,
// twice a line ran RWKV-7 F16 and BF16 generation 9-10% slower).
inline const bool kPrefetchEveryStep = kPrefetchNonTemporal;

// Prefetches the cache line holding p for a loop that streams weights.
[[gnu::always_inline]] inline void prefetch_streamed(const void* p) {
  if (kPrefetchNonTemporal)
    _mm_prefetch(static_cast<const char*>(p), _MM_HINT_NTA);
  else
    _mm_prefetch(static_cast<const char*>(p), _MM_HINT_T1);
}

}  // namespace rwkv::kernels
