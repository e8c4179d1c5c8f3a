#include "rwkv/sampler.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "kernels/activations.h"
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

void Sampler::choose(std::span<float> logits, Work& w) const {
  if (logits.size() != size_t(n_vocab_))
    throw Error("sampler: " + std::to_string(logits.size()) + " logits, expected " +
                std::to_string(n_vocab_));
  apply_penalties(logits);
  w.kept.clear();
  const size_t n = logits.size();
  const size_t best = size_t(kernels::argmax(logits.data(), int64_t(n)));
  if (params_.temperature == 0 || !std::isfinite(logits[best])) {
    w.kept.push_back({int(best), 1.0f});
    return;
  }
  // e = exp(logit - top), the unnormalised softmax (vectorised exp). Tokens more than 87 nats
  // below the top (banned ones among them) get 0: float32 cannot tell them from 0 after
  // normalising, and exp_of saturates there instead of reaching 0.
  const float top = logits[best];
  w.e.resize(n);
  const double total = kernels::softmax_numerators_of(logits.data(), int64_t(n), top, w.e.data());
  const float floor = params_.min_p * w.e[best];
  if (params_.top_k == 0 && params_.top_p >= 1) {
    // min_p alone drops exactly the tokens below its floor: no order needed.
    for (size_t i = 0; i < n; ++i)
      if (w.e[i] > 0 && w.e[i] >= floor) w.kept.push_back({int(i), w.e[i]});
  } else {
    // top_k and top_p keep a prefix of the tokens in order of probability, found by selection
    // (linear time) instead of sorting the vocabulary. First only the tokens within 7 nats of
    // the top (a trained model's likely few), then within 14, then all: each pass over the
    // vocabulary is cheaper than selecting among all of it.
    const auto normalised = [&](float e) { return double(float(double(e) / total)); };
    const auto gather = [&](float threshold) {
      w.ranked.clear();
      double mass = 0;
      for (size_t i = 0; i < n; ++i)
        if (w.e[i] > 0 && w.e[i] >= threshold) {
          w.ranked.push_back({w.e[i], int(i)});
          mass += normalised(w.e[i]);
        }
      return mass;
    };
    const size_t k = params_.top_k > 0 ? size_t(params_.top_k) : n;
    for (float threshold : {0x1p-10f, 0x1p-20f, 0.0f}) {
      const double mass = gather(threshold);
      if (w.ranked.size() >= k || (params_.top_p < 1 && mass >= params_.top_p)) break;
    }
    // Most likely first, ties by id: the order of a stable sort of the ids by probability.
    const auto more_likely = [](const Candidate& a, const Candidate& b) {
      return a.e > b.e || (a.e == b.e && a.token < b.token);
    };
    if (w.ranked.size() > k) {
      std::nth_element(w.ranked.begin(), w.ranked.begin() + ptrdiff_t(k), w.ranked.end(),
                       more_likely);
      w.ranked.resize(k);
    }
    // top_p: ranked[0, lo) are known to be kept (their mass `below`), and the smallest prefix
    // reaching top_p ends in (lo, hi]. Halve the range by partitioning until it is small, then
    // sort what is left of it and count on.
    size_t keep = w.ranked.size();
    if (params_.top_p < 1) {
      size_t lo = 0, hi = w.ranked.size();
      double below = 0;
      constexpr size_t kSorted = 256;
      while (hi - lo > kSorted) {
        const size_t mid = lo + (hi - lo) / 2;
        std::nth_element(w.ranked.begin() + ptrdiff_t(lo), w.ranked.begin() + ptrdiff_t(mid),
                         w.ranked.begin() + ptrdiff_t(hi), more_likely);
        double half = 0;
        for (size_t i = lo; i < mid; ++i) half += normalised(w.ranked[i].e);
        if (below + half >= params_.top_p) {
          hi = mid;
        } else {
          below += half;
          lo = mid;
        }
      }
      std::sort(w.ranked.begin() + ptrdiff_t(lo), w.ranked.begin() + ptrdiff_t(hi), more_likely);
      keep = hi;
      for (size_t i = lo; i < hi; ++i) {
        below += normalised(w.ranked[i].e);
        if (below >= params_.top_p) {
          keep = i + 1;
          break;
        }
      }
    }
    // The kept tokens are those at least as likely as the least likely of ranked[0, keep),
    // collected in id order; min_p drops those below its floor (never the top one).
    Candidate last = w.ranked[0];
    for (size_t i = 1; i < keep; ++i)
      if (more_likely(last, w.ranked[i])) last = w.ranked[i];
    for (size_t i = 0; i < n; ++i)
      if (w.e[i] > 0 && w.e[i] >= floor && !more_likely(last, {w.e[i], int(i)}))
        w.kept.push_back({int(i), w.e[i]});
  }
  // Temperature after filtering: p^(1/T) renormalised is exp((logit - top) / T) renormalised.
  if (params_.temperature != 1) {
    w.e.resize(w.kept.size());
    for (size_t i = 0; i < w.kept.size(); ++i)
      w.e[i] = (logits[size_t(w.kept[i].token)] - top) / params_.temperature;
    kernels::exp_of(w.e.data(), w.e.data(), int64_t(w.kept.size()));
    for (size_t i = 0; i < w.kept.size(); ++i) w.kept[i].p = w.e[i];
  }
  double kept_total = 0;
  for (const Kept& t : w.kept) kept_total += double(t.p);
  for (Kept& t : w.kept) t.p = float(double(t.p) / kept_total);
}

std::vector<float> Sampler::distribution(std::span<float> logits) const {
  Work w;
  choose(logits, w);
  std::vector<float> p(logits.size(), 0.0f);
  for (const Kept& t : w.kept) p[size_t(t.token)] = t.p;
  return p;
}

int Sampler::sample_valid(std::span<const float> logits, int n_valid) {
  work_.logits.assign(logits.begin(), logits.end());
  std::fill(work_.logits.begin() + std::clamp<ptrdiff_t>(n_valid, 0, ptrdiff_t(logits.size())),
            work_.logits.end(), -std::numeric_limits<float>::infinity());
  return sample(work_.logits);
}

int Sampler::sample(std::span<float> logits) {
  choose(logits, work_);
  int token = work_.kept.front().token;
  if (params_.temperature != 0) {
    // The kept tokens in id order, each taking its share of [0, 1); the last absorbs rounding.
    double u = std::uniform_real_distribution<double>(0.0, 1.0)(rng_);
    for (const Kept& t : work_.kept) {
      token = t.token;
      u -= t.p;
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
