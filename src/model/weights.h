// Building typed weights from the canonical tensor map: fetch by official name, check the shape,
// and keep track of which tensors the model used so the rest can be reported.
#pragma once

#include <functional>
#include <memory>
#include <set>
#include <span>
#include <string>
#include <vector>

#include "core/weight_memory.h"
#include "io/repack_cache.h"
#include "io/tensor_map.h"
#include "rwkv/model.h"
#include "rwkv/thread_pool.h"

namespace rwkv {

class WeightLoader {
 public:
  // info.int8_activations: matrices in ggml blocks are marked for kernels::linear()'s int8 path;
  // info.repack_cache: where matrices repacked for that path are cached.
  // The map is the loader's to consume: finish() releases tensors the model reads elsewhere.
  WeightLoader(TensorMap& map, const ModelInfo& info);

  bool has(const std::string& name) const { return map_.contains(name); }
  // A tensor used in place (any dtype), checked against `shape` ignoring unit axes.
  Tensor tensor(const std::string& name, const std::vector<int64_t>& shape);
  // A Linear layer's weight (kernels::linear()), as tensor(). Matrices in ggml blocks are marked
  // for the int8 path when asked for, and where that kernel reads repacked rows
  // (kernels::pack_int8_groups) they are packed here, or read from the repack cache by finish(),
  // into huge pages (core/weight_memory.h), or mapped from it (ModelInfo::map_repack_cache); the
  // model file's pages are dropped, so the resident size does not double.
  Tensor matrix(const std::string& name, const std::vector<int64_t>& shape);
  // A LoRA matrix for kernels::matmul() (x @ W), as tensor(), stored transposed where
  // kernels::transpose_for_matmul() can: a copy, filled by finish() (all of them at once, on
  // every core), after which the file's pages are dropped; or, where the file holds it
  // transposed already (TensorMap::stored_transposed()), those bytes in place.
  Tensor lora(const std::string& name, const std::vector<int64_t>& shape);
  // A stack of `parts` LoRA matrices (RWKV-6's time_maa_w2), each as lora() gives it.
  std::vector<Tensor> loras(const std::string& name, const std::vector<int64_t>& shape, int parts);
  // After the last matrix() and lora(): reads what the repack cache holds, transposes the LoRAs,
  // writes what was packed to the repack cache (when one is set and anything was packed), and
  // records in `info` how the repacked weights were got. Returns what the model must keep alive.
  std::vector<std::shared_ptr<const void>> finish(ModelInfo& info);
  // A float32 copy, checked against `shape` ignoring unit axes.
  std::vector<float> f32(const std::string& name, const std::vector<int64_t>& shape);
  // Marks a tensor the reference ignores as known.
  void ignore(const std::string& name) { used_.insert(name); }
  // Names present in the file that no builder asked for.
  std::vector<std::string> unused() const;
  const TensorMap& map() const { return map_; }

 private:
  // The tensor `name`, its shape checked, marked used; an I8 tensor with its own copy of the
  // row scales.
  Tensor checked(const std::string& name, const std::vector<int64_t>& shape);
  Tensor transposed_copy(const Tensor& t);
  // t's values in float32, its bytes copied out of the file without mapping them
  // (TensorMap::copy_out).
  std::vector<float> copied_f32(Tensor t) const;

  TensorMap& map_;
  bool int8_activations_;
  std::string cache_path_;
  RepackSource source_;
  RepackCache cache_;
  std::string cache_problem_;  // why an existing cache file was not used
  std::set<std::string> used_;
  bool map_cache_;                   // use cached_ in place instead of copying them
  uint64_t huge_bytes_ = 0;          // of the cache's mapping, by 2 MiB pages (map_by_huge_pages)
  std::vector<RepackEntry> cached_;  // found in the cache (their copies, or in place)
  std::vector<RepackEntry> packed_;  // packed at this load
  std::vector<Tensor> in_place_;     // matrices used from the model file
  std::vector<Tensor> read_from_file_;  // all a model reads from the file after loading
  struct PendingTranspose {
    Tensor from;
    uint8_t* to;      // nullptr where only `groups` is kept
    uint8_t* groups;  // the transposed rows packed for the VNNI int8 kernel, or nullptr
  };
  std::vector<PendingTranspose> transposes_;  // for finish()
  struct PendingRead {
    const uint8_t* from;  // in the cache's mapping
    uint8_t* to;
    uint64_t bytes;
  };
  std::vector<PendingRead> cache_reads_;  // for finish()
  std::vector<Tensor> drop_after_transposing_;
  std::vector<std::string> released_;  // read from their stored_transposed() bytes
  WeightArena arena_;  // the packed, cached and transposed copies, I8 row scales, decoded LoRAs
};

// The float32 weight and bias of one normalisation (`ln1`, `ln2`, `att.ln_x`, ...).
struct Norm {
  std::vector<float> weight, bias;

  void load(WeightLoader& w, const std::string& name, int64_t n);  // name.weight, name.bias
  // LayerNorm (eps 1e-5) of each of T rows of n values (rows split across `pool`).
  void layer_norm(const float* x, int64_t T, int64_t n, float* y, ThreadPool* pool = nullptr) const;
  // x += delta, then y = LayerNorm(x): a block's residual and the norm after it.
  void add_then_layer_norm(float* x, const float* delta, int64_t T, int64_t n, float* y,
                           ThreadPool* pool) const;
  // GroupNorm of each of T rows: H groups (heads) of N channels.
  void group_norm(const float* x, int64_t T, int64_t H, int64_t N, float eps, float* y) const;
};

// The part every version shares: the embedding with its ln0, and the output norm and head.
struct EmbeddingHead {
  Tensor emb;  // (n_vocab, n_embd)
  Norm ln0, ln_out;
  Tensor head;  // (n_vocab, n_embd)

  void load(WeightLoader& w, int64_t n_vocab, int64_t n_embd);
  // x = ln0(emb[token]). Throws rwkv::Error for a token outside the vocabulary.
  void embed(int token, float* x) const;
};

// The RWKV-4/5/6 feed-forward after its token-shift mix: sigmoid(Wr xr) * (Wv relu(Wk xk)^2).
struct ChannelMix {
  Tensor key;         // (F, C)
  Tensor value;       // (C, F)
  Tensor receptance;  // (C, C)

  void load(WeightLoader& w, const std::string& prefix, int64_t n_embd, int64_t ffn_dim);
  // x += the block's output for T rows; `tmp` holds T * (2 * n_embd + ffn_dim) floats.
  void add_to(const float* xk, const float* xr, int64_t T, float* tmp, float* x,
              ThreadPool* pool) const;
};

constexpr float kLayerNormEps = 1e-5f;

// fn(t0, t1) over the token rows [0, T), spread over `pool` when there are several rows: for the
// elementwise work between a layer's products (the same arithmetic per element whichever thread
// runs it, so the results do not depend on the split).
void for_token_rows(int64_t T, ThreadPool* pool, const std::function<void(int64_t, int64_t)>& fn);

// The RWKV-4/5 token-shift mix: out[t][c] = x[t][c] * mix[c] + prev[t][c] * (1 - mix[c]) for
// each target, over T rows of C.
struct MixTarget {
  const std::vector<float>& mix;
  float* out;
};
void time_mix(const float* x, const float* prev, int64_t T, int64_t C,
              std::span<const MixTarget> targets, ThreadPool* pool);

std::string layer_prefix(int layer);  // "blocks.<layer>."

}  // namespace rwkv
