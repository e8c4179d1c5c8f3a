// The trainable tensors of a model as one flat float32 buffer: each tensor keeps its official
// checkpoint name and shape, in file order, at a fixed offset. Gradients and optimiser moments
// use the same layout, so they are plain vectors of the same size.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "io/tensor_map.h"

namespace rwkv::train {

struct ParamInfo {
  std::string name;
  std::vector<int64_t> shape;
  size_t offset = 0;
  size_t numel = 0;
};

class ParamSet {
 public:
  // Every tensor of `map` upcast to float32, in file order.
  static ParamSet from_map(const TensorMap& map);
  // Appends a zero-filled tensor.
  void add(const std::string& name, std::vector<int64_t> shape);

  const std::vector<ParamInfo>& infos() const { return infos_; }
  const ParamInfo& info(const std::string& name) const;  // throws rwkv::Error naming it
  bool contains(const std::string& name) const;
  size_t size() const { return data.size(); }
  float* get(const std::string& name) { return data.data() + info(name).offset; }
  const float* get(const std::string& name) const { return data.data() + info(name).offset; }

  // A map of F32 tensors viewing `values` (laid out like this set; must outlive the map).
  TensorMap view(const std::vector<float>& values, const std::string& path = "") const;

  std::vector<float> data;

 private:
  std::vector<ParamInfo> infos_;
};

// The architecture a set of official names describes: "7" (blocks.0.att.r_k), "6"
// (blocks.0.att.time_maa_w1), else throws rwkv::Error (training supports RWKV-6 and -7).
std::string detect_train_arch(const ParamSet& params);

}  // namespace rwkv::train
