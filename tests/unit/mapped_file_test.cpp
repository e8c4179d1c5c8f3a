#include "core/mapped_file.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <span>
#include <vector>

#include "test_util.h"

namespace rwkv {
namespace {

constexpr size_t kMiB = size_t(1) << 20;

TEST(MapByHugePages, KeepsTheBytesAndMapsWholeHugePagesWhereTheFileSystemCan) {
  const auto dir = test::temp_dir();
  std::vector<uint8_t> bytes(9 * kMiB);
  for (size_t i = 0; i < bytes.size(); ++i) bytes[i] = uint8_t(i * 2654435761u >> 13);
  // Whether this kernel and file system can: a file dropped from the page cache and faulted in
  // through a hinted mapping comes back in 2 MiB folios, mapped as such.
  const std::string probe = (dir / "probe.bin").string();
  test::write_by_small_pages(probe, bytes);
  evict_file_cache(probe);
  const Bytes probe_file = map_file(probe, /*huge_pages=*/true);
  if (map_by_huge_pages(probe_file, {probe_file.data}) == 0)
    GTEST_SKIP() << "this kernel or file system maps " << probe << " by 4 KiB pages only";

  const std::string path = (dir / "weights.bin").string();
  test::write_by_small_pages(path, bytes);
  const Bytes file = map_file(path, /*huge_pages=*/true);
  // From byte 1000 to 5 bytes before the end: the 2 MiB pages wholly inside are 2-4, 4-6, 6-8 MiB.
  const uint64_t huge = map_by_huge_pages(file, {file.data.subspan(1000, 9 * kMiB - 1005)});
  ASSERT_EQ(std::memcmp(file.data.data(), bytes.data(), bytes.size()), 0);
  EXPECT_EQ(huge % (2 * kMiB), 0u);
  EXPECT_GE(huge, 6 * kMiB);
  EXPECT_LE(huge, 8 * kMiB);
  // Read back once: a second load finds the 2 MiB pages in the page cache.
  const Bytes again = map_file(path, /*huge_pages=*/true);
  EXPECT_EQ(map_by_huge_pages(again, {again.data}), huge);
  EXPECT_EQ(std::memcmp(again.data.data(), bytes.data(), bytes.size()), 0);
}

TEST(MapByHugePages, OnlyMapsFileMappings) {
  std::vector<uint8_t> owned(4 * kMiB, 1);
  const Bytes bytes{.data = owned, .owner = nullptr, .mapped = false};
  EXPECT_EQ(map_by_huge_pages(bytes, {bytes.data}), 0u);
}

// Whether the page at `at` is mapped in this process (bit 63 of its /proc/self/pagemap entry).
bool page_present(const uint8_t* at) {
  const int fd = ::open("/proc/self/pagemap", O_RDONLY);
  uint64_t entry = 0;
  const off_t offset = off_t(reinterpret_cast<uintptr_t>(at) / 4096 * 8);
  const bool read = fd >= 0 && ::pread(fd, &entry, 8, offset) == 8;
  if (fd >= 0) ::close(fd);
  EXPECT_TRUE(read) << "cannot read /proc/self/pagemap";
  return entry >> 63;
}

// Sums every byte, so every page of `bytes` is touched.
uint64_t touch(std::span<const uint8_t> bytes) {
  uint64_t sum = 0;
  for (size_t i = 0; i < bytes.size(); i += 4096) sum += bytes[i];
  return sum;
}

TEST(DropMappedPagesOutside, KeepsOnlyTheTwoMiBBlocksHoldingKeptBytes) {
  const auto dir = test::temp_dir();
  std::vector<uint8_t> bytes(10 * kMiB);
  for (size_t i = 0; i < bytes.size(); ++i) bytes[i] = uint8_t(i * 2654435761u >> 13);
  const std::string path = (dir / "weights.bin").string();
  test::write_by_small_pages(path, bytes);
  const Bytes file = map_file(path);
  const uint64_t sum = touch(file.data);
  const std::vector<std::span<const uint8_t>> kept = {file.data.subspan(7 * kMiB - 10, 20),
                                                      file.data.subspan(2 * kMiB + 100, 50)};
  drop_mapped_pages_outside(file, kept);
  const auto block = [](const uint8_t* p) { return reinterpret_cast<uintptr_t>(p) >> 21; };
  size_t present = 0;
  for (size_t at = 0; at < bytes.size(); at += 4096) {
    const uint8_t* page = file.data.data() + at;
    bool keep = false;
    for (std::span<const uint8_t> k : kept)
      keep = keep || block(page) == block(k.data()) || block(page) == block(&k.back());
    ASSERT_EQ(page_present(page), keep) << "page at " << at;
    present += keep;
  }
  // Two blocks, three when the mapping is not 2 MiB-aligned and a kept range straddles one.
  EXPECT_GE(present, 2 * 512u);
  EXPECT_LE(present, 3 * 512u);
  // Dropped pages come back from the file when read.
  EXPECT_EQ(touch(file.data), sum);
  EXPECT_EQ(std::memcmp(file.data.data(), bytes.data(), bytes.size()), 0);
}

TEST(ReadMapped, CopiesWithoutMappingThePages) {
  const auto dir = test::temp_dir();
  std::vector<uint8_t> bytes(64 * 1024);
  for (size_t i = 0; i < bytes.size(); ++i) bytes[i] = uint8_t(i * 7 + 3);
  const std::string path = (dir / "weights.bin").string();
  test::write_by_small_pages(path, bytes);
  const Bytes file = map_file(path);
  std::vector<uint8_t> out(5000);
  ASSERT_TRUE(read_mapped(file, file.data.data() + 20000, out.size(), out.data()));
  EXPECT_EQ(std::memcmp(out.data(), bytes.data() + 20000, out.size()), 0);
  for (size_t at = 16384; at < 28672; at += 4096) EXPECT_FALSE(page_present(file.data.data() + at));
  // Past the end, or outside the mapping: false.
  EXPECT_FALSE(read_mapped(file, file.data.data() + 60000, 8000, out.data()));
  EXPECT_FALSE(read_mapped(file, bytes.data(), 10, out.data()));
}

}  // namespace
}  // namespace rwkv
