// The training loop: batches sampled from a token stream, forward + backward, gradient
// all-reduce across processes, AdamW, atomic checkpoints and bit-exact resume. What is trained:
// the whole model, only the initial state (state tuning), or low-rank adapters on every
// matrix of the blocks (LoRA), the base weights staying unchanged in the last two.
#pragma once

#include <atomic>
#include <functional>
#include <string>

#include "train/data.h"
#include "train/optimizer.h"
#include "train/train_init.h"

namespace rwkv::train {

struct TrainerOptions {
  TrainInitOptions init;   // architecture and seed of a model trained from scratch
  std::string init_model;  // start from this model file instead (required for state/lora)
  std::string tune = "full";  // "full", "state" or "lora"
  int64_t lora_rank = 8;
  int64_t ctx_len = 512, chunk_len = 0, batch = 1;  // chunk_len 0: ctx_len
  AdamWConfig adam;
  uint64_t seed = 0;  // sampling of the batches
  std::string out;    // model (full), state file (state) or adapters (lora)
  std::string merge_out;  // lora: also write the base model with the adapters merged here
  int64_t save_every = 0;  // steps between checkpoints (out + ".ckpt"); 0: only at the end
  bool resume = false;     // continue from out + ".ckpt"
  int threads = 1;
  double l2wrap = 1e-4;  // RWKV-LM's L2Wrap coefficient (see TrainModel::set_l2wrap); 0: off
  // Data parallelism: this process's rank among `world`, and a sum over all processes (in
  // place); the global batch is split evenly between the ranks.
  int rank = 0, world = 1;
  std::function<void(double* values, size_t n)> all_reduce;
};

struct StepReport {
  int64_t step = 0;  // counting from 1
  double loss = 0, grad_norm = 0, lr = 0;
  double tokens_per_s = 0;
};

struct TrainResult {
  int64_t steps_done = 0;
  bool interrupted = false;
  double first_loss = 0, last_loss = 0;
};

// Trains on `data`. Calls `on_step` after every step; stops early (after writing a checkpoint)
// when `stop` becomes true. Throws rwkv::Error on bad options or data.
TrainResult train(const TrainerOptions& options, const TokenData& data,
                  const std::function<void(const StepReport&)>& on_step,
                  const std::atomic<bool>& stop);

// The path of the checkpoint beside `out`.
std::string checkpoint_path(const std::string& out);

}  // namespace rwkv::train
