#include "model/registry.h"

#include <algorithm>
#include <cstdlib>
#include <filesystem>

#include "core/hash.h"
#include "io/repack_cache.h"
#include "kernels/kernels.h"
#include "model/weights.h"

namespace rwkv {

namespace {

struct VersionEntry {
  char major;
  ModelBuilder build;
};

constexpr VersionEntry kVersions[] = {
    {'4', build_v4},
    {'5', build_v5},
    {'6', build_v6},
    {'7', build_v7},
};

int count_layers(const TensorMap& map) {
  int n = 0;
  while (map.contains(layer_prefix(n) + "ln1.weight")) ++n;
  return n;
}

float parse_eps(const std::string& path, const std::string& text) {
  char* end = nullptr;
  float v = std::strtof(text.c_str(), &end);
  if (end == text.c_str() || *end != '\0' || !(v > 0))
    throw Error(path + ": invalid ln_x_eps metadata '" + text + "'");
  return v;
}

// Hashes what identifies a tensor without reading all of it: name, dtype, shape and up to 64
// bytes at its start, middle and end (a few pages of a multi-GB file).
uint64_t fingerprint_tensor(const TensorMap& map, const std::string& name, const Tensor& t,
                            uint64_t h) {
  h = fnv1a64(name.data(), name.size(), h);
  h = fnv1a64(&t.dtype, sizeof t.dtype, h);
  h = fnv1a64(t.shape.data(), t.shape.size() * sizeof(int64_t), h);
  const uint64_t n = std::min<uint64_t>(64, t.nbytes);
  uint8_t bytes[64];
  for (uint64_t at : {uint64_t(0), (t.nbytes - n) / 2, t.nbytes - n}) {
    map.copy_out(t.data + at, size_t(n), bytes);
    h = fnv1a64(bytes, n, h);
  }
  return h;
}

}  // namespace

std::string detect_version(const TensorMap& map) {
  const std::string att = "blocks.0.att.";
  if (map.contains(att + "r_k")) return "7.0";
  if (map.contains(att + "time_maa_x")) return "6.0";
  if (map.contains(att + "ln_x.weight")) {
    const Tensor* decay = map.find(att + "time_decay");
    if (decay && decay->shape.size() > 1 && decay->shape[1] > 1) return "5.2";
    return map.contains(att + "gate.weight") ? "5.1" : "5.0";
  }
  return "4";
}

std::unique_ptr<Model> build_model(std::shared_ptr<TensorMap> map, const LoadOptions& options) {
  ModelInfo info;
  info.path = map->path;
  info.format = map->format;
  info.version = options.version.empty() ? detect_version(*map) : options.version;
  if (info.version == "6" || info.version == "7") info.version += ".0";
  if (info.version == "5") info.version = detect_version(*map);
  const char major = info.version[0];
  const bool known = info.version == "4" || info.version == "5.0" || info.version == "5.1" ||
                     info.version == "5.2" || info.version == "6.0" || info.version == "7.0";
  if (!known)
    throw Error("unknown RWKV version '" + options.version +
                "' (expected 4, 5.0, 5.1, 5.2, 6 or 7)");

  const Tensor& emb = map->at("emb.weight");
  if (emb.shape.size() != 2)
    throw Error(map->path + ": tensor emb.weight should be a matrix, has shape " +
                shape_string(emb.shape));
  info.n_vocab = int(emb.shape[0]);
  info.n_embd = int(emb.shape[1]);
  info.n_layer = count_layers(*map);
  if (info.n_layer == 0) throw Error(map->path + ": missing tensor blocks.0.ln1.weight");
  if (major != '4') {
    auto it = map->metadata.find("ln_x_eps");
    info.ln_x_eps = options.ln_x_eps            ? *options.ln_x_eps
                    : it != map->metadata.end() ? parse_eps(map->path, it->second)
                                                : 64e-5f;
  }
  info.int8_activations = options.int8_activations;
  info.map_repack_cache = options.map_repack_cache;
  if (options.int8_activations && !kernels::has_fast_int8())
    info.warnings.push_back(
        "int8 activations run the scalar reference kernel here (no AVX2, or RWKV_KERNELS=scalar); "
        "this is much slower than the default exact decoding");
  std::error_code not_a_file;
  if (options.int8_activations && kernels::packs_int8_groups() &&
      options.repack_cache_dir != "none" &&
      std::filesystem::is_regular_file(map->path, not_a_file)) {
    const std::string dir =
        options.repack_cache_dir.empty() ? default_repack_cache_dir() : options.repack_cache_dir;
    if (!dir.empty()) info.repack_cache = repack_cache_file(dir, map->path);
  }
  info.fingerprint = fnv1a64(info.version.data(), info.version.size());
  for (const std::string& name : map->names()) {
    const Tensor& t = map->at(name);
    info.tensors.push_back({name, std::string(dtype_name(t.dtype)), t.shape});
    info.n_params += t.numel();
    info.fingerprint = fingerprint_tensor(*map, name, t, info.fingerprint);
  }
  for (const VersionEntry& entry : kVersions)
    if (entry.major == major) return entry.build(std::move(map), std::move(info));
  throw Error("no builder for RWKV version " + info.version);
}

std::unique_ptr<Model> Model::load(const std::string& path, const LoadOptions& options) {
  return build_model(std::make_shared<TensorMap>(read_tensor_map(path)), options);
}

}  // namespace rwkv
