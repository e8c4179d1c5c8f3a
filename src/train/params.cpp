#include "train/params.h"

#include <algorithm>

#include "rwkv/error.h"

namespace rwkv::train {

ParamSet ParamSet::from_map(const TensorMap& map) {
  ParamSet set;
  for (const std::string& name : map.names()) set.add(name, map.at(name).shape);
  for (const ParamInfo& p : set.infos_) {
    const std::vector<float> f = to_f32(map.at(p.name));
    std::copy(f.begin(), f.end(), set.data.begin() + std::ptrdiff_t(p.offset));
  }
  return set;
}

void ParamSet::add(const std::string& name, std::vector<int64_t> shape) {
  if (contains(name)) throw Error("duplicate tensor " + name);
  ParamInfo p;
  p.name = name;
  p.numel = 1;
  for (int64_t d : shape) p.numel *= size_t(d);
  p.shape = std::move(shape);
  p.offset = data.size();
  data.resize(data.size() + p.numel, 0.0f);
  infos_.push_back(std::move(p));
}

const ParamInfo& ParamSet::info(const std::string& name) const {
  for (const ParamInfo& p : infos_)
    if (p.name == name) return p;
  throw Error("model has no tensor " + name);
}

bool ParamSet::contains(const std::string& name) const {
  return std::any_of(infos_.begin(), infos_.end(),
                     [&](const ParamInfo& p) { return p.name == name; });
}

TensorMap ParamSet::view(const std::vector<float>& values, const std::string& path) const {
  if (values.size() != data.size()) throw Error("buffer does not match the parameter layout");
  TensorMap map;
  map.path = path;
  map.format = "safetensors";
  for (const ParamInfo& p : infos_) {
    Tensor t;
    t.dtype = DType::F32;
    t.shape = p.shape;
    t.data = reinterpret_cast<const uint8_t*>(values.data() + p.offset);
    t.nbytes = p.numel * 4;
    map.add(p.name, std::move(t));
  }
  return map;
}

std::string detect_train_arch(const ParamSet& params) {
  if (params.contains("blocks.0.att.r_k")) return "7";
  if (params.contains("blocks.0.att.time_maa_w1")) return "6";
  throw Error("training supports RWKV-7 and RWKV-6 models only (no blocks.0.att.r_k or "
              "blocks.0.att.time_maa_w1 tensor)");
}

}  // namespace rwkv::train
