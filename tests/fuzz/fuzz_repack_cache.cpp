// libFuzzer target for the repack cache reader: any input must either give a usable cache or an
// empty one, never a crash; the first 16 bytes pick the source identity it is checked against.
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "io/repack_cache.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 16) return 0;
  rwkv::RepackSource source;
  std::memcpy(&source.size, data, 8);
  std::memcpy(&source.fingerprint, data + 8, 8);
  source.layout = 1;
  rwkv::Bytes bytes;
  bytes.data = {data + 16, size - 16};
  std::string why;
  const rwkv::RepackCache cache = rwkv::RepackCache::read(bytes, "fuzz.repack", source, &why);
  // Every entry's bytes must lie inside the input: look one up and touch it.
  for (const char* name : {"head.weight", "blocks.0.att.key.weight", "a"})
    for (rwkv::DType t : {rwkv::DType::Q4_0, rwkv::DType::Q8_0})
      for (uint64_t n : {uint64_t(0), uint64_t(1), uint64_t(64)})
        if (const uint8_t* p = cache.find(name, t, 16, 32, n)) {
          volatile uint8_t sink = n ? p[n - 1] : 0;
          (void)sink;
        }
  return 0;
}
