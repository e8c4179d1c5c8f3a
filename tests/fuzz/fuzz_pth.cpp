// libFuzzer target for the .pth reader (zip + restricted unpickler): any input must either load
// or raise rwkv::Error, and every tensor it hands out must lie inside the input.
#include <cstddef>
#include <cstdint>

#include "io/readers.h"
#include "rwkv/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  rwkv::Bytes bytes;
  bytes.data = {data, size};
  try {
    rwkv::TensorMap map = rwkv::read_pth(bytes, "fuzz.pth");
    uint8_t sum = 0;
    for (const auto& name : map.names()) {
      const rwkv::Tensor& t = map.at(name);
      if (t.numel() < 0 || t.data < data || t.nbytes > size ||
          uint64_t(t.data - data) > size - t.nbytes ||
          t.nbytes != *rwkv::dtype_bytes(t.dtype, uint64_t(t.numel())))
        __builtin_trap();
      // Touch both ends so the sanitizers also see any range that escapes the input.
      if (t.nbytes) sum ^= t.data[0] ^ t.data[t.nbytes - 1];
    }
    volatile uint8_t sink = sum;
    (void)sink;
  } catch (const rwkv::Error&) {
  }
  return 0;
}
