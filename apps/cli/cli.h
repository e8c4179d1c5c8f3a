// Subcommands of the `rwkv` command and the options they share.
#pragma once

#include <CLI/CLI.hpp>
#include <memory>
#include <string>

#include "rwkv/model.h"

namespace rwkv::cli {

// Options every command that loads a model accepts.
struct ModelOptions {
  std::string path;
  std::string arch;  // "" = detect
  float ln_x_eps = 0;  // 0 = the file's convention

  void add_to(CLI::App& cmd);
  // Loads the model and prints its warnings to stderr.
  std::unique_ptr<Model> load() const;
};

void add_info_command(CLI::App& app);
void add_logits_command(CLI::App& app);
void add_convert_command(CLI::App& app);
void add_bench_command(CLI::App& app);

}  // namespace rwkv::cli
