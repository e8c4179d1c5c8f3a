// Sampling one token from a 65536-entry vocabulary (RWKV World), single thread: what every
// generated token pays on top of the forward pass in `rwkv generate`, chat and the server.
// Logits are a trained model's shape: a few tokens within a few nats of the top, a long tail
// (Gumbel-like noise with a spread of 3 nats, plus a handful of strong tokens). Arguments: the
// parameter set (0 ChatRWKV defaults: top_p 0.85 and penalties; 1 temperature only; 2 top_k 40
// and temperature 0.7; 3 min_p 0.05; 4 greedy), then whether the logits are flat (1: all 65536
// within 1 nat, top_p's worst case). Run:
//   build/rwkv_bench --benchmark_filter=Sample --benchmark_repetitions=5
//                    --benchmark_report_aggregates_only=true
#include <benchmark/benchmark.h>

#include <random>
#include <vector>

#include "rwkv/sampler.h"

namespace {

constexpr int kVocab = 65536;

std::vector<float> model_like_logits(bool flat, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> noise(0.0f, flat ? 0.3f : 3.0f);
  std::vector<float> l(kVocab);
  for (float& v : l) v = noise(rng);
  if (!flat)
    for (int i = 0; i < 8; ++i) l[size_t(rng() % kVocab)] = 12.0f + float(i);
  return l;
}

rwkv::SamplerParams params_for(int set) {
  rwkv::SamplerParams p;
  p.seed = 7;
  if (set == 1) {
    p.top_p = 1;
    p.presence_penalty = p.frequency_penalty = 0;
  } else if (set == 2) {
    p.top_p = 1;
    p.top_k = 40;
    p.temperature = 0.7f;
  } else if (set == 3) {
    p.top_p = 1;
    p.min_p = 0.05f;
  } else if (set == 4) {
    p.temperature = 0;
  }
  return p;
}

void BM_Sample(benchmark::State& state) {
  rwkv::Sampler sampler(params_for(int(state.range(0))), kVocab);
  std::vector<std::vector<float>> rows;
  for (uint64_t i = 0; i < 16; ++i) rows.push_back(model_like_logits(state.range(1) != 0, i));
  size_t i = 0;
  for (auto _ : state) {
    benchmark::DoNotOptimize(sampler.sample_valid(rows[i++ % rows.size()], kVocab));
  }
}
BENCHMARK(BM_Sample)->ArgsProduct({{0, 1, 2, 3, 4}, {0, 1}})->Unit(benchmark::kMicrosecond);

}  // namespace
