// Read-only memory map of a whole file, so weights are used in place without copying.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>

namespace rwkv {

// Bytes of an input plus whatever keeps them alive (a mapping, or an owned buffer).
struct Bytes {
  std::span<const uint8_t> data;
  std::shared_ptr<const void> owner;
};

// Maps `path` read-only. Throws rwkv::Error naming the file when it cannot be opened.
Bytes map_file(const std::string& path);

}  // namespace rwkv
