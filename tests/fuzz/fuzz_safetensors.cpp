// libFuzzer target for the safetensors reader: any input must either load or raise rwkv::Error.
#include <cstddef>
#include <cstdint>

#include "io/readers.h"
#include "rwkv/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  rwkv::Bytes bytes;
  bytes.data = {data, size};
  try {
    rwkv::TensorMap map = rwkv::read_safetensors(bytes, "fuzz.safetensors");
    // Touch every tensor's bytes so the sanitizers see any range that escapes the input.
    uint8_t sum = 0;
    for (const auto& name : map.names()) {
      const rwkv::Tensor& t = map.at(name);
      for (uint64_t i = 0; i < t.nbytes; ++i) sum ^= t.data[i];
      if (t.dtype == rwkv::DType::I8)  // and its row scales
        for (int64_t r = 0; r < t.rows(); ++r) sum ^= uint8_t(t.row_scale[r]);
      if (t.numel() < 0 || t.rows() < 0) __builtin_trap();
      if (t.rows() > 0) (void)t.row_bytes();
    }
    volatile uint8_t sink = sum;
    (void)sink;
  } catch (const rwkv::Error&) {
  }
  return 0;
}
