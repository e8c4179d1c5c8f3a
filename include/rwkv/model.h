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

#include "rwkv/aligned.h"
#include "rwkv/error.h"
#include "rwkv/thread_pool.h"

namespace rwkv {

struct LoadOptions {
  // Architecture to assume instead of detecting it: "4", "5.0", "5.1", "5.2", "6" or "7".
  std::string version;
  // GroupNorm (`ln_x`) epsilon of RWKV-5/6/7. Default: the file writer's convention
  // (64e-5 as in the official code; 1e-5 for rwkv.cpp `.bin` files of RWKV-5.x).
  std::optional<float> ln_x_eps;
  // For weights stored in ggml blocks (Q8_0, Q5_x, Q4_x) or I8: round each matrix product's input
  // to int8 per 32 values, as ggml and rwkv.cpp do, and multiply with integer dot products (AVX-512
  // VNNI or AVX2). Faster generation; results move by the activation rounding
  // (docs/BENCHMARKS.md has the KL divergence it adds). Off: weights are decoded exactly.
  bool int8_activations = false;
  // Where int8_activations keeps the matrices it repacks for the AVX-512 VNNI kernel (one file
  // per model, built at its first such load and read into huge pages at later ones, so loading
  // stays fast). Empty: $RWKV_CACHE_DIR, else
  // $XDG_CACHE_HOME/rwkv, else ~/.cache/rwkv. "none": repack in memory at every load.
  std::string repack_cache_dir;
  // Map the repack cache instead of reading it into huge pages: loads skip zeroing and copying
  // the memory (at 1.6B 0.03-0.07 s instead of 0.1-0.4 s, or 1-3 s on a VM that must first back
  // fresh memory), but generation is slower: 2-7% where the kernel maps the file by 2 MiB pages
  // (file systems with large folios: ext4 on Linux 6.16+, XFS), 5-12% by 4 KiB pages.
  bool map_repack_cache = false;
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
  float ln_x_eps = 0;               // 0 for RWKV-4
  bool int8_activations = false;    // LoadOptions::int8_activations
  std::string repack_cache;         // the repack cache file (LoadOptions::repack_cache_dir), or ""
  bool map_repack_cache = false;    // LoadOptions::map_repack_cache
  // "cached" (read from repack_cache), "mapped" (mapped from it), "built" (at this load) or ""
  std::string repacked;
  uint64_t repack_huge_bytes = 0;   // "mapped": how much of the cache is mapped by 2 MiB pages
  uint64_t file_huge_bytes = 0;     // how much of the model file's mapping is by 2 MiB pages
  std::map<std::string, int> lora;  // LoRA ranks by name, e.g. "time_decay" (v6), "w" (v7)
  int64_t n_params = 0;
  // Identifies the weights (names, shapes, dtypes and sampled bytes of every tensor); state
  // files record it so a state is not loaded into another model.
  uint64_t fingerprint = 0;
  std::vector<TensorInfo> tensors;    // file order
  std::vector<std::string> warnings;  // e.g. tensors the model does not use
};

// Reusable buffers for the forward passes; keeps the per-token path free of allocations.
// Each slot is an independent region (the driver and the layers use different slots), aligned
// to a cache line (rwkv/aligned.h).
class Scratch {
 public:
  float* get(size_t n, int slot = 0) {
    AlignedVector<float>& buf = bufs_[slot];
    if (buf.size() < n) buf.resize(n);
    return buf.data();
  }

 private:
  AlignedVector<float> bufs_[2];
};

// One sequence of a batch: its tokens, its state (updated in place) and where its logits go:
// n_vocab floats for the last token, or tokens.size() x n_vocab with all_logits.
struct Sequence {
  std::span<const int> tokens;
  std::span<float> state;
  std::span<float> logits;
  bool all_logits = false;
};

struct EvalOptions {
  // Tokens of one sequence processed together per step. Bounds memory (it does not grow with
  // the sequence length) and does not change results.
  int64_t chunk = 64;
  // Threads for the matrix products; nullptr runs everything on the calling thread.
  ThreadPool* pool = nullptr;
};

class Model {
 public:
  // Reads a `.pth`, `.safetensors` or rwkv.cpp `.bin` file. Throws rwkv::Error on bad input.
  static std::unique_ptr<Model> load(const std::string& path, const LoadOptions& options = {});
  // The small byte-level RWKV-7 built into the library (trained with `rwkv train`, see README):
  // what the CLI runs when no model file is given. Throws rwkv::Error in a build without it.
  static std::unique_ptr<Model> load_default(const LoadOptions& options = {});
  virtual ~Model() = default;

  const ModelInfo& info() const { return info_; }
  // Number of floats in a state; the layout is documented per version in docs/ARCHITECTURE.md.
  virtual size_t state_size() const = 0;
  // Writes the initial state (zeros, and -1e30 for RWKV-4's running maximum).
  virtual void init_state(std::span<float> state) const = 0;
  // Feeds B independent sequences of any lengths (>= 1 token each) in one call: projections run
  // as matrix products over all their tokens, each sequence keeps its own state. Throws
  // rwkv::Error on a token outside the vocabulary or buffers of the wrong size (before any
  // state is changed).
  virtual void forward_batch(std::span<const Sequence> batch, Scratch& scratch,
                             const EvalOptions& options = {}) const = 0;
  // One sequence: the state after `tokens`, and the logits of the last token (n_vocab floats)
  // or of every token (tokens.size() x n_vocab) with all_logits.
  void forward_seq(std::span<const int> tokens, std::span<float> state, std::span<float> logits,
                   bool all_logits, Scratch& scratch, const EvalOptions& options = {}) const {
    const Sequence seq{tokens, state, logits, all_logits};
    forward_batch({&seq, 1}, scratch, options);
  }
  // One token (RNN mode).
  void forward(int token, std::span<float> state, std::span<float> logits, Scratch& scratch,
               const EvalOptions& options = {}) const {
    forward_seq({&token, 1}, state, logits, false, scratch, options);
  }
  void forward(int token, std::span<float> state, std::span<float> logits) const {
    Scratch scratch;
    forward(token, state, logits, scratch);
  }

 protected:
  ModelInfo info_;
};

}  // namespace rwkv
