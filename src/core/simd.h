// Vectors of W floats for kernels that are compiled once per ISA level (GCC's
// target_clones): a GCC vector extension, which each clone maps to its widest registers (or
// splits); a plain float for W = 1. Only for always-inlined use inside such clones.
#pragma once

#include <cstring>

// The helpers take and return GCC vectors but are always inlined into the clones that have the
// ISA for them, so no call crosses the ABI the warning is about.
#pragma GCC diagnostic ignored "-Wpsabi"

// Fully unrolled small loops keep a tile's accumulators and weights in registers (GCC -O2 left
// them on the stack otherwise).
#define RWKV_UNROLL _Pragma("GCC unroll 16")

namespace rwkv::simd {

template <int W>
struct Lanes {
  typedef float type __attribute__((vector_size(4 * W)));
};
template <>
struct Lanes<1> {
  using type = float;
};

template <int W>
[[gnu::always_inline]] inline typename Lanes<W>::type load(const float* p) {
  typename Lanes<W>::type v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
template <int W>
[[gnu::always_inline]] inline void store(float* p, const typename Lanes<W>::type& v) {
  std::memcpy(p, &v, sizeof v);
}
// Sum of the lanes, pairwise (halves added until one is left).
template <int W>
[[gnu::always_inline]] inline float hsum(const typename Lanes<W>::type& v) {
  if constexpr (W == 1) {
    return v;
  } else {
    typename Lanes<W / 2>::type lo, hi;
    std::memcpy(&lo, &v, sizeof lo);
    std::memcpy(&hi, reinterpret_cast<const char*>(&v) + sizeof lo, sizeof hi);
    return hsum<W / 2>(lo + hi);
  }
}

}  // namespace rwkv::simd
