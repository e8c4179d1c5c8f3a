// Random-weight models of any size in the official checkpoint layout (`rwkv init`), so that
// benchmarks and quantization measurements can be reproduced without downloading a model.
// Names, shapes and order are those of BlinkDL's checkpoints; values follow the official
// initialisation formulas plus noise, so they look trained rather than freshly initialised
// (no zero matrices, decays and mixes spread over their usual ranges).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "core/dtype.h"
#include "io/tensor_map.h"
#include "rwkv/thread_pool.h"

namespace rwkv {

struct InitOptions {
  std::string arch;  // "4", "5" (the 5.2 layout), "6" or "7"; a leading "v" is accepted
  int64_t n_embd = 0;
  int64_t n_layer = 0;
  int64_t n_vocab = 0;
  int64_t head_size = 64;  // RWKV-5/6/7
  int64_t ffn_dim = 0;     // 0: the version's default (default_ffn_dim)
  uint64_t seed = 0;
  DType dtype = DType::F32;    // F32, F16 or BF16, for every tensor (as official releases)
  ThreadPool* pool = nullptr;  // nullptr: generate on the calling thread
  // Called on the calling thread as generation proceeds, with elements done and in total.
  std::function<void(uint64_t done, uint64_t total)> progress;
};

// The official FFN width: 4C for RWKV-4 and -7, 3.5C rounded down to a multiple of 32 for
// RWKV-5.2 and -6.
int64_t default_ffn_dim(const std::string& arch, int64_t n_embd);

// LoRA ranks of the official models for this width: RWKV-6 time_maa 32 and time_decay 64,
// both doubled at n_embd >= 4096 (the 7B and 14B); RWKV-7 w/a/v/g from the x070 training
// code's formulas (e.g. 64/64/32/128 at C = 768, 96/96/64/256 at C = 2048).
struct LoraRanks {
  int64_t mix = 0, decay = 0;          // RWKV-6
  int64_t w = 0, a = 0, v = 0, g = 0;  // RWKV-7
};
LoraRanks default_lora_ranks(const std::string& arch, int64_t n_embd);

// Generates the model. The result is the same for the same options whatever the thread
// count. Throws rwkv::Error on impossible dimensions. Buffers are owned by the returned map.
TensorMap init_model(const InitOptions& options);

}  // namespace rwkv
