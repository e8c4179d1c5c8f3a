// Subcommands of the `rwkv` command and the options they share.
#pragma once

#include <CLI/CLI.hpp>
#include <memory>
#include <optional>
#include <string>

#include "rwkv/model.h"
#include "rwkv/sampler.h"
#include "rwkv/session.h"
#include "rwkv/thread_pool.h"

namespace rwkv::cli {

// Options every command that loads a model accepts.
struct ModelOptions {
  std::string path;
  std::string arch;    // "" = detect
  float ln_x_eps = 0;  // 0 = the file's convention
  int threads = 0;     // 0 = one per core
  bool int8_activations = false;
  std::string repack_cache;  // LoadOptions::repack_cache_dir
  bool map_repack_cache = false;
  // Without a model file, run the built-in default model (generate, chat).
  bool allow_default = false;

  void add_to(CLI::App& cmd, bool required = true);
  // Loads the model and prints its warnings to stderr.
  std::unique_ptr<Model> load() const;
  // A pool of --threads threads.
  std::unique_ptr<ThreadPool> make_pool() const;
};

// Sampling and stopping flags shared by generate and chat.
struct SamplingOptions {
  SamplerParams params;
  std::optional<uint64_t> seed;
  int max_tokens = 200;
  std::vector<std::string> params_stop;
  std::vector<int> stop_tokens;
  std::vector<std::string> bias_text;

  void add_to(CLI::App& cmd);
  SamplerParams sampler_params() const;
  GenerateOptions generate_options() const;
};

// Token ids separated by spaces or commas; throws rwkv::Error naming `source` (a flag or file)
// and the first word that is not a non-negative integer.
std::vector<int> parse_token_ids(std::string_view text, std::string_view source);

// Checks of numeric options whose failures say what is wanted ("--runs: must be greater than
// zero, got 0"); CLI11 2.1's PositiveNumber printed "Value 0 not in range 0.000000 to" and 309
// digits of DBL_MAX.
extern const CLI::Validator kPositive;     // > 0
extern const CLI::Validator kNonNegative;  // >= 0

void add_info_command(CLI::App& app);
void add_logits_command(CLI::App& app);
void add_convert_command(CLI::App& app);
void add_bench_command(CLI::App& app);
void add_init_command(CLI::App& app);
void add_quantize_command(CLI::App& app);
void add_kl_command(CLI::App& app);
void add_tokenize_command(CLI::App& app);
void add_detokenize_command(CLI::App& app);
void add_generate_command(CLI::App& app);
void add_chat_command(CLI::App& app);
void add_eval_commands(CLI::App& app);
void add_grad_command(CLI::App& app);
void add_train_command(CLI::App& app);
void add_serve_command(CLI::App& app);

}  // namespace rwkv::cli
