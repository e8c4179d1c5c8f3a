// State files: a 64-byte little-endian header, then the state's floats.
//   0 "RWKVSTAT"  8 u32 file version (1)  12 u32 header bytes (64)  16 char[8] model version
//  24 u32 n_layer  28 u32 n_embd  32 u32 head_size  36 u32 dtype (0 = float32)
//  40 u64 float count  48 u64 FNV-1a of the payload  56 u64 model fingerprint
#include "rwkv/state.h"

#include <algorithm>
#include <cstring>

#include "core/atomic_file.h"
#include "core/hash.h"
#include "core/mapped_file.h"

namespace rwkv {

namespace {

constexpr char kMagic[8] = {'R', 'W', 'K', 'V', 'S', 'T', 'A', 'T'};
constexpr uint32_t kFileVersion = 1;
constexpr size_t kHeaderBytes = 64;

struct Header {
  char magic[8];
  uint32_t file_version;
  uint32_t header_bytes;
  char model_version[8];
  uint32_t n_layer, n_embd, head_size, dtype;
  uint64_t n_floats, checksum, fingerprint;
};
static_assert(sizeof(Header) == kHeaderBytes);

Header header_for(const Model& model) {
  const ModelInfo& info = model.info();
  Header h{};
  std::memcpy(h.magic, kMagic, 8);
  h.file_version = kFileVersion;
  h.header_bytes = kHeaderBytes;
  std::memcpy(h.model_version, info.version.data(),
              std::min(info.version.size(), sizeof h.model_version));
  h.n_layer = uint32_t(info.n_layer);
  h.n_embd = uint32_t(info.n_embd);
  h.head_size = uint32_t(info.head_size);
  h.n_floats = model.state_size();
  h.fingerprint = info.fingerprint;
  return h;
}

std::string describe(const Header& h) {
  return "RWKV-" + std::string(h.model_version, strnlen(h.model_version, 8)) +
         " n_layer=" + std::to_string(h.n_layer) + " n_embd=" + std::to_string(h.n_embd) +
         " head_size=" + std::to_string(h.head_size);
}

}  // namespace

State::State(const Model& model) : model_(&model), data_(model.state_size()) { reset(); }

void State::reset() { model_->init_state(data_); }

void State::save(const std::string& path) const {
  Header h = header_for(*model_);
  h.checksum = fnv1a64(data_.data(), data_.size() * 4);
  write_file_atomic(path, [&](int fd) {
    write_all(fd, &h, sizeof h, path);
    write_all(fd, data_.data(), data_.size() * 4, path);
  });
}

State State::load(const Model& model, const std::string& path, bool any_model) {
  Bytes file = map_file(path);
  const auto& d = file.data;
  if (d.size() < kHeaderBytes)
    throw Error(path + ": truncated state file (" + std::to_string(d.size()) +
                " bytes, the header alone is 64)");
  Header h;
  std::memcpy(&h, d.data(), sizeof h);
  if (std::memcmp(h.magic, kMagic, 8) != 0) throw Error(path + ": not an rwkv state file");
  if (h.file_version != kFileVersion || h.header_bytes != kHeaderBytes)
    throw Error(path + ": unsupported state file version " + std::to_string(h.file_version));
  if (h.dtype != 0)
    throw Error(path + ": unsupported state dtype " + std::to_string(h.dtype) +
                " (expected 0, float32)");
  const Header want = header_for(model);
  if (std::memcmp(h.model_version, want.model_version, 8) != 0 || h.n_layer != want.n_layer ||
      h.n_embd != want.n_embd || h.head_size != want.head_size || h.n_floats != want.n_floats)
    throw Error(path + ": state is for " + describe(h) + " but the model is " + describe(want));
  if (d.size() - kHeaderBytes != h.n_floats * 4)
    throw Error(path + ": " +
                (d.size() - kHeaderBytes < h.n_floats * 4 ? "truncated" : "oversized") +
                " state file: " + std::to_string(d.size() - kHeaderBytes) +
                " payload bytes, expected " + std::to_string(h.n_floats * 4));
  if (fnv1a64(d.data() + kHeaderBytes, h.n_floats * 4) != h.checksum)
    throw Error(path + ": corrupt state file (payload checksum mismatch)");
  if (!any_model && h.fingerprint != want.fingerprint)
    throw Error(path + ": state was saved by another model of the same shape (fingerprint " +
                hex64(h.fingerprint) + ", this model " + hex64(want.fingerprint) + ")");
  State state(model);
  std::memcpy(state.data_.data(), d.data() + kHeaderBytes, h.n_floats * 4);
  return state;
}

}  // namespace rwkv
