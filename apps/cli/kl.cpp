// `rwkv kl MODEL_A MODEL_B --file TEXT`: how much model B's next-token distributions differ
// from model A's over a text (mean KL(P_A || P_B), top-1 agreement, perplexity of each). The
// measure of what quantization costs: A the full-precision file, B the quantized one.
#include "engine/kl.h"

#include <fmt/format.h>

#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "cli.h"
#include "progress.h"
#include "rwkv/tokenizer.h"

namespace rwkv::cli {

namespace {

struct KlCliOptions {
  std::string model_a, model_b;
  std::string file, tokens_file, tokenizer;
  std::string arch;
  float ln_x_eps = 0;
  std::string int8_activations;  // "", "a", "b" or "both"
  int64_t chunk = 512;
  int64_t max_tokens = 0;
  int threads = 0;  // 0: one per core
  bool json = false;
};

std::string read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw Error(path + ": cannot open file");
  std::string data{std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
  if (f.bad()) throw Error(path + ": read error");
  return data;
}

void run(const KlCliOptions& o) {
  LoadOptions load;
  load.version = !o.arch.empty() && o.arch[0] == 'v' ? o.arch.substr(1) : o.arch;
  if (o.ln_x_eps > 0) load.ln_x_eps = o.ln_x_eps;
  load.int8_activations = o.int8_activations == "a" || o.int8_activations == "both";
  auto a = Model::load(o.model_a, load);
  load.int8_activations = o.int8_activations == "b" || o.int8_activations == "both";
  auto b = Model::load(o.model_b, load);
  for (const Model* m : {a.get(), b.get()})
    for (const std::string& w : m->info().warnings)
      fmt::print(stderr, "warning: {}: {}\n", m->info().path, w);

  std::vector<int> tokens;
  if (!o.tokens_file.empty()) {
    tokens = parse_token_ids(read_file(o.tokens_file), o.tokens_file);
  } else {
    const auto tok = Tokenizer::for_model(o.model_a, a->info().n_vocab, o.tokenizer);
    tokens = tok->encode(read_file(o.file));
  }
  if (o.max_tokens > 0 && int64_t(tokens.size()) > o.max_tokens)
    tokens.resize(size_t(o.max_tokens));

  const int n_threads =
      o.threads > 0 ? o.threads : std::max(1, int(std::thread::hardware_concurrency()));
  ThreadPool pool(n_threads);
  KlOptions opts;
  opts.chunk = o.chunk;
  opts.pool = n_threads > 1 ? &pool : nullptr;
  ProgressBar bar("comparing");
  opts.progress = [&](int64_t done, int64_t total) {
    bar.update(double(done), double(total), fmt::format("{} / {} tokens", done, total));
  };
  const KlResult r = compare_models(*a, *b, tokens, opts);
  bar.finish();

  if (o.json) {
    nlohmann::json j = {{"model_a", o.model_a},
                        {"model_b", o.model_b},
                        {"tokens", r.n_tokens},
                        {"positions", r.n_positions},
                        {"mean_kl", r.mean_kl},
                        {"max_kl", r.max_kl},
                        {"top1_agreement", r.top1_agreement},
                        {"nll_a", r.nll_a},
                        {"nll_b", r.nll_b},
                        {"ppl_a", r.ppl_a},
                        {"ppl_b", r.ppl_b}};
    fmt::print("{}\n", j.dump(1));
    return;
  }
  fmt::print("tokens:          {} ({} predictions)\n", r.n_tokens, r.n_positions);
  fmt::print("mean KL(A||B):   {:.6g} nats (max {:.4g})\n", r.mean_kl, r.max_kl);
  fmt::print("top-1 agreement: {:.2f}%\n", 100 * r.top1_agreement);
  fmt::print("perplexity A:    {:.4f}\n", r.ppl_a);
  fmt::print("perplexity B:    {:.4f}\n", r.ppl_b);
}

}  // namespace

void add_kl_command(CLI::App& app) {
  auto* cmd = app.add_subcommand(
      "kl", "Mean KL divergence, top-1 agreement and perplexity of two models over a text");
  auto o = std::make_shared<KlCliOptions>();
  cmd->add_option("model_a", o->model_a, "Reference model (e.g. the FP32 file)")
      ->required()
      ->check(CLI::ExistingFile);
  cmd->add_option("model_b", o->model_b, "Model to compare (e.g. a quantized file)")
      ->required()
      ->check(CLI::ExistingFile);
  auto* file = cmd->add_option("--file", o->file, "Text to run, tokenized with the tokenizer")
                   ->check(CLI::ExistingFile);
  auto* ids = cmd->add_option("--tokens-file", o->tokens_file,
                              "Token ids separated by whitespace, instead of --file")
                  ->check(CLI::ExistingFile);
  file->excludes(ids);
  cmd->add_option("--tokenizer", o->tokenizer,
                  "Vocab file, or 'byte' (default: byte-level for 256 tokens, else the known "
                  "vocab file next to MODEL_A)");
  cmd->add_option("--chunk", o->chunk, "Tokens per forward call (default 512)")->check(kPositive);
  cmd->add_option("--max-tokens", o->max_tokens, "Use only the first N tokens")->check(kPositive);
  cmd->add_option("--threads", o->threads, "Threads (default: one per core)")->check(kNonNegative);
  cmd->add_option("--arch", o->arch, "Architecture to assume for both models")
      ->check(CLI::IsMember({"4", "5", "5.0", "5.1", "5.2", "6", "7", "v4", "v5", "v6", "v7"}));
  cmd->add_option("--int8-activations", o->int8_activations,
                  "Which models round their matrix products' inputs to int8 (ggml block "
                  "weights only; see rwkv generate --help): a, b or both")
      ->check(CLI::IsMember({"a", "b", "both"}));
  cmd->add_option("--ln-x-eps", o->ln_x_eps, "GroupNorm eps for both models")->check(kPositive);
  cmd->add_flag("--json", o->json, "Print one JSON object");
  cmd->callback([o] {
    if (o->file.empty() && o->tokens_file.empty())
      throw Error("give the text with --file TEXT or the ids with --tokens-file IDS");
    run(*o);
  });
}

}  // namespace rwkv::cli
