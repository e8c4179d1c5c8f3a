// A conversation with a model: its state, the logits after the last token fed, and the generate
// loop. Feeding text processes only the new tokens (the history lives in the state), in
// sequence mode. Used by `rwkv generate`, `rwkv chat` and a server alike.
#pragma once

#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "rwkv/model.h"
#include "rwkv/sampler.h"
#include "rwkv/state.h"
#include "rwkv/tokenizer.h"

namespace rwkv {

struct GenerateOptions {
  int max_tokens = 200;
  // Generation ends, without emitting it, at one of these tokens or at a special token of the
  // tokenizer (end of text), unless stop_at_special is false.
  std::vector<int> stop_tokens;
  bool stop_at_special = true;
  // Generation ends where one of these strings appears in the text (never emitted).
  std::vector<std::string> stop_strings;
};

struct GenerateResult {
  int tokens = 0;               // tokens sampled and fed to the model
  std::string finish_reason;    // "length", "stop_token", "stop_string" or "cancelled"
  double seconds = 0;
};

class Session {
 public:
  Session(const Model& model, const Tokenizer& tokenizer, EvalOptions eval = {});

  const Model& model() const { return model_; }
  const Tokenizer& tokenizer() const { return tokenizer_; }
  State& state() { return state_; }
  // Replaces the state (e.g. one loaded from a file); the logits are unknown until fed.
  void set_state(const State& state);
  void reset();

  // The state and logits at one point of the conversation, to return to later (e.g. to answer
  // again from the state before an answer). Copies: the session keeps running independently.
  struct Snapshot {
    State state;
    std::vector<float> logits;
  };
  Snapshot snapshot() const { return {state_, logits_}; }
  void restore(const Snapshot& snapshot);

  // Feeds tokens / text from the current state; returns the number of tokens fed. With
  // `on_progress`, long inputs go in pieces (same result) and it is told the tokens done so far.
  int feed(std::span<const int> tokens,
           const std::function<void(size_t done, size_t total)>& on_progress = {});
  int feed_text(std::string_view text);
  // Logits after the last token fed (empty before the first).
  std::span<const float> logits() const { return logits_; }

  // Samples up to max_tokens tokens, feeding each back. `on_text(id, text)` gets every token with
  // the text it completes (possibly empty: half a UTF-8 character, or text held back while it
  // may be the start of a stop string); returning false cancels. Needs logits (feed first).
  GenerateResult generate(Sampler& sampler, const GenerateOptions& options,
                          const std::function<bool(int id, std::string_view text)>& on_text);

  // Tokens fed since construction or reset, and the seconds spent feeding them.
  int64_t tokens_fed() const { return tokens_fed_; }
  double feed_seconds() const { return feed_seconds_; }

 private:
  const Model& model_;
  const Tokenizer& tokenizer_;
  EvalOptions eval_;
  State state_;
  Scratch scratch_;
  std::vector<float> logits_;
  int64_t tokens_fed_ = 0;
  double feed_seconds_ = 0;
};

}  // namespace rwkv
