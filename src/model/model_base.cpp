#include "model/model_base.h"

#include <algorithm>
#include <cstring>

#include "kernels/kernels.h"

namespace rwkv {

ModelBase::ModelBase(std::shared_ptr<TensorMap> map, ModelInfo info) : map_(std::move(map)) {
  info_ = std::move(info);
}

void ModelBase::finish_loading(WeightLoader& w) {
  repacked_ = w.finish(info_);
  for (const std::string& name : w.unused()) info_.warnings.push_back("unused tensor " + name);
}

void token_shift(const float* x, int64_t C, std::span<const Segment> segments, size_t offset,
                 float* prev) {
  for (const Segment& s : segments) {
    float* saved = s.state + offset;
    std::memcpy(prev + s.begin * C, saved, size_t(C) * 4);
    if (s.len > 1)
      std::memcpy(prev + (s.begin + 1) * C, x + s.begin * C, size_t((s.len - 1) * C) * 4);
    std::memcpy(saved, x + (s.begin + s.len - 1) * C, size_t(C) * 4);
  }
}

void ModelBase::forward_batch(std::span<const Sequence> batch, Scratch& scratch,
                              const EvalOptions& options) const {
  const int64_t C = info_.n_embd, V = info_.n_vocab;
  const int64_t chunk = std::max<int64_t>(1, options.chunk);
  // Check everything before touching any state, so a bad request changes nothing.
  for (size_t b = 0; b < batch.size(); ++b) {
    const Sequence& s = batch[b];
    const std::string which = batch.size() > 1 ? "sequence " + std::to_string(b) + ": " : "";
    if (s.tokens.empty()) throw Error(which + "no tokens to feed");
    if (s.state.size() != state_size())
      throw Error(which + "state has " + std::to_string(s.state.size()) +
                  " floats, the model needs " + std::to_string(state_size()));
    const size_t want = size_t(V) * (s.all_logits ? s.tokens.size() : 1);
    if (s.logits.size() != want)
      throw Error(which + "logits buffer has " + std::to_string(s.logits.size()) +
                  " floats, needs " + std::to_string(want));
    for (int t : s.tokens)
      if (t < 0 || t >= V)
        throw Error(which + "token " + std::to_string(t) + " is outside the vocabulary [0, " +
                    std::to_string(V) + ")");
  }

  std::vector<size_t> done(batch.size(), 0);
  std::vector<Segment> segments;
  for (;;) {
    // Take the next `chunk` tokens of every unfinished sequence.
    segments.clear();
    int64_t rows = 0;
    for (size_t b = 0; b < batch.size(); ++b) {
      const int64_t left = int64_t(batch[b].tokens.size() - done[b]);
      if (left == 0) continue;
      const int64_t n = std::min(left, chunk);
      segments.push_back({rows, n, batch[b].state.data()});
      rows += n;
    }
    if (rows == 0) break;

    float* x = scratch.get(size_t(rows * 2 * C), 0);
    float* normed = x + rows * C;
    size_t seg = 0;
    for (size_t b = 0; b < batch.size(); ++b) {
      if (done[b] == batch[b].tokens.size()) continue;
      for (int64_t i = 0; i < segments[seg].len; ++i)
        io_.embed(batch[b].tokens[done[b] + size_t(i)], x + (segments[seg].begin + i) * C);
      ++seg;
    }
    run_layers(x, rows, segments, scratch, options.pool);

    // Logits: every row of an all_logits sequence, else only the row of its last token.
    seg = 0;
    for (size_t b = 0; b < batch.size(); ++b) {
      const Sequence& s = batch[b];
      if (done[b] == s.tokens.size()) continue;
      const Segment& g = segments[seg++];
      const bool finishes = done[b] + size_t(g.len) == s.tokens.size();
      const int64_t first = s.all_logits ? 0 : (finishes ? g.len - 1 : g.len);
      const int64_t n = g.len - first;
      if (n > 0) {
        for (int64_t i = 0; i < n; ++i)
          io_.ln_out.layer_norm(x + (g.begin + first + i) * C, 1, C, normed + i * C);
        const size_t position = s.all_logits ? done[b] + size_t(first) : 0;
        kernels::linear(io_.head, normed, n, s.logits.data() + position * size_t(V), options.pool);
      }
      done[b] += size_t(g.len);
    }
  }
}

}  // namespace rwkv
