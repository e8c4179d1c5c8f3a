// Choosing the next token from logits, and deciding when generation stops. Reusable by the CLI
// and a server: one Sampler per sequence (it remembers what the sequence generated, for the
// penalties, and owns its random generator).
//
// Order of operations, following ChatRWKV's pipeline (rwkv pip package, PIPELINE_ARGS/
// sample_logits) where it has one:
//   1. logit_bias is added; banned tokens get -inf;
//   2. repetition_penalty (CTRL-style: positive logits of generated tokens divided by it,
//      negative ones multiplied);
//   3. logit[t] -= presence_penalty + frequency_penalty * count[t] for every generated t, where
//      count decays by penalty_decay before each new token is counted (ChatRWKV's
//      alpha_presence, alpha_frequency, alpha_decay);
//   4. temperature 0: the argmax (greedy); else softmax, then top_k, top_p (the smallest set of
//      most likely tokens whose probability reaches top_p) and min_p (drop tokens below min_p
//      times the top probability) on that distribution, then temperature (p^(1/T)), renormalise
//      and draw.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <random>
#include <span>
#include <string>
#include <vector>

namespace rwkv {

struct SamplerParams {
  float temperature = 1.0f;         // 0 = greedy
  int top_k = 0;                    // 0 = off
  float top_p = 0.85f;              // 1 = off
  float min_p = 0.0f;               // 0 = off
  float repetition_penalty = 1.0f;  // 1 = off
  float presence_penalty = 0.2f;    // ChatRWKV alpha_presence
  float frequency_penalty = 0.2f;   // ChatRWKV alpha_frequency
  float penalty_decay = 0.996f;     // ChatRWKV alpha_decay
  std::map<int, float> logit_bias;
  std::vector<int> banned_tokens;
  std::optional<uint64_t> seed;  // unset = nondeterministic
};

class Sampler {
 public:
  Sampler(SamplerParams params, int n_vocab);

  // Picks a token from `logits` (modified in place by the penalties and biases) and records it.
  int sample(std::span<float> logits);
  // Picks a token from a copy of `logits` (left as they are), never one of the ids from
  // `n_valid` on: a model's vocabulary may have rows with no token (World models have 65536
  // rows for 65530 tokens). Records it.
  int sample_valid(std::span<const float> logits, int n_valid);
  // Records a token chosen elsewhere (e.g. a forced one) for the penalties.
  void accept(int token);
  // Forgets what was generated (not the random generator's position).
  void reset();
  const SamplerParams& params() const { return params_; }
  void set_params(const SamplerParams& params);

  // The probabilities the sampler draws from for these logits, without drawing: for tests and
  // for servers reporting logprobs. Applies steps 1-4 but does not record anything.
  std::vector<float> distribution(std::span<float> logits) const;

 private:
  struct Kept {
    int token;
    float p;
  };
  struct Candidate {
    float e;  // exp(logit - top logit)
    int token;
  };
  // Buffers reused token after token (a vocabulary's worth each).
  struct Work {
    std::vector<float> logits;  // sample_valid's copy
    std::vector<float> e;       // exp(logit - top logit)
    std::vector<Candidate> ranked;
    std::vector<Kept> kept;
  };
  void apply_penalties(std::span<float> logits) const;
  // Steps 1-4: the tokens that may be drawn, in id order, with their probabilities (one token
  // with probability 1 for greedy).
  void choose(std::span<float> logits, Work& w) const;

  SamplerParams params_;
  int n_vocab_;
  std::vector<float> counts_;  // decayed occurrence counts
  std::vector<int> seen_;      // tokens with a count, for sparse updates
  Work work_;
  std::mt19937_64 rng_;
};

// Finds stop strings in streamed text, across token boundaries: push() returns the text that is
// safe to show now, holding back any tail that could still become a stop string.
class StopMatcher {
 public:
  explicit StopMatcher(std::vector<std::string> stops) : stops_(std::move(stops)) {}
  // Appends `text`; returns what can be emitted. After a stop string appears, stopped() is true
  // and nothing from the stop string on is ever emitted.
  std::string push(std::string_view text);
  // What is still held back (at the end of generation it is safe to emit).
  std::string flush();
  bool stopped() const { return stopped_; }

 private:
  std::vector<std::string> stops_;
  std::string pending_;
  bool stopped_ = false;
};

}  // namespace rwkv
