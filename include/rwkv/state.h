// A model's recurrent state as a first-class object: everything a sequence remembers, in one
// flat float array (layout per version in README.md), that can be copied, reset, and saved to
// or loaded from a file that records which model it belongs to.
#pragma once

#include <span>
#include <string>
#include <vector>

#include "rwkv/model.h"

namespace rwkv {

class State {
 public:
  // The model's initial state. The model must outlive the state.
  explicit State(const Model& model);

  const Model& model() const { return *model_; }
  std::span<float> data() { return data_; }
  std::span<const float> data() const { return data_; }
  size_t size() const { return data_.size(); }
  // Back to the model's initial state.
  void reset();
  // Copies are independent clones.
  State(const State&) = default;
  State& operator=(const State&) = default;

  // Writes the state file atomically (header with dims, checksum and model fingerprint).
  void save(const std::string& path) const;
  // Reads a state file written for `model`. Throws rwkv::Error naming the file when it is
  // truncated, corrupt (checksum), of other dims or version, or (unless `any_model`) written by
  // another model with the same dims.
  static State load(const Model& model, const std::string& path, bool any_model = false);

 private:
  const Model* model_;
  std::vector<float> data_;
};

}  // namespace rwkv
