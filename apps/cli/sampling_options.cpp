#include <fmt/format.h>

#include <sstream>

#include "cli.h"

namespace rwkv::cli {

void SamplingOptions::add_to(CLI::App& cmd) {
  cmd.add_option("-n,--max-tokens", max_tokens,
                 fmt::format("Tokens to generate at most (default {})", max_tokens))
      ->check(kNonNegative);
  cmd.add_option("--temperature", params.temperature,
                 fmt::format("0 = greedy (default {})", params.temperature))
      ->check(kNonNegative);
  cmd.add_option("--top-k", params.top_k, "Keep the K most likely tokens (default 0 = off)")
      ->check(kNonNegative);
  cmd.add_option("--top-p", params.top_p, fmt::format("Nucleus sampling (default {}, 1 = off)", params.top_p))
      ->check(CLI::Range(0.0f, 1.0f));
  cmd.add_option("--min-p", params.min_p, "Drop tokens below min-p x the top one (default 0)")
      ->check(CLI::Range(0.0f, 1.0f));
  cmd.add_option("--repetition-penalty", params.repetition_penalty, "CTRL-style (default 1 = off)")
      ->check(kPositive);
  cmd.add_option("--presence-penalty", params.presence_penalty, fmt::format("ChatRWKV alpha_presence (default {})", params.presence_penalty));
  cmd.add_option("--frequency-penalty", params.frequency_penalty,
                 fmt::format("ChatRWKV alpha_frequency (default {})", params.frequency_penalty));
  cmd.add_option("--penalty-decay", params.penalty_decay, fmt::format("ChatRWKV alpha_decay (default {})", params.penalty_decay))
      ->check(CLI::Range(0.0f, 1.0f));
  cmd.add_option("--seed", seed, "Random seed: the same seed gives the same tokens");
  cmd.add_option("--stop", params_stop, "Stop when this text appears (repeatable)");
  cmd.add_option("--stop-token", stop_tokens, "Stop at this token id (repeatable)");
  cmd.add_option("--ban", params.banned_tokens, "Never generate this token id (repeatable)");
  cmd.add_option("--logit-bias", bias_text, "ID:BIAS added to a token's logit (repeatable)");
}

SamplerParams SamplingOptions::sampler_params() const {
  SamplerParams p = params;
  if (seed) p.seed = *seed;
  for (const std::string& item : bias_text) {
    const size_t colon = item.find(':');
    try {
      size_t used = 0;
      if (colon == std::string::npos) throw std::invalid_argument("no colon");
      const int id = std::stoi(item.substr(0, colon), &used);
      if (used != colon) throw std::invalid_argument("id");
      p.logit_bias[id] = std::stof(item.substr(colon + 1));
    } catch (const std::exception&) {
      throw Error("--logit-bias: '" + item + "' is not ID:BIAS");
    }
  }
  return p;
}

GenerateOptions SamplingOptions::generate_options() const {
  GenerateOptions g;
  g.max_tokens = max_tokens;
  g.stop_tokens = stop_tokens;
  g.stop_strings = params_stop;
  return g;
}

}  // namespace rwkv::cli
