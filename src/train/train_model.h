// A model in training form: forward and hand-written backward passes over batches of equal-length
// sequences, split into chunks with the recurrent state carried from chunk to chunk and its
// gradient carried back (so results do not depend on the chunk length, and memory grows with
// the chunk, not with the sequence). Parameters and gradients are flat buffers laid out like
// the ParamSet the model was created from (official names and shapes).
#pragma once

#include <cstdint>
#include <memory>

#include "rwkv/thread_pool.h"
#include "train/params.h"

namespace rwkv::train {

// B sequences of T positions, row-major (B x T): the tokens fed and the tokens to predict.
struct Batch {
  const int* inputs = nullptr;
  const int* targets = nullptr;
  int64_t B = 0;
  int64_t T = 0;
};

class TrainModel {
 public:
  // Builds the version the names of `params` describe (RWKV-7 or -6); checks every tensor's
  // shape. Keeps only the layout, not the values. Throws rwkv::Error.
  static std::unique_ptr<TrainModel> create(const ParamSet& params);
  virtual ~TrainModel() = default;

  int64_t n_vocab() const { return V_; }
  int64_t n_embd() const { return C_; }
  // Floats in one sequence's state, laid out as the inference engine's state.
  virtual size_t state_size() const = 0;

  // Mean next-token cross-entropy over all B*T positions; adds its gradient to `grad`
  // (params.size() floats). `state0` (state_size floats, or nullptr for zeros) is every
  // sequence's initial state; `dstate0`, if not null, accumulates the loss's gradient with
  // respect to it. Throws rwkv::Error on a token outside the vocabulary.
  virtual double forward_backward(const float* params, const Batch& batch, int64_t chunk,
                                  const float* state0, float* grad, float* dstate0,
                                  ThreadPool* pool) = 0;
  // RWKV-LM's L2Wrap: forward_backward adds coef / (B*T) times the largest logit of every
  // position to that logit's gradient (the gradient of coef / (2BT) times the sum of the
  // squared largest logits, a term the returned loss leaves out), keeping the logits from
  // drifting upwards. 0 (the default) turns it off; RWKV-LM trains with 1e-4.
  void set_l2wrap(float coef) { l2wrap_ = coef; }

  // The logits at every position (B*T x n_vocab), from zero initial states.
  virtual void forward_logits(const float* params, const int* tokens, int64_t B, int64_t T,
                              int64_t chunk, float* logits, ThreadPool* pool) = 0;

 protected:
  int64_t V_ = 0, C_ = 0;
  float l2wrap_ = 0;
};

std::unique_ptr<TrainModel> create_v7(const ParamSet& params);
std::unique_ptr<TrainModel> create_v6(const ParamSet& params);

}  // namespace rwkv::train
