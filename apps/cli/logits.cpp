// `rwkv logits MODEL --tokens "34 105 110"`: feeds tokens from the initial state (or a saved one)
// and reports the logits. This interface is how the engine is checked against references: keep it
// stable. `--out` writes raw little-endian float32, n_vocab values per reported position.
#include <fmt/format.h>

#include <algorithm>
#include <numeric>
#include <sstream>

#include "cli.h"
#include "core/atomic_file.h"
#include "rwkv/state.h"

namespace rwkv::cli {

namespace {

struct LogitsOptions {
  ModelOptions model;
  std::string tokens;
  bool all = false;
  std::string out;
  int top = 0;
  std::string mode = "seq";
  int64_t chunk = 64;
  std::string state_in;
  std::string state_out;
};

void print_top(const float* logits, int n_vocab, int k, size_t position) {
  std::vector<int> order(static_cast<size_t>(n_vocab));
  std::iota(order.begin(), order.end(), 0);
  k = std::min(k, n_vocab);
  std::partial_sort(order.begin(), order.begin() + k, order.end(),
                    [&](int a, int b) { return logits[a] > logits[b]; });
  fmt::print("position {}:", position);
  for (int i = 0; i < k; ++i) fmt::print(" {}:{:.6f}", order[size_t(i)], logits[order[size_t(i)]]);
  fmt::print("\n");
}

void run(const LogitsOptions& o) {
  const std::vector<int> tokens = parse_token_ids(o.tokens, "--tokens");
  if (tokens.empty()) throw Error("--tokens: no token ids given");
  auto model = o.model.load();
  const size_t V = size_t(model->info().n_vocab);
  State state = o.state_in.empty() ? State(*model) : State::load(*model, o.state_in);
  Scratch scratch;
  auto pool = o.model.make_pool();
  const EvalOptions eval{.chunk = o.chunk, .pool = pool.get()};
  // Logits of every position with --all, else of the last one.
  std::vector<float> logits(V * (o.all ? tokens.size() : 1));
  if (o.mode == "seq") {
    model->forward_seq(tokens, state.data(), logits, o.all, scratch, eval);
  } else {
    for (size_t i = 0; i < tokens.size(); ++i) {
      const size_t row = o.all ? i : 0;
      model->forward(tokens[i], state.data(), std::span<float>(logits).subspan(row * V, V), scratch,
                     eval);
    }
  }
  const size_t first = o.all ? 0 : tokens.size() - 1;
  for (size_t i = first; o.top > 0 && i < tokens.size(); ++i)
    print_top(logits.data() + (i - first) * V, int(V), o.top, i);
  if (!o.out.empty())
    write_file_atomic(o.out,
                      [&](int fd) { write_all(fd, logits.data(), logits.size() * 4, o.out); });
  if (!o.state_out.empty()) state.save(o.state_out);
}

}  // namespace

void add_logits_command(CLI::App& app) {
  auto* cmd = app.add_subcommand(
      "logits", "Feed tokens one by one from the initial state and report the logits");
  auto o = std::make_shared<LogitsOptions>();
  o->model.add_to(*cmd);
  cmd->add_option("--tokens", o->tokens, "Token ids, separated by spaces or commas")->required();
  cmd->add_flag("--all", o->all, "Report every position, not only the last");
  cmd->add_option("--out", o->out,
                  "Write raw little-endian float32 logits (n_vocab per reported position)");
  cmd->add_option("--top", o->top, "Print the K largest logits with their token ids")
      ->check(kPositive);
  cmd->add_option("--mode", o->mode,
                  "seq: all tokens in one sequence call (default); rnn: one call per token")
      ->check(CLI::IsMember({"seq", "rnn"}));
  cmd->add_option("--chunk", o->chunk, "Tokens per step in seq mode (bounds memory; default 64)")
      ->check(kPositive);
  cmd->add_option("--state-in", o->state_in,
                  "Start from this state file instead of the initial state")
      ->check(CLI::ExistingFile);
  cmd->add_option("--state-out", o->state_out, "Save the final state to this file (atomically)");
  cmd->callback([o] {
    LogitsOptions run_options = *o;
    if (run_options.out.empty() && run_options.top == 0) run_options.top = 10;
    run(run_options);
  });
}

}  // namespace rwkv::cli
