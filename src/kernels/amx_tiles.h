// The AMX tile instructions for the AMX kernel files, as asm with the tile numbers as template
// immediates. GCC's intrinsics need literal tile numbers, and their asm does not tell the
// compiler what memory it reads or writes; these name it where it matters (a tile load of bytes
// the same thread just stored, a tile store the thread then loads), so that no full memory
// barrier is needed (one sent a kernel's accumulator chains through the stack). Include it after
// the file's target pragma (AMX); everything here has internal linkage.
#pragma once

#include <immintrin.h>

#include <cstdint>

namespace rwkv::kernels::amx {
namespace {

// Palette 1: bytes per row and rows of each of the 8 tiles.
struct alignas(64) TileConfig {
  uint8_t palette = 1, start_row = 0, reserved[14] = {};
  uint16_t bytes_per_row[16] = {};
  uint8_t rows[16] = {};
};

inline void load_tile_config(const TileConfig& config) {
  asm volatile("ldtilecfg %0" : : "m"(config));
}

template <int kTile>
inline void tile_load(const void* base, int64_t stride) {
  asm volatile("tileloadd (%[base],%[stride],1), %%tmm%c[tile]"
               :
               : [tile] "i"(kTile), [base] "r"(base), [stride] "r"(stride));
}
// A tile load of `bytes`, 64-byte rows, which the compiler keeps after the stores that fill it.
template <int kTile, typename Bytes>
inline void tile_load_stored(const Bytes& bytes) {
  asm volatile("tileloadd (%[base],%[stride],1), %%tmm%c[tile]"
               :
               : [tile] "i"(kTile), [base] "r"(&bytes), [stride] "r"(int64_t(64)), "m"(bytes));
}
// A tile store to `out`, 64-byte rows, which the compiler keeps before the loads that read it.
template <int kTile, typename Out>
inline void tile_store(Out& out) {
  asm volatile("tilestored %%tmm%c[tile], (%[base],%[stride],1)"
               : "=m"(out)
               : [tile] "i"(kTile), [base] "r"(&out), [stride] "r"(int64_t(64)));
}
template <int kTile>
inline void tile_zero() {
  asm volatile("tilezero %%tmm%c[tile]" : : [tile] "i"(kTile));
}
// C += A . B, signed bytes into int32.
template <int kC, int kA, int kB>
inline void tile_dot_int8() {
  asm volatile("tdpbssd %%tmm%c[b], %%tmm%c[a], %%tmm%c[c]"
               :
               : [c] "i"(kC), [a] "i"(kA), [b] "i"(kB));
}
// C += A . B, bf16 pairs into float32.
template <int kC, int kA, int kB>
inline void tile_dot_bf16() {
  asm volatile("tdpbf16ps %%tmm%c[b], %%tmm%c[a], %%tmm%c[c]"
               :
               : [c] "i"(kC), [a] "i"(kA), [b] "i"(kB));
}
inline void tile_release() { asm volatile("tilerelease" ::: "memory"); }

}  // namespace
}  // namespace rwkv::kernels::amx
