#include "core/weight_memory.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <utility>
#include <vector>

#include "io/tensor_map.h"
#include "model/weights.h"

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

// The loader keeps its own copy of an I8 tensor's row scales: read at every product from the
// model file, they faulted in the file's pages around them (RWKV-7 1.5B Q4_0 with int8
// activations: 40 MB over its memory budget). Matrices and LoRAs alike, sliced stacks included.
TEST(WeightLoader, CopiesRowScalesOutOfTheModelFile) {
  TensorMap map;
  const int64_t rows = 64, cols = 32;
  std::vector<float> scales(static_cast<size_t>(rows));
  for (int64_t r = 0; r < rows; ++r) scales[size_t(r)] = 0.5f + float(r);
  for (const char* name : {"m", "l"}) {
    Tensor& t = map.add_owned(name, DType::I8, {rows, cols});
    std::memset(const_cast<uint8_t*>(t.data), 3, size_t(t.nbytes));
    t.row_scale = scales.data();
  }
  WeightLoader loader(map, ModelInfo{});
  const Tensor m = loader.matrix("m", {rows, cols});
  const std::vector<Tensor> l = loader.loras("l", {rows, cols}, 2);
  ModelInfo done;
  loader.finish(done);
  const auto outside_file = [&](const float* p) {
    return p + rows <= scales.data() || p >= scales.data() + rows;
  };
  ASSERT_NE(m.row_scale, nullptr);
  EXPECT_TRUE(outside_file(m.row_scale));
  EXPECT_EQ(0, std::memcmp(m.row_scale, scales.data(), scales.size() * 4));
  ASSERT_EQ(l.size(), 2u);
  for (int part = 0; part < 2; ++part) {
    ASSERT_NE(l[size_t(part)].row_scale, nullptr);
    EXPECT_TRUE(outside_file(l[size_t(part)].row_scale));
    EXPECT_EQ(0, std::memcmp(l[size_t(part)].row_scale, scales.data() + part * rows / 2,
                             size_t(rows / 2) * 4));
  }
}

}  // namespace
}  // namespace rwkv
