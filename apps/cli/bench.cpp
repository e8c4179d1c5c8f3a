// `rwkv bench MODEL`: load time, prefill speed in sequence mode next to token-by-token speed,
// and the memory traffic of one generated token. Medians of --runs runs.
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <random>

#include "cli.h"

namespace rwkv::cli {

namespace {

struct BenchOptions {
  ModelOptions model;
  int prompt = 512;
  int gen = 64;
  int runs = 3;
  int64_t chunk = 64;
};

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

void run(const BenchOptions& o) {
  auto start = std::chrono::steady_clock::now();
  auto model = o.model.load();
  const double load_s = seconds_since(start);
  const ModelInfo& info = model->info();
  std::mt19937 rng(1234);
  std::vector<int> prompt(size_t(o.prompt));
  for (int& t : prompt) t = int(rng() % uint32_t(info.n_vocab));
  std::vector<float> state(model->state_size()), logits(size_t(info.n_vocab));
  Scratch scratch;

  std::vector<double> prefill, generate;
  for (int r = 0; r < o.runs; ++r) {
    model->init_state(state);
    start = std::chrono::steady_clock::now();
    model->forward_seq(prompt, state, logits, false, scratch, {.chunk = o.chunk});
    prefill.push_back(double(o.prompt) / seconds_since(start));
    start = std::chrono::steady_clock::now();
    int token = prompt.back();
    for (int i = 0; i < o.gen; ++i) {
      model->forward(token, state, logits, scratch);
      token = int(std::max_element(logits.begin(), logits.end()) - logits.begin());
    }
    generate.push_back(double(o.gen) / seconds_since(start));
  }
  // A generated token reads every weight once, except the embedding: one row of it.
  uint64_t bytes = 0;
  for (const TensorInfo& t : info.tensors) {
    int64_t n = 1;
    for (int64_t d : t.shape) n *= d;
    const double per = t.dtype == "F32" ? 4 : t.dtype == "F16" || t.dtype == "BF16" ? 2
                       : t.dtype == "Q8_0" ? 34.0 / 32 : t.dtype == "Q5_1" ? 24.0 / 32
                       : t.dtype == "Q5_0" ? 22.0 / 32 : t.dtype == "Q4_1" ? 20.0 / 32 : 18.0 / 32;
    bytes += uint64_t(double(t.name == "emb.weight" ? info.n_embd : n) * per);
  }
  const double gen_tps = median(generate);
  fmt::print("model:      {} (RWKV-{}, {} layers x {}, vocab {}, {:.2f}M params)\n", info.path,
             info.version, info.n_layer, info.n_embd, info.n_vocab, double(info.n_params) / 1e6);
  fmt::print("load:       {:.3f} s\n", load_s);
  fmt::print("prefill:    {:.1f} tok/s  (sequence mode, T={}, chunk {}, median of {})\n",
             median(prefill), o.prompt, o.chunk, o.runs);
  fmt::print("generation: {:.1f} tok/s  (one token per call, median of {} x {})\n", gen_tps,
             o.runs, o.gen);
  fmt::print("prefill speedup over token-by-token: {:.2f}x\n", median(prefill) / gen_tps);
  fmt::print("bytes read per token: {:.1f} MB, effective {:.2f} GB/s\n", double(bytes) / 1e6,
             double(bytes) * gen_tps / 1e9);
}

}  // namespace

void add_bench_command(CLI::App& app) {
  auto* cmd = app.add_subcommand("bench", "Measure load time, prefill and generation speed");
  auto o = std::make_shared<BenchOptions>();
  o->model.add_to(*cmd);
  cmd->add_option("--prompt", o->prompt, "Prompt tokens for the prefill measurement (default 512)")
      ->check(CLI::PositiveNumber);
  cmd->add_option("--gen", o->gen, "Tokens generated one by one (default 64)")
      ->check(CLI::PositiveNumber);
  cmd->add_option("--runs", o->runs, "Repetitions; medians are reported (default 3)")
      ->check(CLI::PositiveNumber);
  cmd->add_option("--chunk", o->chunk, "Tokens per step in sequence mode (default 64)")
      ->check(CLI::PositiveNumber);
  cmd->callback([o] { run(*o); });
}

}  // namespace rwkv::cli
