// Writing files so that a reader never sees half of one: write a temporary file in the same
// directory, flush it to disk, then rename it over the destination.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

namespace rwkv {

// Calls `write(fd)` to fill a temporary file beside `path`, then renames it over `path`.
// On any failure the temporary file is removed, `path` is left as it was, and rwkv::Error is
// thrown naming the path.
void write_file_atomic(const std::string& path, const std::function<void(int fd)>& write);

// Writes all `size` bytes to `fd`, retrying short writes; throws rwkv::Error naming `path`.
void write_all(int fd, const void* data, uint64_t size, const std::string& path);

}  // namespace rwkv
