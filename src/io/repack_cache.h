// The repack cache: a file holding a model's matrices in a kernel's own layout
// (kernels::pack_int8_groups), written the first time a model is loaded that way and read on
// later loads, so the repacking is paid once. One file per model path; it records what it was
// built from and is ignored (then rebuilt) when that no longer matches.
//
// Layout: "RWKVREPK", a little-endian u64 header length, a JSON header
//   {"format": 2, "layout": N, "source_size": S, "source_mtime_ns": T, "fingerprint": "hex",
//    "tensors": {name: {"dtype": "Q4_0", "rows": R, "cols": C, "offset": O, "bytes": B}}}
// then, from the next multiple of 4096 bytes, the data: each tensor's bytes at its 4096-aligned
// offset from the start of the data.
#pragma once

#include <cstdint>
#include <map>
#include <span>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "core/mapped_file.h"

namespace rwkv {

// What a cache was built from: the model file as it was, and the packed layout's version.
struct RepackSource {
  uint64_t size = 0;
  int64_t mtime_ns = 0;
  uint64_t fingerprint = 0;  // ModelInfo::fingerprint
  int layout = 0;

  bool operator==(const RepackSource&) const = default;
};

// The source identity of the model file at `model_path` (its size and modification time).
// Throws rwkv::Error when it cannot be read.
RepackSource repack_source(const std::string& model_path, uint64_t fingerprint, int layout);

// Where the repack cache of `model_path` lives in `dir`: a name derived from the model's
// absolute path, so each model has one file that is replaced when the model changes.
std::string repack_cache_file(const std::string& dir, const std::string& model_path);

// The default cache directory: $RWKV_CACHE_DIR, else $XDG_CACHE_HOME/rwkv, else
// $HOME/.cache/rwkv ("" when none of them is set).
std::string default_repack_cache_dir();

struct RepackEntry {
  std::string name;
  DType dtype = DType::F32;
  int64_t rows = 0, cols = 0;
  std::span<const uint8_t> bytes;
};

class RepackCache {
 public:
  // Maps `path` (marked for huge pages) when it is a well-formed cache built from `source`;
  // otherwise (missing, stale, truncated or corrupt) the cache is empty, and `why` says why when
  // it is not just missing.
  static RepackCache open(const std::string& path, const RepackSource& source, std::string* why);
  // The same for a cache's bytes (`path` only names them in `why`).
  static RepackCache read(Bytes file, const std::string& path, const RepackSource& source,
                          std::string* why);

  bool empty() const { return entries_.empty(); }
  // The stored bytes of `name` when they were packed from a tensor of this dtype and shape and
  // have `bytes` bytes; otherwise null. Valid while the cache or its owner() lives.
  const uint8_t* find(const std::string& name, DType dtype, int64_t rows, int64_t cols,
                      uint64_t bytes) const;
  // Copies n bytes starting at `from` (inside what find() returned) into `to` from the file
  // that was validated (read_mapped: the mapping's pages are never touched), even if the path
  // has been replaced since. False when the cache is not a mapping or the read fails.
  bool read_into(const uint8_t* from, size_t n, uint8_t* to) const;
  // The mapped file (map_file() with huge pages), and what keeps it alive for whoever uses the
  // bytes find() returned in place.
  const Bytes& file() const { return file_; }
  const std::shared_ptr<const void>& owner() const { return file_.owner; }

 private:
  Bytes file_;
  std::map<std::string, RepackEntry> entries_;
};

// Writes a cache of `entries` built from `source` to `path`, atomically, creating its directory.
// Throws rwkv::Error naming the path on failure (the old file, if any, is left as it was).
void write_repack_cache(const std::string& path, const RepackSource& source,
                        std::span<const RepackEntry> entries);

}  // namespace rwkv
