// Language-model evaluation: perplexity over a token stream, and LAMBADA last-word accuracy as
// the RWKV papers report it (BlinkDL/ChatRWKV's LAMBADA benchmark).
#pragma once

#include <functional>
#include <span>
#include <string>
#include <vector>

#include "rwkv/model.h"
#include "rwkv/tokenizer.h"

namespace rwkv {

struct PerplexityResult {
  int64_t predictions = 0;  // tokens predicted: all but the first
  double mean_nll = 0;      // nats per token
  double perplexity = 0;    // exp(mean_nll)
};

// Feeds `tokens` from the initial state in chunks of options.chunk (memory stays chunk x
// n_vocab floats) and scores each token after the first. `progress(done, total)` after chunks.
PerplexityResult perplexity(const Model& model, std::span<const int> tokens,
                            const EvalOptions& options,
                            const std::function<void(int64_t, int64_t)>& progress = {});

// One LAMBADA document split as the reference does: the context is the text up to its last
// space, the target the space and the last word.
struct LambadaDoc {
  std::string context;
  std::string target;
};
LambadaDoc split_lambada(const std::string& text);

struct LambadaScore {
  bool correct = false;  // every target token is the argmax after its prefix
  double logprob = 0;    // sum of the target tokens' log-probabilities
};
// Scores one document from its logits: `logits` holds the rows after each of
// src.size() + dst.size() tokens, where src = [0] + context tokens and dst = target tokens.
LambadaScore score_lambada(std::span<const float> logits, int64_t n_vocab, size_t src_len,
                           std::span<const int> dst);

struct LambadaResult {
  int64_t docs = 0;
  double accuracy = 0;    // fraction of documents whose whole target is predicted greedily
  double perplexity = 0;  // exp(-sum of target logprobs / docs), per document as the reference
};
// Evaluates documents `batch` at a time in one batched forward call each.
LambadaResult lambada(const Model& model, const Tokenizer& tokenizer,
                      const std::vector<std::string>& texts, const EvalOptions& options,
                      int batch = 16, const std::function<void(int64_t, int64_t)>& progress = {});

}  // namespace rwkv
