// The part of training every RWKV version shares: embedding with ln0, output norm, head and
// cross-entropy, and the chunk driver. The driver runs the sequence forward chunk by chunk,
// keeping only the state at each chunk boundary, then walks the chunks backwards: it recomputes
// one chunk's activations from its saved start state and back-propagates through it, the
// gradient of the state flowing from each chunk into the one before (RWKV's time-parallel
// training: memory bounded by the chunk, results independent of it).
#pragma once

#include <vector>

#include "train/train_model.h"

namespace rwkv::train {

class ChunkedModel : public TrainModel {
 public:
  double forward_backward(const float* params, const Batch& batch, int64_t chunk,
                          const float* state0, float* grad, float* dstate0,
                          ThreadPool* pool) override;
  void forward_logits(const float* params, const int* tokens, int64_t B, int64_t T,
                      int64_t chunk, float* logits, ThreadPool* pool) override;

 protected:
  explicit ChunkedModel(const ParamSet& params);
  // Offset of `name` in the parameter buffer after checking its shape (unit axes ignored).
  size_t offset(const std::string& name, const std::vector<int64_t>& shape) const;

  // Runs every layer over one chunk of B x Tc rows (sequence-major): x holds ln0(emb) on entry
  // and the final residual on exit; `state` (B x state_size) advances. Keeps what
  // layers_bwd needs.
  virtual void layers_fwd(const float* P, float* x, int64_t B, int64_t Tc, float* state,
                          ThreadPool* pool) = 0;
  // Back-propagates the last layers_fwd: dx holds the gradient of the final residual on entry
  // and of the chunk's input on exit; dstate (B x state_size) the gradient of the state at the
  // chunk's end on entry and at its start on exit. Parameter gradients add to G.
  virtual void layers_bwd(const float* P, float* G, float* dx, int64_t B, int64_t Tc,
                          float* dstate, ThreadPool* pool) = 0;

  const ParamSet& layout_;

 private:
  void check_tokens(const int* tokens, int64_t n) const;
  // x = ln0(emb[tokens]) for B x Tc rows starting at position t0 of each sequence.
  void embed(const float* P, const int* tokens, int64_t T, int64_t t0, int64_t B, int64_t Tc,
             float* x, ThreadPool* pool);
  // Logits of the final residual x (rows x V) into `logits`; keeps ln_out's input statistics.
  void head_fwd(const float* P, const float* x, int64_t rows, float* logits, ThreadPool* pool);

  size_t emb_, ln0_w_, ln0_b_, ln_out_w_, ln_out_b_, head_;
  std::vector<float> x_, e_, e_mean_, e_rstd_, xo_norm_, xo_mean_, xo_rstd_, logits_, dx_, dn_;
  std::vector<int> rows_tokens_;
};

}  // namespace rwkv::train
