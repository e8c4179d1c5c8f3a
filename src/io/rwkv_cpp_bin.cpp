// Reader for rwkv.cpp's `.bin` model files (ggml-based, file versions 100 and 101).
// rwkv.cpp's converter stored some parameters reshaped, transposed or already transformed
// (e.g. RWKV-4 `time_decay` as -exp(time_decay)); this reader undoes all of it so the rest of
// the engine sees the official checkpoint names, shapes and values. Format quirks end here.
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "core/quant.h"
#include "io/readers.h"
#include "rwkv/error.h"

namespace rwkv {

namespace {

constexpr uint32_t kMagic = 0x67676d66;  // "ggmf"

struct Cursor {
  std::span<const uint8_t> data;
  uint64_t pos = 0;
  const std::string& path;

  int32_t i32(const char* what) {
    if (data.size() - pos < 4)
      throw Error(path + ": truncated file: expected " + what + " at byte " + std::to_string(pos));
    int32_t v;
    std::memcpy(&v, data.data() + pos, 4);
    pos += 4;
    return v;
  }
  const uint8_t* take(uint64_t n, const std::string& what) {
    if (data.size() - pos < n)
      throw Error(path + ": truncated file: " + what + " needs " + std::to_string(n) +
                  " bytes at byte " + std::to_string(pos) + " but the file has " +
                  std::to_string(data.size() - pos) + " left");
    const uint8_t* p = data.data() + pos;
    pos += n;
    return p;
  }
};

// rwkv.cpp data type codes; 4-6 were ggml's short-lived Q4_2/Q4_3/Q4_3 and are never written.
std::optional<DType> dtype_from_code(int32_t code) {
  switch (code) {
    case 0: return DType::F32;
    case 1: return DType::F16;
    case 2: return DType::Q4_0;
    case 3: return DType::Q4_1;
    case 7: return DType::Q5_0;
    case 8: return DType::Q5_1;
    case 9: return DType::Q8_0;
    default: return std::nullopt;
  }
}

// File version 100 predates ggml's May 2023 block changes: Q4_0, Q4_1 and Q8_0 scales were
// float32, and the nibbles of elements 2j and 2j+1 shared byte j. Returns the block size.
int64_t legacy_block_bytes(DType t) {
  switch (t) {
    case DType::Q4_0: return 20;
    case DType::Q4_1: return 24;
    case DType::Q5_0: return 22;
    case DType::Q5_1: return 24;
    case DType::Q8_0: return 36;
    default: return 0;
  }
}

void dequantize_legacy(DType t, const uint8_t* src, int64_t n, float* dst) {
  auto f32 = [](const uint8_t* p) { float v; std::memcpy(&v, p, 4); return v; };
  auto f16 = [](const uint8_t* p) { uint16_t v; std::memcpy(&v, p, 2); return fp16_to_fp32(v); };
  const int64_t bb = legacy_block_bytes(t);
  for (int64_t blk = 0; blk < n / 32; ++blk) {
    const uint8_t* b = src + blk * bb;
    float* y = dst + blk * 32;
    float d = 0, m = 0;
    uint32_t qh = 0;
    const uint8_t* qs = nullptr;
    switch (t) {
      case DType::Q4_0: d = f32(b); qs = b + 4; break;
      case DType::Q4_1: d = f32(b); m = f32(b + 4); qs = b + 8; break;
      case DType::Q5_0: d = f16(b); std::memcpy(&qh, b + 2, 4); qs = b + 6; break;
      case DType::Q5_1: d = f16(b); m = f16(b + 2); std::memcpy(&qh, b + 4, 4); qs = b + 8; break;
      case DType::Q8_0:
        d = f32(b);
        for (int j = 0; j < 32; ++j) y[j] = float(int8_t(b[4 + j])) * d;
        continue;
      default: break;
    }
    for (int j = 0; j < 32; ++j) {
      int q = (j % 2 == 0) ? (qs[j / 2] & 0xf) : (qs[j / 2] >> 4);
      if (t == DType::Q5_0 || t == DType::Q5_1) q |= int((qh >> j) & 1) << 4;
      switch (t) {
        case DType::Q4_0: y[j] = float(q - 8) * d; break;
        case DType::Q5_0: y[j] = float(q - 16) * d; break;
        default: y[j] = float(q) * d + m; break;
      }
    }
  }
}

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

std::vector<int64_t> squeezed(const std::vector<int64_t>& shape) {
  std::vector<int64_t> out;
  for (int64_t d : shape)
    if (d != 1) out.push_back(d);
  return out;
}

// The file's bytes of a LoRA matrix (or a stack of them), which hold its transpose, recorded
// as such with its canonical shape (TensorMap::add_stored_transposed), for a model to read.
void record_stored_transposed(TensorMap& map, const std::string& name, Tensor stored,
                              std::vector<int64_t> canonical_shape) {
  stored.shape = std::move(canonical_shape);
  map.add_stored_transposed(name, std::move(stored));
}

// Copies `name` transposed as a 2-D (rows, cols) matrix, in float32.
void transpose_2d(TensorMap& map, const std::string& name) {
  const Tensor t = map.at(name);
  std::vector<int64_t> s = squeezed(t.shape);
  if (s.size() != 2) throw Error(map.path + ": tensor " + name + " should be a matrix, has shape " +
                                 shape_string(t.shape));
  std::vector<float> v = to_f32(t);
  float* out = map.replace_with_f32(name, {s[1], s[0]});
  for (int64_t r = 0; r < s[0]; ++r)
    for (int64_t c = 0; c < s[1]; ++c) out[c * s[0] + r] = v[r * s[1] + c];
  record_stored_transposed(map, name, t, {s[1], s[0]});
}

// Applies f to every element of `name` in float32 and gives it `shape`.
template <typename F>
void map_values(TensorMap& map, const std::string& name, std::vector<int64_t> shape, F f) {
  float* v = map.replace_with_f32(name, std::move(shape));
  int64_t n = map.at(name).numel();
  for (int64_t i = 0; i < n; ++i) v[i] = f(v[i]);
}

void reshape(TensorMap& map, const std::string& name, std::vector<int64_t> shape) {
  map_values(map, name, std::move(shape), [](float x) { return x; });
}

// Undoes rwkv.cpp's converter, layer by layer, according to the architecture the names reveal.
void canonicalize(TensorMap& map, int n_layer, int64_t n_embd) {
  const bool v7 = map.contains("blocks.0.att.x_rwkvag");
  const bool v6 = map.contains("blocks.0.att.time_maa_x");
  const bool v5 = !v6 && !v7 && map.contains("blocks.0.att.ln_x.weight");
  const int64_t C = n_embd;
  for (int i = 0; i < n_layer; ++i) {
    const std::string att = "blocks." + std::to_string(i) + ".att.";
    const std::string ffn = "blocks." + std::to_string(i) + ".ffn.";
    for (const std::string& name : std::vector<std::string>(map.names())) {
      if (name.rfind(att + "time_mix_", 0) == 0 || name.rfind(ffn + "time_mix_", 0) == 0 ||
          (name.rfind(att + "time_maa_", 0) == 0 && !ends_with(name, "_w1") &&
           !ends_with(name, "_w2")) ||
          name.rfind(ffn + "time_maa_", 0) == 0)
        reshape(map, name, {1, 1, C});
    }
    if (v7) {
      const Tensor& packed = map.at(att + "x_rwkvag");
      if (packed.numel() != 6 * C)
        throw Error(map.path + ": tensor " + att + "x_rwkvag should hold 6 x " + std::to_string(C) +
                    " values, has shape " + shape_string(packed.shape));
      std::vector<float> v = to_f32(packed);
      const char* parts[] = {"x_r", "x_w", "x_k", "x_v", "x_a", "x_g"};
      for (int b = 0; b < 6; ++b) {
        Tensor& t = map.add_owned(att + parts[b], DType::F32, {1, 1, C});
        std::memcpy(const_cast<uint8_t*>(t.data), v.data() + b * C, size_t(C) * 4);
      }
      map.erase(att + "x_rwkvag");
      for (const char* lora : {"w1", "w2", "a1", "a2", "v1", "v2", "g1", "g2"})
        if (map.contains(att + lora)) transpose_2d(map, att + lora);
      const Tensor& r_k = map.at(att + "r_k");
      std::vector<int64_t> s = squeezed(r_k.shape);
      // r_k is (H, N); a single head squeezes to (N,).
      reshape(map, att + "r_k", s.size() == 2 ? s : std::vector<int64_t>{1, r_k.numel()});
    } else if (v6) {
      transpose_2d(map, att + "time_maa_w1");
      transpose_2d(map, att + "time_decay_w1");
      transpose_2d(map, att + "time_decay_w2");
      // Stored (5, C, D) with the last two axes swapped; official is (5, D, C).
      const Tensor w2 = map.at(att + "time_maa_w2");
      if (w2.shape.size() != 3)
        throw Error(map.path + ": tensor " + att + "time_maa_w2 should have 3 axes, has shape " +
                    shape_string(w2.shape));
      const int64_t B = w2.shape[0], R = w2.shape[1], D = w2.shape[2];
      std::vector<float> v = to_f32(w2);
      float* out = map.replace_with_f32(att + "time_maa_w2", {B, D, R});
      for (int64_t b = 0; b < B; ++b)
        for (int64_t r = 0; r < R; ++r)
          for (int64_t d = 0; d < D; ++d) out[(b * D + d) * R + r] = v[(b * R + r) * D + d];
      record_stored_transposed(map, att + "time_maa_w2", w2, {B, D, R});
      reshape(map, att + "time_decay", {1, 1, C});
      reshape(map, att + "time_faaaa", squeezed(map.at(att + "time_faaaa").shape));
    } else if (v5) {
      auto log_neg_log = [](float w) { return std::log(-std::log(w)); };
      const Tensor& decay = map.at(att + "time_decay");
      map_values(map, att + "time_decay", squeezed(decay.shape), log_neg_log);
      if (map.contains(att + "time_first")) {
        map_values(map, att + "time_first", squeezed(map.at(att + "time_first").shape),
                   [](float u) { return std::log(u); });
      } else {
        reshape(map, att + "time_faaaa", squeezed(map.at(att + "time_faaaa").shape));
      }
    } else {
      map_values(map, att + "time_decay", {C}, [](float w) { return std::log(-w); });
      reshape(map, att + "time_first", {C});
    }
  }
  // rwkv.cpp's GroupNorm for v5.x uses eps 1e-5 (the official code uses 64e-5); files it wrote
  // reproduce its outputs, so that is their default.
  if (v5) map.metadata["ln_x_eps"] = "1e-5";
}

}  // namespace

TensorMap read_rwkv_cpp_bin(const Bytes& file, const std::string& path) {
  TensorMap map;
  map.path = path;
  Cursor cur{file.data, 0, path};
  if (uint32_t(cur.i32("magic")) != kMagic)
    throw Error(path + ": wrong magic: not an rwkv.cpp model file");
  const int32_t version = cur.i32("file version");
  if (version != 100 && version != 101)
    throw Error(path + ": unsupported rwkv.cpp file version " + std::to_string(version) +
                " (expected 100 or 101)");
  const int32_t n_vocab = cur.i32("n_vocab"), n_embd = cur.i32("n_embed"),
                n_layer = cur.i32("n_layer");
  const int32_t file_type = cur.i32("data type");
  if (n_vocab <= 0 || n_embd <= 0 || n_layer <= 0 || n_layer > 4096)
    throw Error(path + ": header has invalid dims n_vocab=" + std::to_string(n_vocab) +
                " n_embed=" + std::to_string(n_embd) + " n_layer=" + std::to_string(n_layer));
  if (!dtype_from_code(file_type))
    throw Error(path + ": header names unknown data type " + std::to_string(file_type));
  map.format = "rwkv.cpp bin v" + std::to_string(version);
  map.keep_alive(file);

  while (cur.pos < file.data.size()) {
    const int32_t n_dims = cur.i32("tensor dim count");
    const int32_t key_len = cur.i32("tensor name length");
    const int32_t code = cur.i32("tensor data type");
    if (n_dims < 0 || n_dims > 4)
      throw Error(path + ": tensor at byte " + std::to_string(cur.pos) + " has " +
                  std::to_string(n_dims) + " dims (at most 4 allowed)");
    if (key_len <= 0 || key_len > 1024)
      throw Error(path + ": tensor name length " + std::to_string(key_len) + " is invalid");
    std::vector<int64_t> shape(static_cast<size_t>(n_dims));
    uint64_t numel = 1;
    // ggml lists dims innermost first; PyTorch outermost first.
    for (int d = 0; d < n_dims; ++d) {
      int32_t dim = cur.i32("tensor shape");
      if (dim <= 0 || dim > (1 << 28))
        throw Error(path + ": tensor has invalid dimension " + std::to_string(dim));
      shape[size_t(n_dims - 1 - d)] = dim;
      numel *= uint64_t(dim);
      if (numel > (uint64_t(1) << 40)) throw Error(path + ": tensor has too many elements");
    }
    const uint8_t* key = cur.take(uint64_t(key_len), "tensor name");
    std::string name(reinterpret_cast<const char*>(key), size_t(key_len));
    auto dtype = dtype_from_code(code);
    if (!dtype)
      throw Error(path + ": tensor " + name + " has unknown data type " + std::to_string(code));
    const int64_t cols = shape.empty() ? 1 : shape.back();
    if (is_quantized(*dtype) && cols % 32 != 0)
      throw Error(path + ": tensor " + name + " is " + std::string(dtype_name(*dtype)) +
                  " but its rows of " + std::to_string(cols) + " are not whole blocks of 32");
    if (version == 100 && is_quantized(*dtype)) {
      const uint64_t bytes = numel / 32 * uint64_t(legacy_block_bytes(*dtype));
      const uint8_t* src = cur.take(bytes, "tensor " + name);
      Tensor& t = map.add_owned(name, DType::F32, shape);
      dequantize_legacy(*dtype, src, int64_t(numel), reinterpret_cast<float*>(const_cast<uint8_t*>(t.data)));
      continue;
    }
    Tensor t;
    t.dtype = *dtype;
    t.shape = std::move(shape);
    t.nbytes = *dtype_bytes(*dtype, numel);
    t.data = cur.take(t.nbytes, "tensor " + name);
    map.add(name, std::move(t));
  }

  if (map.size() == 0) throw Error(path + ": truncated file: no tensors after the header");
  const Tensor& emb = map.at("emb.weight");
  if (emb.shape != std::vector<int64_t>{n_vocab, n_embd})
    throw Error(path + ": tensor emb.weight has shape " + shape_string(emb.shape) +
                " but the header says n_vocab=" + std::to_string(n_vocab) +
                " n_embed=" + std::to_string(n_embd));
  if (!map.contains("blocks." + std::to_string(n_layer - 1) + ".ln1.weight") ||
      map.contains("blocks." + std::to_string(n_layer) + ".ln1.weight"))
    throw Error(path + ": the file's layers do not match the header's n_layer=" +
                std::to_string(n_layer));
  canonicalize(map, n_layer, n_embd);
  return map;
}

}  // namespace rwkv
