// Hugging Face safetensors: a little-endian u64 header length, a JSON header naming each tensor's
// dtype, shape and byte range, then the raw data. The reader checks every field against the file
// and hands out tensors that point into the mapped file; the writer replaces its target atomically.
#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <limits>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "core/atomic_file.h"
#include "io/readers.h"
#include "rwkv/error.h"

namespace rwkv {

namespace {

// Same cap as the reference implementation: real headers are kilobytes, not hundreds of MB.
constexpr uint64_t kMaxHeaderBytes = 100'000'000;

// Names and parser messages come from the file: keep error messages on one printable line.
// Names are valid UTF-8 (the JSON parser checks); parser messages may quote any raw byte.
std::string printable(std::string_view s, bool ascii_only = false) {
  std::string out;
  for (unsigned char c : s) {
    if (c < 0x20 || c == 0x7f || (ascii_only && c >= 0x80)) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", c);
      out += buf;
    } else {
      out += char(c);
    }
  }
  return out;
}

struct Entry {
  std::string name;
  Tensor tensor;
  uint64_t begin = 0, end = 0;
};

class HeaderReader {
 public:
  HeaderReader(const std::string& path, uint64_t data_size) : path_(path), data_size_(data_size) {}

  [[noreturn]] void fail(const std::string& what) const { throw Error(path_ + ": " + what); }
  [[noreturn]] void fail(const std::string& name, const std::string& what) const {
    fail("tensor " + printable(name) + ": " + what);
  }

  // A JSON integer in [0, max], or an error naming `field`.
  uint64_t to_u64(const std::string& name, const nlohmann::json& v, const char* field,
                  uint64_t max) const {
    if (v.is_number_unsigned()) {
      uint64_t u = v.get<uint64_t>();
      if (u > max) fail(name, std::string(field) + " entry " + std::to_string(u) + " is too large");
      return u;
    }
    if (v.is_number_integer())
      fail(name, std::string("negative ") + field + " entry " + std::to_string(v.get<int64_t>()));
    fail(name, std::string(field) + " entries must be integers, got " + printable(v.dump()));
  }

  Entry entry(const std::string& name, const nlohmann::json& info) const {
    if (!info.is_object()) fail(name, "header entry is not a JSON object");
    for (const char* field : {"dtype", "shape", "data_offsets"})
      if (!info.contains(field)) fail(name, std::string("missing ") + field);
    const auto& jdtype = info["dtype"];
    const auto& jshape = info["shape"];
    const auto& joffsets = info["data_offsets"];
    if (!jdtype.is_string()) fail(name, "dtype is not a string");
    if (!jshape.is_array()) fail(name, "shape is not an array");
    if (!joffsets.is_array() || joffsets.size() != 2)
      fail(name, "data_offsets is not an array of two integers");

    Entry e;
    e.name = name;
    const std::string& dtype_str = jdtype.get_ref<const std::string&>();
    auto dtype = dtype_from_name(dtype_str);
    if (!dtype)
      fail(name, "unsupported dtype \"" + printable(dtype_str) +
                     "\" (expected F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 or I8)");
    e.tensor.dtype = *dtype;
    const DTypeInfo& info_t = dtype_info(*dtype);

    // Partial products must fit int64 in shape order, as Tensor::numel() computes them.
    int64_t numel = 1;
    for (const auto& d : jshape) {
      auto dim = int64_t(to_u64(name, d, "shape", uint64_t(std::numeric_limits<int64_t>::max())));
      e.tensor.shape.push_back(dim);
      if (__builtin_mul_overflow(numel, dim, &numel))
        fail(name, "shape " + shape_string(e.tensor.shape) + "... has too many elements");
    }
    const std::string shape = shape_string(e.tensor.shape);
    if (info_t.block_elems > 1 && e.tensor.cols() % info_t.block_elems != 0)
      fail(name, "shape " + shape + " of " + dtype_str +
                     " has rows that are not a whole number of " +
                     std::to_string(info_t.block_elems) + "-element blocks");
    // Our kernels take I8 rows as blocks of 32 (kernels/int8.h).
    if (*dtype == DType::I8 && e.tensor.cols() % 32 != 0)
      fail(name, "shape " + shape + " of I8 has rows that are not a multiple of 32 values");
    uint64_t need;
    if (__builtin_mul_overflow(uint64_t(numel) / uint64_t(info_t.block_elems),
                               uint64_t(info_t.block_bytes), &need))
      fail(name, "shape " + shape + " of " + dtype_str + " is too large");

    const uint64_t max = std::numeric_limits<uint64_t>::max();
    e.begin = to_u64(name, joffsets[0], "data_offsets", max);
    e.end = to_u64(name, joffsets[1], "data_offsets", max);
    const std::string range = "[" + std::to_string(e.begin) + ", " + std::to_string(e.end) + "]";
    if (e.end < e.begin) fail(name, "data_offsets " + range + " end before they begin");
    if (e.end > data_size_)
      fail(name, "data_offsets " + range + " run past the end of the data (" +
                     std::to_string(data_size_) + " bytes; file truncated?)");
    if (e.end - e.begin != need)
      fail(name, "shape " + shape + " of " + dtype_str + " needs " + std::to_string(need) +
                     " bytes but data_offsets give " + std::to_string(e.end - e.begin));
    e.tensor.nbytes = need;
    return e;
  }

 private:
  const std::string& path_;
  uint64_t data_size_;
};

void put_u64_le(std::string& out, uint64_t v) {
  for (int i = 0; i < 8; ++i) out += char((v >> (8 * i)) & 0xff);
}

// The companion tensor that holds an I8 tensor's row scales.
std::string scale_name(const std::string& name) { return name + "_scale"; }

// Folds each I8 tensor's `<name>_scale` (float32, one per row) into Tensor::row_scale and drops
// it from the entries. Scales at an address that is not a multiple of 4 are copied into `owned`.
void attach_row_scales(std::vector<Entry>& entries, const uint8_t* data, const HeaderReader& reader,
                       std::vector<std::shared_ptr<const void>>& owned) {
  std::unordered_map<std::string, size_t> index;
  for (size_t i = 0; i < entries.size(); ++i) index[entries[i].name] = i;
  std::vector<bool> drop(entries.size(), false);
  for (Entry& e : entries) {
    if (e.tensor.dtype != DType::I8) continue;
    auto it = index.find(scale_name(e.name));
    if (it == index.end())
      reader.fail(e.name, "I8 tensor without " + printable(scale_name(e.name)) +
                              " (its per-row float32 scales)");
    const Entry& s = entries[it->second];
    if (s.tensor.dtype != DType::F32 || s.tensor.numel() != e.tensor.rows())
      reader.fail(s.name, "row scales of an I8 tensor with " + std::to_string(e.tensor.rows()) +
                              " rows must be " + std::to_string(e.tensor.rows()) +
                              " F32 values, got shape " + shape_string(s.tensor.shape) + " of " +
                              std::string(dtype_name(s.tensor.dtype)));
    const uint8_t* p = data + s.begin;
    if (reinterpret_cast<uintptr_t>(p) % alignof(float) != 0) {
      auto copy = std::make_shared<std::vector<float>>(size_t(s.tensor.numel()));
      std::memcpy(copy->data(), p, s.tensor.nbytes);
      p = reinterpret_cast<const uint8_t*>(copy->data());
      owned.push_back(copy);
    }
    e.tensor.row_scale = reinterpret_cast<const float*>(p);
    drop[it->second] = true;
  }
  std::vector<Entry> kept;
  for (size_t i = 0; i < entries.size(); ++i)
    if (!drop[i]) kept.push_back(std::move(entries[i]));
  entries = std::move(kept);
}

}  // namespace

TensorMap read_safetensors(const Bytes& file, const std::string& path) {
  const auto& d = file.data;
  if (d.size() < 8)
    throw Error(path + ": too short for a safetensors header (" + std::to_string(d.size()) +
                " bytes)");
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | d[size_t(i)];
  if (n > d.size() - 8)
    throw Error(path + ": header length " + std::to_string(n) + " exceeds the file size (" +
                std::to_string(d.size()) + " bytes)");
  if (n > kMaxHeaderBytes)
    throw Error(path + ": header length " + std::to_string(n) + " exceeds the limit of " +
                std::to_string(kMaxHeaderBytes) + " bytes");

  nlohmann::json header;
  try {
    header = nlohmann::json::parse(d.begin() + 8, d.begin() + 8 + ptrdiff_t(n));
  } catch (const nlohmann::json::exception& e) {
    throw Error(path + ": invalid JSON header: " + printable(e.what(), true));
  }
  if (!header.is_object()) throw Error(path + ": header is not a JSON object");

  const uint8_t* data = d.data() + 8 + n;
  HeaderReader reader(path, d.size() - 8 - n);
  TensorMap map;
  map.path = path;
  map.format = "safetensors";
  std::vector<Entry> entries;
  for (const auto& [name, value] : header.items()) {
    if (name == "__metadata__") {
      if (!value.is_object()) throw Error(path + ": __metadata__ is not a JSON object");
      for (const auto& [key, v] : value.items()) {
        if (!v.is_string())
          throw Error(path + ": __metadata__ value of " + printable(key) + " is not a string");
        map.metadata[key] = v.get<std::string>();
      }
      continue;
    }
    entries.push_back(reader.entry(name, value));
  }

  // File order is data order; the reference writer never lets two tensors share bytes.
  std::stable_sort(entries.begin(), entries.end(), [](const Entry& a, const Entry& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  for (size_t i = 0; i < entries.size(); ++i) {
    Entry& e = entries[i];
    if (i > 0 && e.begin < entries[i - 1].end)
      reader.fail(e.name, "data_offsets [" + std::to_string(e.begin) + ", " +
                              std::to_string(e.end) + "] overlap tensor " +
                              printable(entries[i - 1].name));
    e.tensor.data = data + e.begin;
  }
  std::vector<std::shared_ptr<const void>> owned;
  attach_row_scales(entries, data, reader, owned);
  for (Entry& e : entries) map.add(e.name, std::move(e.tensor));
  for (auto& o : owned) map.keep_alive(std::move(o));
  map.keep_alive(file);
  return map;
}

void write_safetensors(const TensorMap& map, const std::string& path) {
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  nlohmann::ordered_json meta = nlohmann::ordered_json::object();
  for (const auto& [k, v] : map.metadata) meta[k] = v;
  if (!meta.contains("format")) meta["format"] = "pt";
  header["__metadata__"] = std::move(meta);

  uint64_t offset = 0;
  for (const std::string& name : map.names()) {
    if (name == "__metadata__") throw Error(path + ": cannot write a tensor named __metadata__");
    const Tensor& t = map.at(name);
    for (int64_t dim : t.shape)
      if (dim < 0) throw Error(path + ": tensor " + printable(name) + " has a negative shape");
    auto need = dtype_bytes(t.dtype, uint64_t(t.numel()));
    if (!need || *need != t.nbytes || (t.nbytes && !t.data))
      throw Error(path + ": tensor " + printable(name) + " has " + std::to_string(t.nbytes) +
                  " bytes, which do not match its shape " + shape_string(t.shape) + " of " +
                  std::string(dtype_name(t.dtype)));
    if (t.dtype == DType::I8) {
      // The scales go first: float32 data stays 4-byte aligned when the rows that follow are.
      if (!t.row_scale || map.contains(scale_name(name)))
        throw Error(path + ": I8 tensor " + printable(name) +
                    (t.row_scale ? " clashes with a tensor named " + scale_name(name)
                                 : " has no row scales"));
      const uint64_t scale_bytes = uint64_t(t.rows()) * 4;
      header[scale_name(name)] = {{"dtype", "F32"},
                                  {"shape", {t.rows()}},
                                  {"data_offsets", {offset, offset + scale_bytes}}};
      offset += scale_bytes;
    }
    header[name] = {{"dtype", std::string(dtype_name(t.dtype))},
                    {"shape", t.shape},
                    {"data_offsets", {offset, offset + t.nbytes}}};
    offset += t.nbytes;
  }

  std::string json;
  try {
    json = header.dump();
  } catch (const nlohmann::json::exception& e) {
    throw Error(path + ": cannot encode the header: " + printable(e.what()));
  }
  json.append((8 - json.size() % 8) % 8, ' ');
  std::string prefix;
  put_u64_le(prefix, json.size());
  prefix += json;

  write_file_atomic(path, [&](int fd) {
    write_all(fd, prefix.data(), prefix.size(), path);
    for (const std::string& name : map.names()) {
      const Tensor& t = map.at(name);
      if (t.dtype == DType::I8) write_all(fd, t.row_scale, uint64_t(t.rows()) * 4, path);
      write_all(fd, t.data, t.nbytes, path);
    }
  });
}

}  // namespace rwkv
