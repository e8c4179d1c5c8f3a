#include "core/mapped_file.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <vector>

#include "test_util.h"

namespace rwkv {
namespace {

constexpr size_t kMiB = size_t(1) << 20;

// 4 KiB writes leave the page cache in 4 KiB folios: the case that map_by_huge_pages reads back.
void write_by_small_pages(const std::string& path, const std::vector<uint8_t>& bytes) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  ASSERT_GE(fd, 0);
  for (size_t at = 0; at < bytes.size(); at += 4096)
    ASSERT_EQ(::write(fd, bytes.data() + at, 4096), 4096);
  ASSERT_EQ(::fsync(fd), 0);  // dirty pages cannot be dropped from the page cache
  ::close(fd);
}

TEST(MapByHugePages, KeepsTheBytesAndMapsWholeHugePagesWhereTheFileSystemCan) {
  const auto dir = test::temp_dir();
  std::vector<uint8_t> bytes(9 * kMiB);
  for (size_t i = 0; i < bytes.size(); ++i) bytes[i] = uint8_t(i * 2654435761u >> 13);
  // Whether this kernel and file system can: a file dropped from the page cache and faulted in
  // through a hinted mapping comes back in 2 MiB folios, mapped as such.
  const std::string probe = (dir / "probe.bin").string();
  write_by_small_pages(probe, bytes);
  evict_file_cache(probe);
  if (populate_mapped(map_file(probe, /*huge_pages=*/true)) == 0)
    GTEST_SKIP() << "this kernel or file system maps " << probe << " by 4 KiB pages only";

  const std::string path = (dir / "weights.bin").string();
  write_by_small_pages(path, bytes);
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

}  // namespace
}  // namespace rwkv
