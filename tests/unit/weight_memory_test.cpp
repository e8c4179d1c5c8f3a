#include "core/weight_memory.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <utility>
#include <vector>

namespace rwkv {
namespace {

TEST(WeightArena, HandsOutAlignedDisjointMemoryThatLivesWithItsOwners) {
  std::vector<std::shared_ptr<const void>> owners;
  std::vector<std::pair<uint8_t*, uint64_t>> got;
  {
    WeightArena arena;
    // Pieces are handed out in order: small ones share a 64 MiB chunk, one larger than a chunk
    // gets a chunk of its size, and one that does not fit what is left starts a new chunk.
    for (uint64_t bytes : {uint64_t(1), uint64_t(100), uint64_t(3) << 20, uint64_t(200) << 20,
                           uint64_t(64), uint64_t(40) << 20, uint64_t(30) << 20})
      got.push_back({arena.allocate(bytes), bytes});
    owners = arena.owners();
    EXPECT_EQ(owners.size(), 4u);  // [1, 100, 3M] [200M] [64, 40M] [30M]
  }
  for (size_t i = 0; i < got.size(); ++i) {
    EXPECT_EQ(reinterpret_cast<uintptr_t>(got[i].first) % 64, 0u) << i;
    std::memset(got[i].first, int(i + 1), got[i].second);  // alive after the arena is gone
  }
  std::sort(got.begin(), got.end());
  for (size_t i = 1; i < got.size(); ++i)
    EXPECT_LE(got[i - 1].first + got[i - 1].second, got[i].first) << i;
}

TEST(AllocateWeights, IsHugePageAligned) {
  const auto p = allocate_weights(5);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(p.get()) % (uint64_t(2) << 20), 0u);
  p.get()[4] = 1;
}

}  // namespace
}  // namespace rwkv
