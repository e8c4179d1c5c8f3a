#include "core/mapped_file.h"

#include <fcntl.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <optional>

#include "rwkv/error.h"

namespace rwkv {

namespace {
// The file stays open with its mapping, so read_mapped() reads the very file that was mapped
// even after its path has been replaced.
struct Mapping {
  void* addr = nullptr;
  size_t size = 0;
  int fd = -1;
  ~Mapping() {
    if (addr) munmap(addr, size);
    if (fd >= 0) close(fd);
  }
};

// The open file behind a map_file() mapping.
int mapped_fd(const Bytes& file) { return static_cast<const Mapping*>(file.owner.get())->fd; }
}  // namespace

Bytes map_file(const std::string& path, bool huge_pages) {
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw Error(path + ": cannot open: " + std::strerror(errno));
  struct stat st {};
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    close(fd);
    throw Error(path + ": not a regular file");
  }
  auto mapping = std::make_shared<Mapping>();
  mapping->fd = fd;
  mapping->size = size_t(st.st_size);
  if (mapping->size > 0) {
    void* addr = mmap(nullptr, mapping->size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (addr == MAP_FAILED) throw Error(path + ": cannot map: " + std::strerror(errno));
    mapping->addr = addr;
    // Only a hint: without it the file is mapped by 4 KiB pages, which works as well.
    if (huge_pages) madvise(addr, mapping->size, MADV_HUGEPAGE);
  }
  Bytes bytes;
  bytes.data = {static_cast<const uint8_t*>(mapping->addr), mapping->size};
  bytes.owner = std::move(mapping);
  bytes.mapped = true;
  return bytes;
}

bool read_mapped(const Bytes& file, const uint8_t* from, size_t n, uint8_t* to) {
  if (!file.mapped || from < file.data.data() ||
      n > size_t(file.data.data() + file.data.size() - from))
    return false;
  const int fd = mapped_fd(file);
  off_t at = off_t(from - file.data.data());
  while (n > 0) {
    const ssize_t got = pread(fd, to, n, at);
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) return false;
    to += got;
    at += got;
    n -= size_t(got);
  }
  return true;
}

namespace {
#ifndef MADV_POPULATE_READ
constexpr int MADV_POPULATE_READ = 22;  // Linux 5.14
#endif
constexpr uintptr_t kHugePage = uintptr_t(2) << 20;

// Bytes of the mapping that contains `at` which are mapped by 2 MiB pages (FilePmdMapped of its
// entry in /proc/self/smaps: a "start-end perms ..." line, then "Key: value kB" lines); 0 where
// that cannot be told.
uint64_t pmd_mapped_bytes(const void* at) {
  std::ifstream smaps("/proc/self/smaps");
  const uintptr_t addr = reinterpret_cast<uintptr_t>(at);
  bool inside = false;
  for (std::string line; std::getline(smaps, line);) {
    unsigned long start, end;
    char dash;
    if (std::sscanf(line.c_str(), "%lx%c%lx ", &start, &dash, &end) == 3 && dash == '-') {
      if (inside) return 0;  // past our entry without a FilePmdMapped line
      inside = start <= addr && addr < end;
      continue;
    }
    unsigned long kb;
    if (inside && std::sscanf(line.c_str(), "FilePmdMapped: %lu kB", &kb) == 1)
      return uint64_t(kb) * 1024;
  }
  return 0;
}

// PAGEMAP_SCAN (Linux 6.7), declared here for older headers.
struct PageRegion {
  uint64_t start, end, categories;
};
struct PmScanArg {
  uint64_t size, flags, start, end, walk_end, vec, vec_len, max_pages, category_inverted,
      category_mask, category_anyof_mask, return_mask;
};
constexpr unsigned long kPagemapScan = _IOWR('f', 16, PmScanArg);
constexpr uint64_t kPageIsHuge = 1 << 6;

// The parts of [begin, end) not mapped by 2 MiB pages (absent ones included), in order; nullopt
// where the kernel cannot tell.
std::optional<std::vector<std::pair<uintptr_t, uintptr_t>>> small_page_regions(int pagemap,
                                                                               uintptr_t begin,
                                                                               uintptr_t end) {
  std::vector<std::pair<uintptr_t, uintptr_t>> out;
  PageRegion regions[64];
  while (begin < end) {
    PmScanArg arg{.size = sizeof(PmScanArg),
                  .flags = 0,
                  .start = begin,
                  .end = end,
                  .walk_end = 0,
                  .vec = reinterpret_cast<uintptr_t>(regions),
                  .vec_len = 64,
                  .max_pages = 0,
                  .category_inverted = kPageIsHuge,
                  .category_mask = kPageIsHuge,
                  .category_anyof_mask = 0,
                  .return_mask = kPageIsHuge};
    const int n = ioctl(pagemap, kPagemapScan, &arg);
    if (n < 0) return std::nullopt;
    for (int i = 0; i < n; ++i) out.push_back({regions[i].start, regions[i].end});
    if (arg.walk_end <= begin) return std::nullopt;
    begin = arg.walk_end;
  }
  return out;
}

bool populate(uintptr_t begin, uintptr_t end) {
  return madvise(reinterpret_cast<void*>(begin), end - begin, MADV_POPULATE_READ) == 0;
}

// Drops [begin, end) of `file`'s mapping from this process and the page cache, then reads it
// back: through a MADV_HUGEPAGE mapping, in 2 MiB folios where the file system can.
void reread(const Bytes& file, uintptr_t begin, uintptr_t end) {
  const int fd = mapped_fd(file);
  const uintptr_t base = reinterpret_cast<uintptr_t>(file.data.data());
  madvise(reinterpret_cast<void*>(begin), end - begin, MADV_DONTNEED);
  posix_fadvise(fd, off_t(begin - base), off_t(end - begin), POSIX_FADV_DONTNEED);
  populate(begin, end);
}
}  // namespace

uint64_t map_by_huge_pages(const Bytes& file, std::vector<std::span<const uint8_t>> ranges) {
  if (!file.mapped || file.data.empty()) return 0;
  const uintptr_t page = uintptr_t(sysconf(_SC_PAGESIZE));
  // Page-aligned, sorted and merged.
  std::vector<std::pair<uintptr_t, uintptr_t>> spans;
  for (std::span<const uint8_t> r : ranges) {
    if (r.empty()) continue;
    const uintptr_t b = reinterpret_cast<uintptr_t>(r.data()) & ~(page - 1);
    const uintptr_t e = (reinterpret_cast<uintptr_t>(r.data()) + r.size() + page - 1) & ~(page - 1);
    spans.push_back({b, e});
  }
  std::sort(spans.begin(), spans.end());
  std::vector<std::pair<uintptr_t, uintptr_t>> merged;
  for (auto [b, e] : spans)
    if (!merged.empty() && b <= merged.back().second)
      merged.back().second = std::max(merged.back().second, e);
    else
      merged.push_back({b, e});
  // Weights that do not fit in memory are left to fault in as they are read: populating them
  // would only evict the first ones again.
  uint64_t total = 0;
  for (auto [b, e] : merged) total += e - b;
  if (total > uint64_t(sysconf(_SC_PHYS_PAGES)) / 10 * 9 * page) return 0;
  for (auto [b, e] : merged)
    if (!populate(b, e)) return 0;
  // A mapping not 2 MiB-aligned can never map the file's folios by 2 MiB pages.
  if (reinterpret_cast<uintptr_t>(file.data.data()) % kHugePage != 0)
    return pmd_mapped_bytes(file.data.data());
  // The 2 MiB pages wholly inside the ranges that are mapped by small pages, as runs.
  const int pagemap = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
  if (pagemap < 0) return pmd_mapped_bytes(file.data.data());
  std::vector<std::pair<uintptr_t, uintptr_t>> small;
  bool scanned = true;
  for (auto [b, e] : merged) {
    const uintptr_t hb = (b + kHugePage - 1) & ~(kHugePage - 1), he = e & ~(kHugePage - 1);
    if (hb >= he) continue;
    const auto regions = small_page_regions(pagemap, hb, he);
    if (!regions) {
      scanned = false;
      break;
    }
    for (auto [rb, re] : *regions) {
      const uintptr_t cb = rb & ~(kHugePage - 1), ce = (re + kHugePage - 1) & ~(kHugePage - 1);
      if (!small.empty() && cb <= small.back().second)
        small.back().second = std::max(small.back().second, ce);
      else
        small.push_back({cb, ce});
    }
  }
  // Small pages: the page cache holds those parts of the file in small folios (written, or read
  // without this mapping's hint). One 2 MiB page is read back first, and each run is checked, so
  // that where they cannot come back in 2 MiB folios (the file system, or too little free memory
  // in 2 MiB blocks) this costs a few MiB of disk reads, not the whole file at every load.
  if (scanned && !small.empty()) {
    // Dirty pages (a file just written) cannot be dropped until written back.
    fdatasync(mapped_fd(file));
    small.insert(small.begin(), {small[0].first, small[0].first + kHugePage});
    small[1].first += kHugePage;
    for (auto [b, e] : small) {
      if (b == e) continue;
      reread(file, b, e);
      const auto still = small_page_regions(pagemap, b, e);
      if (!still || !still->empty()) break;
    }
  }
  close(pagemap);
  return pmd_mapped_bytes(file.data.data());
}

void evict_file_cache(const std::string& path) {
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return;
  posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
  close(fd);
}

void drop_mapped_pages(std::span<const uint8_t> bytes) {
  const uintptr_t page = uintptr_t(sysconf(_SC_PAGESIZE));
  const uintptr_t begin = (reinterpret_cast<uintptr_t>(bytes.data()) + page - 1) & ~(page - 1);
  const uintptr_t end = (reinterpret_cast<uintptr_t>(bytes.data()) + bytes.size()) & ~(page - 1);
  // Only a hint: if it fails, the pages stay resident and nothing else changes.
  if (end > begin) madvise(reinterpret_cast<void*>(begin), end - begin, MADV_DONTNEED);
}

void drop_mapped_pages_outside(const Bytes& file, std::vector<std::span<const uint8_t>> kept) {
  if (!file.mapped || file.data.empty()) return;
  // Whole 2 MiB blocks only: dropping part of one would split the 2 MiB page of a kept neighbour.
  const auto down = [](uintptr_t a) { return a & ~(kHugePage - 1); };
  const auto up = [](uintptr_t a) { return (a + kHugePage - 1) & ~(kHugePage - 1); };
  std::sort(kept.begin(), kept.end(), [](auto a, auto b) { return a.data() < b.data(); });
  uintptr_t from = reinterpret_cast<uintptr_t>(file.data.data());
  const uintptr_t file_end = from + file.data.size();
  const auto drop = [](uintptr_t b, uintptr_t e) {
    if (e > b) drop_mapped_pages({reinterpret_cast<const uint8_t*>(b), size_t(e - b)});
  };
  for (std::span<const uint8_t> k : kept) {
    if (k.empty()) continue;
    const uintptr_t b = reinterpret_cast<uintptr_t>(k.data());
    drop(from, std::min(down(b), file_end));
    from = std::max(from, up(b + k.size()));
  }
  drop(from, file_end);
}

}  // namespace rwkv
