// AdamW with RWKV-LM's parameter groups and learning-rate schedule.
// Groups (RWKV-LM configure_optimizers): att.w0 (RWKV-7) or att.time_decay (RWKV-6)
// learn at 2x the rate; matrices named *.weight get weight decay; everything else (vectors,
// mixes, decays, LoRA matrices) gets none.
#pragma once

#include <cstdint>
#include <vector>

#include "train/params.h"

namespace rwkv::train {

struct AdamWConfig {
  float lr = 1e-3f;        // peak learning rate
  float lr_final = 1e-5f;  // at the last step
  int64_t warmup = 0;      // steps of linear warm-up from lr/100
  int64_t steps = 1;       // total; cosine decay from lr to lr_final after warm-up
  float beta1 = 0.9f, beta2 = 0.99f, eps = 1e-8f;
  float weight_decay = 0.0f;
  float grad_clip = 1.0f;  // on the global gradient norm; 0 = off
};

class AdamW {
 public:
  // `trainable[i]` says whether tensor i of `params` is updated at all (fine-tuning modes).
  AdamW(const ParamSet& params, const AdamWConfig& config, std::vector<bool> trainable = {});

  float lr_at(int64_t step) const;  // step counts from 0
  // One update of `values` (laid out like the ParamSet) with `grad` (clipped here); returns the
  // gradient's global norm before clipping. `step` counts from 0.
  double step(float* values, const float* grad, int64_t step);

  // The moments, for checkpoints.
  std::vector<float> m, v;

 private:
  struct Group {
    size_t offset, numel;
    float lr_scale, weight_decay;
  };
  AdamWConfig config_;
  std::vector<Group> groups_;
};

}  // namespace rwkv::train
