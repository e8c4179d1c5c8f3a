// Small non-cryptographic hashes for checksums and fingerprints.
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>

namespace rwkv {

// FNV-1a, 64 bit; `seed` chains calls.
inline uint64_t fnv1a64(const void* data, size_t n, uint64_t seed = 0xcbf29ce484222325ull) {
  const auto* p = static_cast<const uint8_t*>(data);
  uint64_t h = seed;
  for (size_t i = 0; i < n; ++i) h = (h ^ p[i]) * 0x100000001b3ull;
  return h;
}

inline std::string hex64(uint64_t v) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(v));
  return buf;
}

}  // namespace rwkv
