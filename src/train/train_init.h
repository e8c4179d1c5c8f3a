// Initial weights for training from scratch, as BlinkDL/RWKV-LM initialises each version
// (RWKV-v7/train_temp for RWKV-7, RWKV-v5's x060 model for RWKV-6): zero output projections and
// LoRA down-matrices, orthogonal matrices elsewhere, and the per-layer / per-channel profiles
// of the mixes, decays and biases. Names, shapes and order are those of `rwkv init`.
#pragma once

#include <cstdint>
#include <string>

#include "train/params.h"

namespace rwkv::train {

struct TrainInitOptions {
  std::string arch;  // "v7" / "7" or "v6" / "6"
  int64_t n_embd = 0, n_layer = 0, n_vocab = 0, head_size = 64;
  uint64_t seed = 0;
};

// Same options, same weights. Throws rwkv::Error on impossible dimensions.
ParamSet init_for_training(const TrainInitOptions& options);

}  // namespace rwkv::train
