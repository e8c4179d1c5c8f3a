// Memory for weights made at load time (generated, quantized, repacked or transposed):
// anonymous, 2 MiB-aligned and marked for transparent huge pages. Faulting in several GB by
// 4 KiB pages costs more than generating or quantizing them, and a token that streams its
// weights through 4 KiB pages (a TLB miss and a stop of the hardware prefetcher at every page)
// measured 6-10% slower with int8 activations than through huge pages.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

namespace rwkv {

// Uninitialised memory for `bytes` of weights. Throws rwkv::Error when the memory is not there.
std::shared_ptr<uint8_t> allocate_weights(uint64_t bytes);

// allocate_weights() memory for many tensors, handed out in order from chunks of at least
// 64 MiB, so that tensors smaller than a huge page do not each round up to one. A chunk's
// unused tail is never touched, so it never becomes resident.
class WeightArena {
 public:
  // `bytes` of uninitialised memory, 64-byte aligned, alive while owners() is kept.
  uint8_t* allocate(uint64_t bytes);
  // What keeps everything allocate() handed out alive.
  std::vector<std::shared_ptr<const void>> owners() const;

 private:
  std::vector<std::shared_ptr<uint8_t>> chunks_;
  uint64_t used_ = 0, size_ = 0;  // of the last chunk
};

}  // namespace rwkv
