#include "core/mapped_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

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

Bytes map_file(const std::string& path) {
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

void drop_mapped_pages(std::span<const uint8_t> bytes) {
  const uintptr_t page = uintptr_t(sysconf(_SC_PAGESIZE));
  const uintptr_t begin = (reinterpret_cast<uintptr_t>(bytes.data()) + page - 1) & ~(page - 1);
  const uintptr_t end = (reinterpret_cast<uintptr_t>(bytes.data()) + bytes.size()) & ~(page - 1);
  // Only a hint: if it fails, the pages stay resident and nothing else changes.
  if (end > begin) madvise(reinterpret_cast<void*>(begin), end - begin, MADV_DONTNEED);
}

}  // namespace rwkv
