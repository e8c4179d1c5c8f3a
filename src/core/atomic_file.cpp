#include "core/atomic_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>

#include "rwkv/error.h"

namespace rwkv {

void write_all(int fd, const void* data, uint64_t size, const std::string& path) {
  const char* p = static_cast<const char*>(data);
  while (size > 0) {
    ssize_t n = ::write(fd, p, size > (1u << 30) ? (1u << 30) : size_t(size));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) throw Error(path + ": write failed: " + std::strerror(errno));
    p += n;
    size -= uint64_t(n);
  }
}

void write_file_atomic(const std::string& path, const std::function<void(int fd)>& write) {
  // Unique per process and call, so threads writing the same path never share a temporary.
  static std::atomic<uint64_t> calls{0};
  const std::string tmp =
      path + ".tmp." + std::to_string(::getpid()) + "." + std::to_string(calls.fetch_add(1));
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) throw Error(path + ": cannot create file: " + std::strerror(errno));
  try {
    write(fd);
    if (::fsync(fd) != 0) throw Error(path + ": fsync failed: " + std::strerror(errno));
    if (::close(fd) != 0) {
      fd = -1;
      throw Error(path + ": close failed: " + std::strerror(errno));
    }
    fd = -1;
    if (std::rename(tmp.c_str(), path.c_str()) != 0)
      throw Error(path + ": cannot replace file: " + std::strerror(errno));
    // Make the rename itself durable; best effort, as some filesystems refuse directory fsync.
    const auto slash = path.rfind('/');
    const std::string dir = slash == std::string::npos ? "." : path.substr(0, slash + 1);
    const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
      ::fsync(dfd);
      ::close(dfd);
    }
  } catch (...) {
    if (fd >= 0) ::close(fd);
    ::unlink(tmp.c_str());
    throw;
  }
}

}  // namespace rwkv
