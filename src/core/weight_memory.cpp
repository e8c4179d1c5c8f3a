#include "core/weight_memory.h"

#include <sys/mman.h>

#include <algorithm>
#include <new>
#include <string>

#include "rwkv/error.h"

namespace rwkv {

namespace {
constexpr uint64_t kHugePage = uint64_t(2) << 20;
constexpr uint64_t kChunkBytes = uint64_t(64) << 20;
constexpr uint64_t kAlign = 64;  // so that no vector load of a tensor splits a cache line
}  // namespace

std::shared_ptr<uint8_t> allocate_weights(uint64_t bytes) {
  const size_t size = size_t(std::max(kHugePage, (bytes + kHugePage - 1) / kHugePage * kHugePage));
  uint8_t* p = nullptr;
  try {
    p = static_cast<uint8_t*>(::operator new(size, std::align_val_t(kHugePage)));
  } catch (const std::bad_alloc&) {
    throw Error("cannot allocate " + std::to_string(bytes >> 20) + " MiB for the weights");
  }
  // Best effort: where transparent huge pages are opt-in, ask for them.
  ::madvise(p, size, MADV_HUGEPAGE);
  return {p, [](uint8_t* q) { ::operator delete(q, std::align_val_t(kHugePage)); }};
}

uint8_t* WeightArena::allocate(uint64_t bytes) {
  bytes = std::max(kAlign, (bytes + kAlign - 1) / kAlign * kAlign);
  if (chunks_.empty() || bytes > size_ - used_) {
    size_ = std::max(kChunkBytes, (bytes + kHugePage - 1) / kHugePage * kHugePage);
    chunks_.push_back(allocate_weights(size_));
    used_ = 0;
  }
  uint8_t* p = chunks_.back().get() + used_;
  used_ += bytes;
  return p;
}

std::vector<std::shared_ptr<const void>> WeightArena::owners() const {
  return {chunks_.begin(), chunks_.end()};
}

}  // namespace rwkv
