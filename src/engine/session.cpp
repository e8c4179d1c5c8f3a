#include "rwkv/session.h"

#include <algorithm>
#include <chrono>

namespace rwkv {

namespace {
double now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}
}  // namespace

Session::Session(const Model& model, const Tokenizer& tokenizer, EvalOptions eval)
    : model_(model), tokenizer_(tokenizer), eval_(eval), state_(model) {}

void Session::set_state(const State& state) {
  if (&state.model() != &model_) throw Error("session: the state belongs to another model");
  state_ = state;
  logits_.clear();
}

void Session::restore(const Snapshot& snapshot) {
  set_state(snapshot.state);
  logits_ = snapshot.logits;
}

void Session::reset() {
  state_.reset();
  logits_.clear();
}

int Session::feed(std::span<const int> tokens,
                  const std::function<void(size_t, size_t)>& on_progress) {
  if (tokens.empty()) return 0;
  const double start = now();
  logits_.resize(size_t(model_.info().n_vocab));
  // Pieces of a few chunks keep the progress fine-grained without slowing the prefill.
  const size_t piece = on_progress ? size_t(std::max<int64_t>(256, eval_.chunk * 4)) : tokens.size();
  for (size_t done = 0; done < tokens.size();) {
    const size_t n = std::min(piece, tokens.size() - done);
    model_.forward_seq(tokens.subspan(done, n), state_.data(), logits_, false, scratch_, eval_);
    done += n;
    if (on_progress) on_progress(done, tokens.size());
  }
  feed_seconds_ += now() - start;
  tokens_fed_ += int64_t(tokens.size());
  return int(tokens.size());
}

int Session::feed_text(std::string_view text) { return feed(tokenizer_.encode(text)); }

GenerateResult Session::generate(Sampler& sampler, const GenerateOptions& options,
                                 const std::function<bool(int, std::string_view)>& on_text) {
  if (logits_.empty()) throw Error("generate: nothing has been fed yet (empty prompt)");
  GenerateResult result;
  result.finish_reason = "length";
  const double start = now();
  Utf8Stream utf8;
  StopMatcher stops(options.stop_strings);
  for (int i = 0; i < options.max_tokens; ++i) {
    const int id = sampler.sample_valid(logits_, tokenizer_.vocab_size());
    const bool stop_token =
        std::count(options.stop_tokens.begin(), options.stop_tokens.end(), id) ||
        (options.stop_at_special && tokenizer_.is_special(id));
    if (stop_token) {
      result.finish_reason = "stop_token";
      break;
    }
    const int one[1] = {id};
    feed(one);
    ++result.tokens;
    const std::string text = stops.push(utf8.push(tokenizer_.token_bytes(id)));
    if (!on_text(id, text)) {
      result.finish_reason = "cancelled";
      break;
    }
    if (stops.stopped()) {
      result.finish_reason = "stop_string";
      break;
    }
  }
  if (!stops.stopped()) {
    const std::string rest = stops.push(utf8.flush()) + stops.flush();
    if (!rest.empty()) on_text(-1, rest);
  }
  result.seconds = now() - start;
  return result;
}

}  // namespace rwkv
