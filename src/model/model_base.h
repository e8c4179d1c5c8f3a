// What every version shares: the batched, chunked forward driver. A version implements only
// run_layers() over the rows of one chunk; the driver embeds the tokens, splits long and many
// sequences into chunks of bounded size, and computes the logits that were asked for.
#pragma once

#include <algorithm>
#include <memory>
#include <span>

#include "io/tensor_map.h"
#include "model/weights.h"
#include "rwkv/model.h"

namespace rwkv {

// One sequence's rows [begin, begin + len) of a chunk, and that sequence's state.
struct Segment {
  int64_t begin;
  int64_t len;
  float* state;
};

class ModelBase : public Model {
 public:
  void forward_batch(std::span<const Sequence> batch, Scratch& scratch,
                     const EvalOptions& options) const final;

 protected:
  ModelBase(std::shared_ptr<TensorMap> map, ModelInfo info);
  // Runs every layer over the chunk: x (rows x C) holds ln0(emb[token]) on entry and the final
  // residual stream on exit; each segment's state advances by its rows. Scratch slot 1 is free.
  virtual void run_layers(float* x, int64_t rows, std::span<const Segment> segments,
                          Scratch& scratch, ThreadPool* pool) const = 0;
  // Keeps the weights the loader repacked (caching them), and reports every tensor no builder
  // asked for as a warning.
  void finish_loading(WeightLoader& w);

  std::shared_ptr<TensorMap> map_;
  std::vector<std::shared_ptr<const void>> repacked_;
  EmbeddingHead io_;
};

// RWKV-5, 6 and 7 keep per layer two token-shift rows and one H x N x N matrix per head, all
// starting at zero.
class MatrixStateModel : public ModelBase {
 public:
  size_t state_size() const override {
    const size_t C = size_t(info_.n_embd), N = size_t(info_.head_size);
    return size_t(info_.n_layer) * (2 * C + C * N);
  }
  void init_state(std::span<float> state) const override {
    std::fill(state.begin(), state.end(), 0.0f);
  }

 protected:
  using ModelBase::ModelBase;
};

// Token shift over a chunk: prev[t] is row t-1 of the same segment, or for a segment's first row
// the C floats saved at `state + offset`; then saves each segment's last row of x there.
void token_shift(const float* x, int64_t C, std::span<const Segment> segments, size_t offset,
                 float* prev);

}  // namespace rwkv
