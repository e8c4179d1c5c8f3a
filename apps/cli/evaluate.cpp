// `rwkv perplexity MODEL --file TEXT` and `rwkv lambada MODEL --file lambada_test.jsonl`.
#include <fmt/format.h>

#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>

#include "cli.h"
#include "engine/evaluate.h"
#include "progress.h"

namespace rwkv::cli {

namespace {

std::string read_file(const std::string& path) {
  std::FILE* f = path == "-" ? stdin : std::fopen(path.c_str(), "rb");
  if (!f) throw Error(path + ": cannot open");
  std::string text;
  char buf[65536];
  for (size_t n; (n = std::fread(buf, 1, sizeof buf, f)) > 0;) text.append(buf, n);
  if (f != stdin) std::fclose(f);
  return text;
}

struct EvalCliOptions {
  ModelOptions model;
  std::string file;
  std::string tokenizer;
  int64_t chunk = 512;
  int batch = 16;
  int limit = 0;
  bool json = false;
};

void run_perplexity(const EvalCliOptions& o) {
  const std::string text = read_file(o.file);
  auto model = o.model.load();
  auto tokenizer = Tokenizer::for_model(o.model.path, model->info().n_vocab, o.tokenizer);
  auto pool = o.model.make_pool();
  const std::vector<int> tokens = tokenizer->encode(text);
  ProgressBar bar("perplexity");
  const PerplexityResult r = perplexity(*model, tokens, {.chunk = o.chunk, .pool = pool.get()},
                                        [&](int64_t done, int64_t total) {
                                          bar.update(double(done), double(total));
                                        });
  bar.finish();
  if (o.json) {
    fmt::print("{}\n", nlohmann::json{{"tokens", tokens.size()},
                                       {"predictions", r.predictions},
                                       {"mean_nll", r.mean_nll},
                                       {"perplexity", r.perplexity}}
                           .dump());
  } else {
    fmt::print("tokens: {}\nmean NLL: {:.6f} nats/token\nperplexity: {:.4f}\n", tokens.size(),
               r.mean_nll, r.perplexity);
  }
}

void run_lambada(const EvalCliOptions& o) {
  std::ifstream in(o.file);
  if (!in) throw Error(o.file + ": cannot open");
  std::vector<std::string> texts;
  int line_no = 0;
  for (std::string line; std::getline(in, line);) {
    ++line_no;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    try {
      texts.push_back(nlohmann::json::parse(line).at("text").get<std::string>());
    } catch (const nlohmann::json::exception&) {
      throw Error(o.file + ":" + std::to_string(line_no) + ": expected a JSON object with \"text\"");
    }
    if (o.limit > 0 && int(texts.size()) == o.limit) break;
  }
  if (texts.empty()) throw Error(o.file + ": no documents");
  auto model = o.model.load();
  auto tokenizer = Tokenizer::for_model(o.model.path, model->info().n_vocab, o.tokenizer);
  auto pool = o.model.make_pool();
  ProgressBar bar("lambada");
  const LambadaResult r = lambada(*model, *tokenizer, texts, {.chunk = o.chunk, .pool = pool.get()},
                                  o.batch, [&](int64_t done, int64_t total) {
                                    bar.update(double(done), double(total));
                                  });
  bar.finish();
  if (o.json) {
    fmt::print("{}\n", nlohmann::json{{"documents", r.docs},
                                       {"accuracy", r.accuracy},
                                       {"perplexity", r.perplexity}}
                           .dump());
  } else {
    fmt::print("documents: {}\naccuracy: {:.2f}%\nperplexity: {:.2f}\n", r.docs, 100 * r.accuracy,
               r.perplexity);
  }
}

void add_common(CLI::App* cmd, EvalCliOptions& o, const char* file_help) {
  o.model.add_to(*cmd);
  cmd->add_option("--file", o.file, file_help)->required();
  cmd->add_option("--tokenizer", o.tokenizer,
                  "Vocab file (rwkv_vocab_v20230424.txt, 20B_tokenizer.json) or 'byte'");
  cmd->add_flag("--json", o.json, "Print one JSON object");
}

}  // namespace

void add_eval_commands(CLI::App& app) {
  auto* ppl = app.add_subcommand("perplexity", "Mean negative log-likelihood and perplexity of a text");
  auto p = std::make_shared<EvalCliOptions>();
  add_common(ppl, *p, "Text file ('-' = stdin)");
  ppl->add_option("--chunk", p->chunk, "Tokens per forward call (default 512)")->check(kPositive);
  ppl->callback([p] { run_perplexity(*p); });

  auto* lam = app.add_subcommand("lambada", "LAMBADA last-word accuracy and perplexity");
  auto l = std::make_shared<EvalCliOptions>();
  add_common(lam, *l, "LAMBADA jsonl, one {\"text\": ...} per line");
  lam->add_option("--batch", l->batch, "Documents per batched forward call (default 16)")
      ->check(kPositive);
  lam->add_option("--limit", l->limit, "Evaluate only the first N documents")->check(kPositive);
  lam->callback([l] { run_lambada(*l); });
}

}  // namespace rwkv::cli
