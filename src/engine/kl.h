// How far apart two models' next-token distributions are over a text (`rwkv kl`): mean
// KL(P_A || P_B), top-1 agreement and each model's perplexity. The standard measure of what
// quantization costs: A is the full-precision model, B the quantized one.
#pragma once

#include <cstdint>
#include <functional>
#include <span>

#include "rwkv/model.h"

namespace rwkv {

struct KlOptions {
  // Tokens per forward call; each model's logits for a chunk (chunk x n_vocab floats) are held
  // at once. Does not change the results.
  int64_t chunk = 512;
  ThreadPool* pool = nullptr;  // for the forward passes and the per-position statistics
  // Called on the calling thread after each chunk with positions done and in total.
  std::function<void(int64_t done, int64_t total)> progress;
};

// One position: the two distributions after the same prefix.
struct KlPosition {
  double kl = 0;                // KL(P_A || P_B) in nats
  bool same_top1 = false;       // argmax of A == argmax of B (the first on ties)
  double nll_a = 0, nll_b = 0;  // -log P(target)
};

// Log-softmax of both logit rows in double precision, then the statistics above. `target` is
// the token that actually follows.
KlPosition compare_position(const float* logits_a, const float* logits_b, int64_t n_vocab,
                            int target);

struct KlResult {
  int64_t n_tokens = 0;     // tokens of the text
  int64_t n_positions = 0;  // predictions compared: every token but the last predicts the next
  double mean_kl = 0;       // nats
  double max_kl = 0;
  double top1_agreement = 0;    // fraction of positions
  double nll_a = 0, nll_b = 0;  // mean negative log-likelihood of the text, nats per token
  double ppl_a = 0, ppl_b = 0;  // exp(nll)
};

// Feeds `tokens` (at least 2) to both models from their initial states, in chunks that carry
// the state, and compares the distributions at every position. Throws rwkv::Error when the
// vocabularies differ or a token is outside them.
KlResult compare_models(const Model& a, const Model& b, std::span<const int> tokens,
                        const KlOptions& options = {});

}  // namespace rwkv
