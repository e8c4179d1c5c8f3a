// Cache-line-aligned vectors for buffers that the kernels read with 64-byte vector loads: such a
// load from an address 16 bytes past a line (where malloc puts large blocks: a page plus its
// header) touches two lines and costs two loads, which halved a multi-token tile's speed.
#pragma once

#include <cstddef>
#include <new>
#include <vector>

namespace rwkv {

inline constexpr std::size_t kCacheLine = 64;

template <class T>
struct CacheLineAllocator {
  using value_type = T;
  CacheLineAllocator() = default;
  template <class U>
  constexpr CacheLineAllocator(const CacheLineAllocator<U>&) noexcept {}
  T* allocate(std::size_t n) {
    return static_cast<T*>(::operator new(n * sizeof(T), std::align_val_t(kCacheLine)));
  }
  void deallocate(T* p, std::size_t) noexcept {
    ::operator delete(p, std::align_val_t(kCacheLine));
  }
  template <class U>
  bool operator==(const CacheLineAllocator<U>&) const noexcept {
    return true;
  }
};

template <class T>
using AlignedVector = std::vector<T, CacheLineAllocator<T>>;

}  // namespace rwkv
