#include "rwkv/sampler.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "rwkv/error.h"

namespace rwkv {

Sampler::Sampler(SamplerParams params, int n_vocab)
    : n_vocab_(n_vocab), counts_(size_t(n_vocab), 0.0f) {
  set_params(params);
  rng_.seed(params_.seed ? *params_.seed : std::random_device{}());
}

void Sampler::set_params(const SamplerParams& p) {
  auto bad = [](const std::string& what) { throw Error("sampler: " + what); };
  if (!(p.temperature >= 0)) bad("temperature must be >= 0");
  if (p.top_k < 0) bad("top_k must be >= 0");
  if (!(p.top_p > 0 && p.top_p <= 1)) bad("top_p must be in (0, 1]");
  if (!(p.min_p >= 0 && p.min_p < 1)) bad("min_p must be in [0, 1)");
  if (!(p.repetition_penalty > 0)) bad("repetition_penalty must be > 0");
  if (!(p.penalty_decay >= 0 && p.penalty_decay <= 1)) bad("penalty_decay must be in [0, 1]");
  for (const auto& [t, b] : p.logit_bias)
    if (t < 0 || t >= n_vocab_) bad("logit_bias token " + std::to_string(t) + " out of range");
  for (int t : p.banned_tokens)
    if (t < 0 || t >= n_vocab_) bad("banned token " + std::to_string(t) + " out of range");
  params_ = p;
}

void Sampler::reset() {
  for (int t : seen_) counts_[size_t(t)] = 0;
  seen_.clear();
}

void Sampler::accept(int token) {
  if (token < 0 || token >= n_vocab_) return;
  for (int t : seen_) counts_[size_t(t)] *= params_.penalty_decay;
  if (counts_[size_t(token)] == 0) seen_.push_back(token);
  counts_[size_t(token)] += 1;
}

void Sampler::apply_penalties(std::span<float> logits) const {
  for (const auto& [t, b] : params_.logit_bias) logits[size_t(t)] += b;
  for (int t : params_.banned_tokens) logits[size_t(t)] = -std::numeric_limits<float>::infinity();
  for (int t : seen_) {
    float& l = logits[size_t(t)];
    if (params_.repetition_penalty != 1.0f)
      l = l > 0 ? l / params_.repetition_penalty : l * params_.repetition_penalty;
    l -= params_.presence_penalty + params_.frequency_penalty * counts_[size_t(t)];
  }
}

std::vector<float> Sampler::distribution(std::span<float> logits) const {
  if (logits.size() != size_t(n_vocab_))
    throw Error("sampler: " + std::to_string(logits.size()) + " logits, expected " +
                std::to_string(n_vocab_));
  apply_penalties(logits);
  std::vector<float> p(logits.size(), 0.0f);
  const size_t best = size_t(std::max_element(logits.begin(), logits.end()) - logits.begin());
  if (params_.temperature == 0 || !std::isfinite(logits[best])) {
    p[best] = 1;
    return p;
  }
  // Softmax in double for the sums.
  double total = 0;
  for (size_t i = 0; i < p.size(); ++i) {
    p[i] = float(std::exp(double(logits[i]) - double(logits[best])));
    total += p[i];
  }
  for (float& v : p) v = float(v / total);
  std::vector<int> order(p.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](int a, int b) { return p[size_t(a)] > p[size_t(b)]; });
  size_t keep = p.size();
  if (params_.top_k > 0) keep = std::min(keep, size_t(params_.top_k));
  if (params_.top_p < 1) {
    double cum = 0;
    for (size_t i = 0; i < keep; ++i) {
      cum += p[size_t(order[i])];
      if (cum >= params_.top_p) {
        keep = i + 1;
        break;
      }
    }
  }
  if (params_.min_p > 0) {
    const float floor = params_.min_p * p[size_t(order[0])];
    while (keep > 1 && p[size_t(order[keep - 1])] < floor) --keep;
  }
  for (size_t i = keep; i < order.size(); ++i) p[size_t(order[i])] = 0;
  if (params_.temperature != 1) {
    for (float& v : p)
      if (v > 0) v = float(std::pow(double(v), 1.0 / params_.temperature));
  }
  total = 0;
  for (float v : p) total += v;
  for (float& v : p) v = float(v / total);
  return p;
}

int Sampler::sample_valid(std::span<const float> logits, int n_valid) {
  work_.assign(logits.begin(), logits.end());
  std::fill(work_.begin() + std::clamp<ptrdiff_t>(n_valid, 0, ptrdiff_t(work_.size())), work_.end(),
            -std::numeric_limits<float>::infinity());
  return sample(work_);
}

int Sampler::sample(std::span<float> logits) {
  const std::vector<float> p = distribution(logits);
  int token = 0;
  if (params_.temperature == 0) {
    token = int(std::max_element(p.begin(), p.end()) - p.begin());
  } else {
    double u = std::uniform_real_distribution<double>(0.0, 1.0)(rng_);
    token = -1;
    for (size_t i = 0; i < p.size(); ++i) {
      if (p[i] <= 0) continue;
      token = int(i);  // the last possible token absorbs rounding at the top end
      u -= p[i];
      if (u < 0) break;
    }
  }
  accept(token);
  return token;
}

std::string StopMatcher::push(std::string_view text) {
  if (stopped_) return "";
  pending_ += text;
  // A stop string inside the pending text ends everything from its start.
  size_t cut = std::string::npos;
  for (const std::string& s : stops_)
    if (!s.empty()) cut = std::min(cut, pending_.find(s));
  if (cut != std::string::npos) {
    stopped_ = true;
    std::string out = pending_.substr(0, cut);
    pending_.clear();
    return out;
  }
  // Hold back the longest tail that is a prefix of some stop string.
  size_t hold = 0;
  for (const std::string& s : stops_)
    for (size_t n = std::min(s.size() - (s.empty() ? 0 : 1), pending_.size()); n > hold; --n)
      if (pending_.compare(pending_.size() - n, n, s, 0, n) == 0) {
        hold = n;
        break;
      }
  std::string out = pending_.substr(0, pending_.size() - hold);
  pending_.erase(0, pending_.size() - hold);
  return out;
}

std::string StopMatcher::flush() {
  std::string out = stopped_ ? "" : pending_;
  pending_.clear();
  return out;
}

}  // namespace rwkv
