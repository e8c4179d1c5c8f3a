// Mean KL divergence, top-1 agreement and perplexity of two models over one token sequence.
// Both models run the text chunk by chunk in sequence mode (all logits of a chunk at once),
// carrying their states; the statistics are summed in position order, so the result does not
// depend on the chunk size or the thread count.
#include "engine/kl.h"

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

namespace rwkv {

namespace {

struct LogSoftmax {
  double lse;   // log-sum-exp of the row
  int64_t top;  // argmax (the first on ties)
};

LogSoftmax log_softmax(const float* x, int64_t n) {
  int64_t top = 0;
  for (int64_t i = 1; i < n; ++i)
    if (x[i] > x[top]) top = i;
  const double max = x[top];
  double sum = 0;
  for (int64_t i = 0; i < n; ++i) sum += std::exp(double(x[i]) - max);
  return {max + std::log(sum), top};
}

}  // namespace

KlPosition compare_position(const float* la, const float* lb, int64_t n, int target) {
  const LogSoftmax a = log_softmax(la, n), b = log_softmax(lb, n);
  // KL(P_A || P_B) = sum_i p_a(i) * (log p_a(i) - log p_b(i)).
  double kl = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double lpa = double(la[i]) - a.lse, lpb = double(lb[i]) - b.lse;
    kl += std::exp(lpa) * (lpa - lpb);
  }
  KlPosition p;
  p.kl = std::max(0.0, kl);  // rounding can leave -1e-17 for identical rows
  p.same_top1 = a.top == b.top;
  p.nll_a = a.lse - double(la[target]);
  p.nll_b = b.lse - double(lb[target]);
  return p;
}

KlResult compare_models(const Model& a, const Model& b, std::span<const int> tokens,
                        const KlOptions& o) {
  const int64_t V = a.info().n_vocab;
  if (b.info().n_vocab != V)
    throw Error("the models have different vocabularies: " + a.info().path + " has " +
                std::to_string(V) + " tokens, " + b.info().path + " has " +
                std::to_string(b.info().n_vocab));
  if (tokens.size() < 2) throw Error("need at least 2 tokens to compare predictions");
  for (int t : tokens)
    if (t < 0 || t >= V)
      throw Error("token " + std::to_string(t) + " is outside the vocabulary [0, " +
                  std::to_string(V) + ")");

  // Every token but the last is fed; the logits after token i predict token i + 1.
  const int64_t n = int64_t(tokens.size()) - 1;
  const int64_t chunk = std::max<int64_t>(1, std::min(o.chunk, n));
  std::vector<float> state_a(a.state_size()), state_b(b.state_size());
  a.init_state(state_a);
  b.init_state(state_b);
  std::vector<float> logits_a(size_t(chunk * V)), logits_b(size_t(chunk * V));
  std::vector<KlPosition> pos(static_cast<size_t>(chunk));
  Scratch scratch;
  const EvalOptions eval{.chunk = 64, .pool = o.pool};

  KlResult r;
  r.n_tokens = int64_t(tokens.size());
  r.n_positions = n;
  int64_t agree = 0;
  for (int64_t begin = 0; begin < n; begin += chunk) {
    const int64_t len = std::min(chunk, n - begin);
    const auto piece = tokens.subspan(size_t(begin), size_t(len));
    a.forward_seq(piece, state_a, {logits_a.data(), size_t(len * V)}, true, scratch, eval);
    b.forward_seq(piece, state_b, {logits_b.data(), size_t(len * V)}, true, scratch, eval);
    auto one = [&](int64_t t) {
      pos[size_t(t)] = compare_position(logits_a.data() + t * V, logits_b.data() + t * V, V,
                                        tokens[size_t(begin + t + 1)]);
    };
    if (o.pool)
      o.pool->parallel_for(len, one);
    else
      for (int64_t t = 0; t < len; ++t) one(t);
    for (int64_t t = 0; t < len; ++t) {
      const KlPosition& p = pos[size_t(t)];
      r.mean_kl += p.kl;
      r.max_kl = std::max(r.max_kl, p.kl);
      agree += p.same_top1;
      r.nll_a += p.nll_a;
      r.nll_b += p.nll_b;
    }
    if (o.progress) o.progress(begin + len, n);
  }
  r.mean_kl /= double(n);
  r.top1_agreement = double(agree) / double(n);
  r.nll_a /= double(n);
  r.nll_b /= double(n);
  r.ppl_a = std::exp(r.nll_a);
  r.ppl_b = std::exp(r.nll_b);
  return r;
}

}  // namespace rwkv
