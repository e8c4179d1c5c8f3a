#include "io/repack_cache.h"

#include <sys/stat.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "core/atomic_file.h"
#include "core/hash.h"
#include "rwkv/error.h"

namespace rwkv {

namespace {

constexpr char kMagic[8] = {'R', 'W', 'K', 'V', 'R', 'E', 'P', 'K'};
// The file's own version (the packed layout has its own, RepackSource::layout); 1 had offsets
// from the start of the file.
constexpr int kFormat = 2;
constexpr uint64_t kAlign = 4096;

uint64_t align_up(uint64_t n) { return (n + kAlign - 1) / kAlign * kAlign; }

}  // namespace

RepackSource repack_source(const std::string& model_path, uint64_t fingerprint, int layout) {
  struct stat st {};
  if (::stat(model_path.c_str(), &st) != 0)
    throw Error(model_path + ": cannot stat: " + std::strerror(errno));
  RepackSource s;
  s.size = uint64_t(st.st_size);
  s.mtime_ns = int64_t(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec;
  s.fingerprint = fingerprint;
  s.layout = layout;
  return s;
}

std::string repack_cache_file(const std::string& dir, const std::string& model_path) {
  std::error_code ec;
  std::filesystem::path abs = std::filesystem::weakly_canonical(model_path, ec);
  if (ec) abs = std::filesystem::absolute(model_path);
  const std::string key = abs.string();
  return (std::filesystem::path(dir) /
          (abs.filename().string() + "." + hex64(fnv1a64(key.data(), key.size())) + ".repack"))
      .string();
}

std::string default_repack_cache_dir() {
  if (const char* d = std::getenv("RWKV_CACHE_DIR"); d && *d) return d;
  if (const char* d = std::getenv("XDG_CACHE_HOME"); d && *d) return std::string(d) + "/rwkv";
  if (const char* d = std::getenv("HOME"); d && *d) return std::string(d) + "/.cache/rwkv";
  return "";
}

RepackCache RepackCache::open(const std::string& path, const RepackSource& source,
                              std::string* why) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return {};  // not built yet
  Bytes file;
  try {
    file = map_file(path, /*huge_pages=*/true);
  } catch (const Error& e) {
    if (why) *why = std::string(e.what()) + "; rebuilding it";
    return {};
  }
  return read(std::move(file), path, source, why);
}

RepackCache RepackCache::read(Bytes file, const std::string& path, const RepackSource& source,
                              std::string* why) {
  const auto fail = [&](const std::string& reason) {
    if (why) *why = path + ": " + reason + "; rebuilding it";
    return RepackCache();
  };
  RepackCache cache;
  cache.file_ = std::move(file);
  const std::span<const uint8_t> d = cache.file_.data;
  if (d.size() < 16 || std::memcmp(d.data(), kMagic, 8) != 0) return fail("not a repack cache");
  uint64_t header_len;
  std::memcpy(&header_len, d.data() + 8, 8);
  if (header_len > d.size() - 16) return fail("truncated header");
  const uint64_t data_start = std::min<uint64_t>(align_up(16 + header_len), d.size());
  const std::span<const uint8_t> data = d.subspan(data_start);
  try {
    const nlohmann::json h =
        nlohmann::json::parse(d.begin() + 16, d.begin() + 16 + ptrdiff_t(header_len));
    if (h.value("format", 0) != kFormat) return {};  // written by another version: stale
    RepackSource built;
    built.layout = h.at("layout").get<int>();
    built.size = h.at("source_size").get<uint64_t>();
    built.mtime_ns = h.at("source_mtime_ns").get<int64_t>();
    built.fingerprint = std::stoull(h.at("fingerprint").get<std::string>(), nullptr, 16);
    for (const auto& [name, t] : h.at("tensors").items()) {
      RepackEntry e;
      e.name = name;
      const auto dtype = dtype_from_name(t.at("dtype").get<std::string>());
      if (!dtype) return fail("unknown dtype for " + name);
      e.dtype = *dtype;
      e.rows = t.at("rows").get<int64_t>();
      e.cols = t.at("cols").get<int64_t>();
      const uint64_t offset = t.at("offset").get<uint64_t>(), bytes = t.at("bytes").get<uint64_t>();
      if (offset > data.size() || bytes > data.size() - offset) return fail("truncated at " + name);
      e.bytes = data.subspan(offset, bytes);
      cache.entries_[name] = std::move(e);
    }
    if (!(built == source)) return {};  // stale: the model or the layout changed
  } catch (const std::exception& e) {   // nlohmann's parse and type errors, std::stoull's
    return fail(std::string("corrupt header (") + e.what() + ")");
  }
  return cache;
}

const uint8_t* RepackCache::find(const std::string& name, DType dtype, int64_t rows, int64_t cols,
                                 uint64_t bytes) const {
  const auto it = entries_.find(name);
  if (it == entries_.end()) return nullptr;
  const RepackEntry& e = it->second;
  if (e.dtype != dtype || e.rows != rows || e.cols != cols || e.bytes.size() != bytes)
    return nullptr;
  return e.bytes.data();
}

bool RepackCache::read_into(const uint8_t* from, size_t n, uint8_t* to) const {
  return read_mapped(file_, from, n, to);
}

void write_repack_cache(const std::string& path, const RepackSource& source,
                        std::span<const RepackEntry> entries) {
  nlohmann::json tensors = nlohmann::json::object();
  std::vector<uint64_t> offsets;  // from the start of the data, each 4096-aligned
  uint64_t end = 0;
  for (const RepackEntry& e : entries) {
    offsets.push_back(end);
    tensors[e.name] = {{"dtype", std::string(dtype_name(e.dtype))},
                       {"rows", e.rows},
                       {"cols", e.cols},
                       {"offset", end},
                       {"bytes", e.bytes.size()}};
    end = align_up(end + e.bytes.size());
  }
  const std::string header = nlohmann::json{
      {"format", kFormat},
      {"layout", source.layout},
      {"source_size", source.size},
      {"source_mtime_ns", source.mtime_ns},
      {"fingerprint", hex64(source.fingerprint)},
      {"tensors", tensors}}.dump();
  const uint64_t data_start = align_up(16 + header.size());
  std::error_code ec;
  const std::filesystem::path parent = std::filesystem::path(path).parent_path();
  if (!parent.empty()) std::filesystem::create_directories(parent, ec);
  if (ec) throw Error(parent.string() + ": cannot create directory: " + ec.message());
  write_file_atomic(path, [&](int fd) {
    const uint64_t header_len = header.size();
    write_all(fd, kMagic, 8, path);
    write_all(fd, &header_len, 8, path);
    write_all(fd, header.data(), header.size(), path);
    const std::vector<uint8_t> zeros(kAlign, 0);
    uint64_t pos = 16 + header.size();
    for (size_t i = 0; i < entries.size(); ++i) {
      const uint64_t offset = data_start + offsets[i];
      write_all(fd, zeros.data(), offset - pos, path);
      write_all(fd, entries[i].bytes.data(), entries[i].bytes.size(), path);
      pos = offset + entries[i].bytes.size();
    }
  });
  // Writing left the file in the page cache in folios of whatever size each write got; read
  // back from disk at the next load it comes in large folios, which --map-repack-cache can then
  // map by 2 MiB pages.
  evict_file_cache(path);
}

}  // namespace rwkv
