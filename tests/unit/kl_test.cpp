// engine/kl.h: the per-position statistics against values worked out by hand, and the
// whole-text comparison's invariants (a model against itself, chunk sizes, bad input).
#include "engine/kl.h"

#include <gtest/gtest.h>

#include <cmath>
#include <memory>

#include "model/init.h"
#include "model/registry.h"

namespace rwkv {
namespace {

TEST(KlPosition, MatchesHandComputedValues) {
  // A: logits (0, ln 3) -> p = (1/4, 3/4); B: (0, 0) -> q = (1/2, 1/2).
  const float a[2] = {0.0f, std::log(3.0f)}, b[2] = {0.0f, 0.0f};
  const KlPosition p = compare_position(a, b, 2, 0);
  const double kl = 0.25 * std::log(0.25 / 0.5) + 0.75 * std::log(0.75 / 0.5);
  EXPECT_NEAR(p.kl, kl, 1e-7);
  EXPECT_FALSE(p.same_top1);  // argmax 1 vs the first of a tie, 0
  EXPECT_NEAR(p.nll_a, -std::log(0.25), 1e-7);
  EXPECT_NEAR(p.nll_b, -std::log(0.5), 1e-12);
  // Shifting all logits changes nothing; identical rows give exactly 0.
  const float a2[2] = {100.0f, 100.0f + std::log(3.0f)};
  EXPECT_NEAR(compare_position(a2, b, 2, 0).kl, kl, 1e-5);
  const KlPosition same = compare_position(a, a, 2, 1);
  EXPECT_EQ(same.kl, 0.0);
  EXPECT_TRUE(same.same_top1);
}

std::unique_ptr<Model> random_model(const std::string& arch, uint64_t seed, int64_t vocab = 128) {
  InitOptions o;
  o.arch = arch;
  o.n_embd = 64;
  o.n_layer = 2;
  o.n_vocab = vocab;
  o.head_size = 32;
  o.seed = seed;
  return build_model(std::make_shared<TensorMap>(init_model(o)), {});
}

std::vector<int> some_tokens(int n, int vocab) {
  std::vector<int> t;
  for (int i = 0; i < n; ++i) t.push_back((i * 37 + i * i) % vocab);
  return t;
}

TEST(KlModels, ModelAgainstItself) {
  auto m = random_model("v7", 1);
  const KlResult r = compare_models(*m, *m, some_tokens(100, 128));
  EXPECT_EQ(r.n_tokens, 100);
  EXPECT_EQ(r.n_positions, 99);
  EXPECT_EQ(r.mean_kl, 0.0);
  EXPECT_EQ(r.top1_agreement, 1.0);
  EXPECT_EQ(r.ppl_a, r.ppl_b);
  EXPECT_GT(r.ppl_a, 1.0);
}

// Chunks carry the state: any chunk size gives the same statistics, which also equal the
// mean of compare_position over logits computed token by token.
TEST(KlModels, ChunkSizeDoesNotMatterAndMatchesTokenByToken) {
  auto a = random_model("v6", 1), b = random_model("v6", 2);
  const std::vector<int> tokens = some_tokens(70, 128);
  KlOptions o;
  o.chunk = 512;
  const KlResult whole = compare_models(*a, *b, tokens, o);
  for (int64_t chunk : {1, 7, 64}) {
    o.chunk = chunk;
    const KlResult r = compare_models(*a, *b, tokens, o);
    EXPECT_NEAR(r.mean_kl, whole.mean_kl, 1e-9 * whole.mean_kl) << chunk;
    EXPECT_EQ(r.top1_agreement, whole.top1_agreement) << chunk;
    EXPECT_NEAR(r.nll_b, whole.nll_b, 1e-9) << chunk;
  }
  std::vector<float> sa(a->state_size()), sb(b->state_size()), la(128), lb(128);
  a->init_state(sa);
  b->init_state(sb);
  double kl = 0, nll_a = 0;
  for (size_t i = 0; i + 1 < tokens.size(); ++i) {
    a->forward(tokens[i], sa, la);
    b->forward(tokens[i], sb, lb);
    const KlPosition p = compare_position(la.data(), lb.data(), 128, tokens[i + 1]);
    kl += p.kl;
    nll_a += p.nll_a;
  }
  EXPECT_NEAR(whole.mean_kl, kl / 69, 1e-6 * whole.mean_kl);
  EXPECT_NEAR(whole.nll_a, nll_a / 69, 1e-6);
  EXPECT_GT(whole.mean_kl, 0.01);  // different seeds: really different models
}

TEST(KlModels, RejectsBadInput) {
  auto a = random_model("v5", 1), b = random_model("v5", 1, 256);
  EXPECT_THROW(compare_models(*a, *b, some_tokens(10, 128)), Error);  // vocabularies differ
  EXPECT_THROW(compare_models(*a, *a, {{5}}), Error);                 // one token
  EXPECT_THROW(compare_models(*a, *a, {{5, 128}}), Error);            // outside the vocabulary
}

}  // namespace
}  // namespace rwkv
