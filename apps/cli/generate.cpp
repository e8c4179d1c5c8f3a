// `rwkv generate MODEL "prompt"`: prefill the prompt in sequence mode, then stream the generated
// text (never half a UTF-8 character) to stdout; statistics go to stderr. --json prints one
// object per generated token and a summary object instead.
#include <fmt/format.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <iostream>
#include <iterator>
#include <nlohmann/json.hpp>

#include "cli.h"
#include "progress.h"

namespace rwkv::cli {

namespace {

struct GenerateCliOptions {
  ModelOptions model;
  SamplingOptions sampling;
  std::string prompt;
  std::string file;
  std::string tokenizer;
  std::string state_in, state_out;
  bool json = false;
  bool echo = false;
  int64_t chunk = 64;
};

bool looks_like_model_file(const std::string& arg) {
  for (const char* ext : {".pth", ".safetensors", ".st", ".bin"})
    if (arg.ends_with(ext)) return true;
  return std::filesystem::exists(arg);
}

std::string read_prompt(const GenerateCliOptions& o) {
  if (!o.prompt.empty() && !o.file.empty()) throw Error("give the prompt as text or --file, not both");
  if (!o.prompt.empty()) return o.prompt;
  if (!o.file.empty() && o.file != "-") {
    std::FILE* f = std::fopen(o.file.c_str(), "rb");
    if (!f) throw Error(o.file + ": cannot open the prompt file");
    std::string text;
    char buf[65536];
    for (size_t n; (n = std::fread(buf, 1, sizeof buf, f)) > 0;) text.append(buf, n);
    std::fclose(f);
    return text;
  }
  if (o.file.empty() && isatty(STDIN_FILENO)) throw Error("no prompt: give it as text, --file F, or on stdin");
  return std::string(std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>());
}

void run(GenerateCliOptions o) {
  // `rwkv generate "prompt"`: one argument that is not a model file is the prompt for the
  // built-in model.
  if (o.prompt.empty() && !o.model.path.empty() && !looks_like_model_file(o.model.path)) {
    o.prompt = o.model.path;
    o.model.path.clear();
  }
  const std::string prompt = read_prompt(o);
  auto model = o.model.load();
  auto tokenizer = Tokenizer::for_model(o.model.path, model->info().n_vocab, o.tokenizer);
  auto pool = o.model.make_pool();
  Session session(*model, *tokenizer, {.chunk = o.chunk, .pool = pool.get()});
  if (!o.state_in.empty()) session.set_state(State::load(*model, o.state_in));
  Sampler sampler(o.sampling.sampler_params(), model->info().n_vocab);

  const std::vector<int> ids = tokenizer->encode(prompt);
  if (ids.empty()) throw Error("the prompt is empty");
  {
    ProgressBar bar("prefill");
    std::function<void(size_t, size_t)> progress;
    if (ids.size() > 1024)
      progress = [&](size_t done, size_t total) {
        bar.update(double(done), double(total), fmt::format("{}/{} tokens", done, total));
      };
    session.feed(ids, progress);
  }
  const double prefill_s = session.feed_seconds();
  if (o.echo && !o.json) {
    std::fwrite(prompt.data(), 1, prompt.size(), stdout);
    std::fflush(stdout);
  }
  const GenerateResult result =
      session.generate(sampler, o.sampling.generate_options(), [&](int id, std::string_view text) {
        if (o.json) {
          if (id >= 0 || !text.empty())
            fmt::print("{}\n", nlohmann::json{{"id", id}, {"text", std::string(text)}}.dump());
        } else {
          std::fwrite(text.data(), 1, text.size(), stdout);
        }
        std::fflush(stdout);
        return true;
      });
  const double gen_tps = result.tokens > 0 ? result.tokens / result.seconds : 0;
  const double prefill_tps = prefill_s > 0 ? double(ids.size()) / prefill_s : 0;
  if (o.json) {
    fmt::print("{}\n", nlohmann::json{{"prompt_tokens", ids.size()},
                                       {"generated_tokens", result.tokens},
                                       {"finish_reason", result.finish_reason},
                                       {"prefill_s", prefill_s},
                                       {"prefill_tok_s", prefill_tps},
                                       {"generation_s", result.seconds},
                                       {"generation_tok_s", gen_tps}}
                           .dump());
  } else {
    fmt::print(stderr, "\n[prompt {} tokens, {:.1f} tok/s; generated {} tokens, {:.1f} tok/s; {}]\n",
               ids.size(), prefill_tps, result.tokens, gen_tps, result.finish_reason);
  }
  if (!o.state_out.empty()) session.state().save(o.state_out);
}

}  // namespace

void add_generate_command(CLI::App& app) {
  auto* cmd = app.add_subcommand("generate", "Generate text from a prompt, streaming it");
  auto o = std::make_shared<GenerateCliOptions>();
  o->model.allow_default = true;
  o->model.add_to(*cmd);
  cmd->add_option("prompt", o->prompt, "Prompt text (or --file, or stdin)");
  cmd->add_option("--file", o->file, "Read the prompt from a file ('-' = stdin)");
  cmd->add_option("--tokenizer", o->tokenizer,
                  "Vocab file (rwkv_vocab_v20230424.txt, 20B_tokenizer.json) or 'byte'");
  o->sampling.add_to(*cmd);
  cmd->add_option("--state-in", o->state_in, "Start from this state file")->check(CLI::ExistingFile);
  cmd->add_option("--state-out", o->state_out, "Save the final state to this file");
  cmd->add_flag("--json", o->json, "One JSON object per generated token, then a summary");
  cmd->add_flag("--echo", o->echo, "Print the prompt before the generated text");
  cmd->add_option("--chunk", o->chunk, "Prompt tokens per step (default 64)")->check(kPositive);
  cmd->callback([o] { run(*o); });
}

}  // namespace rwkv::cli
