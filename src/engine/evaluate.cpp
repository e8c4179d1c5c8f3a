#include "engine/evaluate.h"

#include <algorithm>
#include <cmath>

#include "kernels/activations.h"
#include "rwkv/state.h"

namespace rwkv {

namespace {

// log softmax(row)[target], summed in double (each exp within ~1.5 ulp of float32's).
double log_prob(const float* row, int64_t n, int target) {
  const float top = row[kernels::argmax(row, n)];
  return double(row[target]) - double(top) - std::log(kernels::sum_exp(row, n, top));
}

}  // namespace

PerplexityResult perplexity(const Model& model, std::span<const int> tokens,
                            const EvalOptions& options,
                            const std::function<void(int64_t, int64_t)>& progress) {
  if (tokens.size() < 2) throw Error("perplexity needs at least 2 tokens");
  const int64_t V = model.info().n_vocab;
  const int64_t chunk = std::max<int64_t>(1, options.chunk);
  State state(model);
  Scratch scratch;
  std::vector<float> logits;
  double nll = 0;
  const int64_t n = int64_t(tokens.size());
  // Feed every token but the last; row i of a chunk predicts the token after it.
  for (int64_t begin = 0; begin < n - 1; begin += chunk) {
    const int64_t len = std::min(chunk, n - 1 - begin);
    logits.resize(size_t(len * V));
    model.forward_seq(tokens.subspan(size_t(begin), size_t(len)), state.data(), logits, true,
                      scratch, options);
    for (int64_t i = 0; i < len; ++i)
      nll -= log_prob(logits.data() + i * V, V, tokens[size_t(begin + i + 1)]);
    if (progress) progress(begin + len, n - 1);
  }
  PerplexityResult r;
  r.predictions = n - 1;
  r.mean_nll = nll / double(n - 1);
  r.perplexity = std::exp(r.mean_nll);
  return r;
}

LambadaDoc split_lambada(const std::string& text) {
  const size_t space = text.rfind(' ');
  if (space == std::string::npos) return {"", " " + text};
  return {text.substr(0, space), " " + text.substr(space + 1)};
}

LambadaScore score_lambada(std::span<const float> logits, int64_t n_vocab, size_t src_len,
                           std::span<const int> dst) {
  LambadaScore s;
  s.correct = true;
  for (size_t i = 0; i < dst.size(); ++i) {
    const float* row = logits.data() + (src_len - 1 + i) * size_t(n_vocab);
    s.logprob += log_prob(row, n_vocab, dst[i]);
    if (kernels::argmax(row, n_vocab) != dst[i]) s.correct = false;
  }
  return s;
}

LambadaResult lambada(const Model& model, const Tokenizer& tokenizer,
                      const std::vector<std::string>& texts, const EvalOptions& options,
                      int batch, const std::function<void(int64_t, int64_t)>& progress) {
  const int64_t V = model.info().n_vocab;
  LambadaResult r;
  double logprob_sum = 0;
  int64_t correct = 0;
  Scratch scratch;
  for (size_t first = 0; first < texts.size(); first += size_t(batch)) {
    const size_t count = std::min(texts.size() - first, size_t(batch));
    std::vector<std::vector<int>> ids(count), dst(count);
    std::vector<size_t> src_len(count);
    std::vector<std::vector<float>> states(count), logits(count);
    std::vector<Sequence> seqs;
    for (size_t d = 0; d < count; ++d) {
      const LambadaDoc doc = split_lambada(texts[first + d]);
      // The reference starts every document with token 0 (end of text).
      ids[d] = {0};
      const std::vector<int> ctx = tokenizer.encode(doc.context);
      ids[d].insert(ids[d].end(), ctx.begin(), ctx.end());
      src_len[d] = ids[d].size();
      dst[d] = tokenizer.encode(doc.target);
      ids[d].insert(ids[d].end(), dst[d].begin(), dst[d].end());
      states[d].resize(model.state_size());
      model.init_state(states[d]);
      logits[d].resize(ids[d].size() * size_t(V));
      seqs.push_back({ids[d], states[d], logits[d], true});
    }
    model.forward_batch(seqs, scratch, options);
    for (size_t d = 0; d < count; ++d) {
      const LambadaScore s = score_lambada(logits[d], V, src_len[d], dst[d]);
      logprob_sum += s.logprob;
      correct += s.correct;
    }
    r.docs += int64_t(count);
    if (progress) progress(r.docs, int64_t(texts.size()));
  }
  if (r.docs > 0) {
    r.accuracy = double(correct) / double(r.docs);
    r.perplexity = std::exp(-logprob_sum / double(r.docs));
  }
  return r;
}

}  // namespace rwkv
