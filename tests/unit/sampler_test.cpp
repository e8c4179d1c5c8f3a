// Each sampler option changes the distribution exactly as documented in rwkv/sampler.h.
#include "rwkv/sampler.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>

namespace rwkv {
namespace {

SamplerParams plain() {
  SamplerParams p;
  p.top_p = 1;
  p.presence_penalty = 0;
  p.frequency_penalty = 0;
  p.seed = 1;
  return p;
}

// Logits whose softmax is exactly probs.
std::vector<float> logits_for(const std::vector<double>& probs) {
  std::vector<float> l;
  for (double p : probs) l.push_back(float(std::log(p)));
  return l;
}

TEST(Sampler, PlainIsSoftmax) {
  Sampler s(plain(), 4);
  auto l = logits_for({0.1, 0.2, 0.3, 0.4});
  auto p = s.distribution(l);
  EXPECT_NEAR(p[0], 0.1, 1e-6);
  EXPECT_NEAR(p[3], 0.4, 1e-6);
}

TEST(Sampler, SampleValidNeverPicksRowsWithoutATokenAndKeepsTheLogits) {
  // The largest logits sit in the rows past n_valid = 3, as in a World model's 6 padding rows.
  const std::vector<float> logits = {0.5f, 1.0f, 0.2f, 9.0f, 8.0f};
  SamplerParams greedy;
  greedy.temperature = 0;
  greedy.presence_penalty = greedy.frequency_penalty = 0;
  Sampler argmax(greedy, 5);
  EXPECT_EQ(argmax.sample_valid(logits, 3), 1);
  EXPECT_EQ(logits[3], 9.0f);
  SamplerParams plain;
  plain.top_p = 1;
  plain.seed = 5;
  Sampler sampler(plain, 5);
  for (int i = 0; i < 200; ++i) EXPECT_LT(sampler.sample_valid(logits, 3), 3);
}

TEST(Sampler, TemperatureZeroIsArgmax) {
  SamplerParams params = plain();
  params.temperature = 0;
  Sampler s(params, 5);
  for (int i = 0; i < 20; ++i) {
    std::vector<float> l = {0.5f, 3.0f, -1.0f, 2.9f, 0.0f};
    EXPECT_EQ(s.sample(l), 1);
    s.reset();
  }
}

TEST(Sampler, TopPKeepsTheSmallestSetReachingP) {
  SamplerParams params = plain();
  params.top_p = 0.5f;  // 0.4 alone < 0.5; 0.4 + 0.3 >= 0.5
  Sampler s(params, 4);
  auto l = logits_for({0.1, 0.2, 0.3, 0.4});
  auto p = s.distribution(l);
  EXPECT_EQ(p[0], 0);
  EXPECT_EQ(p[1], 0);
  EXPECT_NEAR(p[2], 0.3 / 0.7, 1e-6);
  EXPECT_NEAR(p[3], 0.4 / 0.7, 1e-6);
  params.top_p = 0.4f;  // exactly reached by the top token
  Sampler s2(params, 4);
  l = logits_for({0.1, 0.2, 0.3, 0.4});
  p = s2.distribution(l);
  EXPECT_NEAR(p[3], 1.0, 1e-6);
}

TEST(Sampler, TopKAndMinP) {
  SamplerParams params = plain();
  params.top_k = 2;
  Sampler k(params, 4);
  auto l = logits_for({0.1, 0.2, 0.3, 0.4});
  auto p = k.distribution(l);
  EXPECT_EQ(p[1], 0);
  EXPECT_NEAR(p[2], 3.0 / 7, 1e-6);
  params = plain();
  params.min_p = 0.6f;  // floor 0.24: keeps 0.3 and 0.4
  Sampler m(params, 4);
  l = logits_for({0.1, 0.2, 0.3, 0.4});
  p = m.distribution(l);
  EXPECT_EQ(p[1], 0);
  EXPECT_NEAR(p[2], 3.0 / 7, 1e-6);
}

TEST(Sampler, TemperatureSharpensAfterFiltering) {
  SamplerParams params = plain();
  params.temperature = 0.5f;  // p^2 renormalised
  Sampler s(params, 2);
  auto l = logits_for({0.25, 0.75});
  auto p = s.distribution(l);
  EXPECT_NEAR(p[0], 0.0625 / 0.625, 1e-6);
}

TEST(Sampler, PresenceAndFrequencyPenaltiesWithDecay) {
  SamplerParams params = plain();
  params.presence_penalty = 0.5f;
  params.frequency_penalty = 0.25f;
  params.penalty_decay = 0.5f;
  Sampler s(params, 3);
  s.accept(1);
  s.accept(1);  // count(1) = 1 * 0.5 + 1 = 1.5
  s.accept(2);  // count(1) = 0.75, count(2) = 1
  std::vector<float> l = {0, 0, 0};
  s.distribution(l);
  EXPECT_FLOAT_EQ(l[0], 0);
  EXPECT_FLOAT_EQ(l[1], -(0.5f + 0.25f * 0.75f));
  EXPECT_FLOAT_EQ(l[2], -(0.5f + 0.25f * 1.0f));
  s.reset();
  l = {0, 0, 0};
  s.distribution(l);
  EXPECT_FLOAT_EQ(l[1], 0);
}

TEST(Sampler, RepetitionPenaltyBiasAndBans) {
  SamplerParams params = plain();
  params.repetition_penalty = 2;
  params.logit_bias = {{0, 1.5f}};
  params.banned_tokens = {3};
  Sampler s(params, 4);
  s.accept(1);
  s.accept(2);
  std::vector<float> l = {1, 4, -4, 10};
  auto p = s.distribution(l);
  EXPECT_FLOAT_EQ(l[0], 2.5f);
  EXPECT_FLOAT_EQ(l[1], 2.0f);
  EXPECT_FLOAT_EQ(l[2], -8.0f);
  EXPECT_EQ(p[3], 0);
}

TEST(Sampler, SameSeedSameTokens) {
  auto run = [](uint64_t seed) {
    SamplerParams params;  // ChatRWKV defaults
    params.seed = seed;
    Sampler s(params, 50);
    std::vector<int> out;
    for (int i = 0; i < 200; ++i) {
      std::vector<float> l(50);
      for (int j = 0; j < 50; ++j) l[size_t(j)] = float(std::sin(j * 0.7 + i));
      out.push_back(s.sample(l));
    }
    return out;
  };
  EXPECT_EQ(run(42), run(42));
  EXPECT_NE(run(42), run(43));
}

TEST(Sampler, SamplesFollowTheDistribution) {
  Sampler s(plain(), 3);
  std::vector<int> counts(3);
  for (int i = 0; i < 20000; ++i) {
    auto l = logits_for({0.2, 0.3, 0.5});
    ++counts[size_t(s.sample(l))];
    s.reset();
  }
  EXPECT_NEAR(counts[2] / 20000.0, 0.5, 0.02);
  EXPECT_NEAR(counts[0] / 20000.0, 0.2, 0.02);
}

// Step 4 as the header states it, done the plain way (softmax in double, every token sorted):
// what the sampler's selection must agree with.
std::vector<double> reference_distribution(std::vector<float> l, const SamplerParams& params) {
  for (int t : params.banned_tokens) l[size_t(t)] = -INFINITY;
  const size_t n = l.size();
  const size_t best = size_t(std::max_element(l.begin(), l.end()) - l.begin());
  std::vector<double> p(n);
  double total = 0;
  for (size_t i = 0; i < n; ++i) total += p[i] = std::exp(double(l[i]) - double(l[best]));
  for (double& v : p) v /= total;
  std::vector<int> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](int a, int b) { return p[size_t(a)] > p[size_t(b)]; });
  size_t keep = n;
  if (params.top_k > 0) keep = std::min(keep, size_t(params.top_k));
  double cum = 0;
  for (size_t i = 0; params.top_p < 1 && i < keep; ++i)
    if ((cum += p[size_t(order[i])]) >= params.top_p) keep = i + 1;
  while (keep > 1 && p[size_t(order[keep - 1])] < params.min_p * p[best]) --keep;
  std::vector<double> out(n);
  total = 0;
  for (size_t i = 0; i < keep; ++i) {
    const size_t t = size_t(order[i]);
    total += out[t] = std::pow(p[t], 1.0 / params.temperature);
  }
  for (double& v : out) v /= total;
  return out;
}

TEST(Sampler, SelectionMatchesSortingTheWholeVocabulary) {
  std::mt19937_64 rng(3);
  // Peaked (a trained model's shape), flat (every token near the top: top_p keeps most of
  // them), and coarse (values on a grid of 0.5: ties at every boundary, broken by id).
  const auto logits = [&](int shape) {
    std::normal_distribution<float> noise(0.0f, shape == 1 ? 0.2f : 3.0f);
    std::vector<float> l(5000);
    for (float& v : l) v = shape == 2 ? std::round(noise(rng) * 2) / 2 : noise(rng);
    if (shape == 0)
      for (int i = 0; i < 6; ++i) l[size_t(rng() % l.size())] = 10.0f + float(i);
    return l;
  };
  int cases = 0;
  for (int shape = 0; shape < 3; ++shape)
    for (int top_k : {0, 1, 7, 40, 4999})
      for (float top_p : {1.0f, 0.9f, 0.5f, 0.05f})
        for (float min_p : {0.0f, 0.02f})
          for (float temperature : {1.0f, 0.6f}) {
            SamplerParams params = plain();
            params.top_k = top_k;
            params.top_p = top_p;
            params.min_p = min_p;
            params.temperature = temperature;
            params.banned_tokens = {int(rng() % 5000)};
            std::vector<float> l = logits(shape);
            const std::vector<double> want = reference_distribution(l, params);
            const std::vector<float> got = Sampler(params, 5000).distribution(l);
            for (size_t i = 0; i < got.size(); ++i) {
              ASSERT_EQ(got[i] > 0, want[i] > 0)
                  << "token " << i << ", shape " << shape << ", top_k " << top_k << ", top_p "
                  << top_p << ", min_p " << min_p << ", T " << temperature;
              ASSERT_NEAR(got[i], want[i], 1e-6 + 1e-5 * want[i]) << "token " << i;
            }
            ++cases;
          }
  EXPECT_EQ(cases, 240);
}

TEST(Sampler, BadParamsAreRefused) {
  SamplerParams params;
  params.top_p = 0;
  EXPECT_THROW(Sampler(params, 4), std::exception);
  params = SamplerParams{};
  params.banned_tokens = {9};
  EXPECT_THROW(Sampler(params, 4), std::exception);
}

TEST(StopMatcher, MatchesAcrossPiecesAndHoldsBackPrefixes) {
  StopMatcher m({"\n\nUser:"});
  EXPECT_EQ(m.push("Hello"), "Hello");
  EXPECT_EQ(m.push(" there\n"), " there");  // "\n" could start the stop string
  EXPECT_EQ(m.push("\nUs"), "");
  EXPECT_FALSE(m.stopped());
  EXPECT_EQ(m.push("er: more"), "");
  EXPECT_TRUE(m.stopped());
  EXPECT_EQ(m.push("x"), "");
  StopMatcher n({"END"});
  EXPECT_EQ(n.push("the EN"), "the ");
  EXPECT_EQ(n.push("D? no: ENT"), "");  // "END" completes: everything from it is dropped
  EXPECT_TRUE(n.stopped());
  StopMatcher f({"ab"});
  EXPECT_EQ(f.push("xa"), "x");
  EXPECT_EQ(f.flush(), "a");
}

}  // namespace
}  // namespace rwkv
