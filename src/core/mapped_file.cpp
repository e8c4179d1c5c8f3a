#include "core/mapped_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>

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
  const int fd = static_cast<const Mapping*>(file.owner.get())->fd;
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

uint64_t populate_mapped(const Bytes& file) {
  if (!file.mapped || file.data.empty()) return 0;
#ifndef MADV_POPULATE_READ
  constexpr int MADV_POPULATE_READ = 22;  // Linux 5.14
#endif
  void* addr = const_cast<uint8_t*>(file.data.data());
  if (madvise(addr, file.data.size(), MADV_POPULATE_READ) != 0) return 0;
  // The mapping's entry in smaps: its "start-end perms ..." line, then "Key: value kB" lines.
  std::ifstream smaps("/proc/self/smaps");
  const uintptr_t at = reinterpret_cast<uintptr_t>(addr);
  bool inside = false;
  for (std::string line; std::getline(smaps, line);) {
    unsigned long start, end;
    char dash;
    if (std::sscanf(line.c_str(), "%lx%c%lx ", &start, &dash, &end) == 3 && dash == '-') {
      if (inside) return 0;  // past our entry without a FilePmdMapped line
      inside = start <= at && at < end;
      continue;
    }
    unsigned long kb;
    if (inside && std::sscanf(line.c_str(), "FilePmdMapped: %lu kB", &kb) == 1)
      return uint64_t(kb) * 1024;
  }
  return 0;
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

}  // namespace rwkv
