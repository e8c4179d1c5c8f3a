#include "train/data.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <string_view>

#include "core/atomic_file.h"
#include "rwkv/error.h"

namespace rwkv::train {

namespace {

constexpr char kMagic[8] = {'R', 'W', 'K', 'V', 'T', 'O', 'K', '1'};
constexpr char kIdxMagic[9] = {'M', 'M', 'I', 'D', 'I', 'D', 'X', 0, 0};

uint64_t u64_at(const uint8_t* p) {
  uint64_t v;
  std::memcpy(&v, p, 8);
  return v;
}

}  // namespace

bool TokenData::is_token_data(const std::string& path) {
  return path.ends_with(".tok") || path.ends_with(".bin") || path.ends_with(".idx") ||
         (std::filesystem::exists(path + ".bin") && std::filesystem::exists(path + ".idx"));
}

TokenData TokenData::open(const std::string& path) {
  TokenData d;
  if (path.ends_with(".tok")) {
    d.bytes_ = map_file(path);
    const auto& b = d.bytes_.data;
    if (b.size() < 16 || std::memcmp(b.data(), kMagic, 8) != 0)
      throw Error(path + ": not a token file (no RWKVTOK1 header)");
    d.count_ = u64_at(b.data() + 8);
    if (d.count_ > (b.size() - 16) / 4)
      throw Error(path + ": truncated: header says " + std::to_string(d.count_) + " tokens");
    d.data_ = b.data() + 16;
    return d;
  }
  std::string prefix = path;
  if (prefix.ends_with(".bin") || prefix.ends_with(".idx")) prefix.resize(prefix.size() - 4);
  const std::string idx_path = prefix + ".idx";
  const Bytes idx = map_file(idx_path);
  const auto& ib = idx.data;
  // MMIDIDX\0\0, version (u64) = 1, dtype code (u8), sequence count (u64), document count (u64).
  if (ib.size() < 34 || std::memcmp(ib.data(), kIdxMagic, 9) != 0 || u64_at(ib.data() + 9) != 1)
    throw Error(idx_path + ": not a binidx index (MMIDIDX header, version 1)");
  switch (ib[17]) {
    case 1: d.width_ = 1; break;  // uint8
    case 4: d.width_ = 4; break;  // int32
    case 8: d.width_ = 2; break;  // uint16
    default:
      throw Error(idx_path + ": unsupported token type code " + std::to_string(ib[17]) +
                  " (uint8, uint16 and int32 are read)");
  }
  d.bytes_ = map_file(prefix + ".bin");
  const auto& bb = d.bytes_.data;
  if (bb.size() % d.width_ != 0)
    throw Error(prefix + ".bin: size is not a multiple of the token width " +
                std::to_string(d.width_));
  const uint64_t sequences = u64_at(ib.data() + 18);
  // The sizes (int32 per sequence) must account for exactly the tokens in the .bin.
  if (sequences > (ib.size() - 34) / 12)
    throw Error(idx_path + ": truncated: header says " + std::to_string(sequences) + " sequences");
  uint64_t total = 0;
  for (uint64_t i = 0; i < sequences; ++i) {
    int32_t n;
    std::memcpy(&n, ib.data() + 34 + 4 * i, 4);
    if (n < 0) throw Error(idx_path + ": negative sequence length");
    total += uint64_t(n);
  }
  if (total != bb.size() / d.width_)
    throw Error(idx_path + ": sizes sum to " + std::to_string(total) + " tokens but " + prefix +
                ".bin holds " + std::to_string(bb.size() / d.width_));
  d.count_ = total;
  d.data_ = bb.data();
  return d;
}

int TokenData::max_token() const {
  int m = 0;
  for (uint64_t i = 0; i < count_; ++i) m = std::max(m, (*this)[i]);
  return m;
}

uint64_t tokenize_to_file(const std::string& input, const Tokenizer& tokenizer,
                          const std::string& out) {
  const Bytes file = map_file(input);
  const std::string_view text(reinterpret_cast<const char*>(file.data.data()), file.data.size());
  std::vector<int> ids;
  if (input.ends_with(".jsonl")) {
    size_t line_no = 0;
    for (size_t pos = 0; pos < text.size();) {
      size_t end = text.find('\n', pos);
      if (end == std::string_view::npos) end = text.size();
      const std::string_view line = text.substr(pos, end - pos);
      pos = end + 1;
      ++line_no;
      if (line.find_first_not_of(" \t\r") == std::string_view::npos) continue;
      nlohmann::json j;
      try {
        j = nlohmann::json::parse(line);
      } catch (const nlohmann::json::exception&) {
        throw Error(input + ":" + std::to_string(line_no) + ": not valid JSON");
      }
      if (!j.is_object() || !j.contains("text") || !j["text"].is_string())
        throw Error(input + ":" + std::to_string(line_no) + ": expected an object with a \"text\" string");
      const std::vector<int> doc = tokenizer.encode(j["text"].get<std::string>());
      ids.insert(ids.end(), doc.begin(), doc.end());
      ids.push_back(0);
    }
  } else {
    ids = tokenizer.encode(text);
  }
  write_file_atomic(out, [&](int fd) {
    char header[16];
    std::memcpy(header, kMagic, 8);
    const uint64_t n = ids.size();
    std::memcpy(header + 8, &n, 8);
    write_all(fd, header, 16, out);
    std::vector<uint32_t> u(ids.begin(), ids.end());
    write_all(fd, u.data(), u.size() * 4, out);
  });
  return ids.size();
}

}  // namespace rwkv::train
