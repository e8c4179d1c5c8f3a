// Public C++ API: load an RWKV checkpoint of any supported version and format, run it as an RNN.
//
//   auto model = rwkv::Model::load("RWKV-x070-World-0.1B.pth");
//   std::vector<float> state(model->state_size()), logits(model->info().n_vocab);
//   model->init_state(state);
//   for (int token : tokens) model->forward(token, state, logits);
//
// A model is immutable after loading and may be shared between threads; the state and the
// scratch belong to the caller, one per sequence.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "rwkv/error.h"

namespace rwkv {

struct LoadOptions {
  // Architecture to assume instead of detecting it: "4", "5.0", "5.1", "5.2", "6" or "7".
  std::string version;
  // GroupNorm (`ln_x`) epsilon of RWKV-5/6/7. Default: the file writer's convention
  // (64e-5 as in the official code; 1e-5 for rwkv.cpp `.bin` files of RWKV-5.x).
  std::optional<float> ln_x_eps;
};

struct TensorInfo {
  std::string name;
  std::string dtype;
  std::vector<int64_t> shape;
};

struct ModelInfo {
  std::string path;
  std::string format;   // "pth", "safetensors", "rwkv.cpp bin v101", ...
  std::string version;  // "4", "5.0", "5.1", "5.2", "6.0" or "7.0" (the official code's numbering)
  int n_layer = 0;
  int n_embd = 0;
  int n_vocab = 0;
  int n_head = 0;     // 0 for RWKV-4
  int head_size = 0;  // 0 for RWKV-4
  int ffn_dim = 0;
  float ln_x_eps = 0;                // 0 for RWKV-4
  std::map<std::string, int> lora;   // LoRA ranks by name, e.g. "time_decay" (v6), "w" (v7)
  int64_t n_params = 0;
  std::vector<TensorInfo> tensors;   // file order
  std::vector<std::string> warnings; // e.g. tensors the model does not use
};

// Reusable buffers for forward(); keeps the per-token path free of allocations.
class Scratch {
 public:
  float* get(size_t n) {
    if (buf_.size() < n) buf_.resize(n);
    return buf_.data();
  }

 private:
  std::vector<float> buf_;
};

class Model {
 public:
  // Reads a `.pth`, `.safetensors` or rwkv.cpp `.bin` file. Throws rwkv::Error on bad input.
  static std::unique_ptr<Model> load(const std::string& path, const LoadOptions& options = {});
  virtual ~Model() = default;

  const ModelInfo& info() const { return info_; }
  // Number of floats in a state; the layout is documented per version in docs/ARCHITECTURE.md.
  virtual size_t state_size() const = 0;
  // Writes the initial state (zeros, and -1e30 for RWKV-4's running maximum).
  virtual void init_state(std::span<float> state) const = 0;
  // Feeds one token: updates `state` in place and writes n_vocab logits.
  virtual void forward(int token, std::span<float> state, std::span<float> logits,
                       Scratch& scratch) const = 0;
  void forward(int token, std::span<float> state, std::span<float> logits) const {
    Scratch scratch;
    forward(token, state, logits, scratch);
  }

 protected:
  // Throws rwkv::Error unless the spans have state_size() and n_vocab floats.
  void check_buffers(std::span<const float> state, std::span<const float> logits) const;

  ModelInfo info_;
};

}  // namespace rwkv
