// splitmix64: a tiny, fast generator whose numbers are the same on every platform and compiler,
// so a seed reproduces a file (rwkv init), a training run, or a resumed one bit for bit.
#pragma once

#include <cstdint>

namespace rwkv {

// The splitmix64 output function of x + golden ratio: also a good 64-bit mixing hash.
inline uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

struct SplitMix64 {
  uint64_t state;
  uint64_t next() {
    const uint64_t out = splitmix64(state);
    state += 0x9e3779b97f4a7c15ull;
    return out;
  }
  // Uniform in [0, 1), 53 random bits.
  double uniform() { return double(next() >> 11) * (1.0 / 9007199254740992.0); }
};

}  // namespace rwkv
