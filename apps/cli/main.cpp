// The `rwkv` command: one binary with subcommands. Each subcommand lives in its own file and
// registers itself here; errors from the library become one line on stderr and exit code 1.
#include <CLI/CLI.hpp>
#include <cstdio>

#include "cli.h"
#include "rwkv/error.h"

int main(int argc, char** argv) {
  CLI::App app{"rwkv: load and run RWKV language models (versions 4, 5, 6, 7)"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "rwkv 0.1.0");
  rwkv::cli::add_info_command(app);
  rwkv::cli::add_logits_command(app);
  rwkv::cli::add_convert_command(app);
  rwkv::cli::add_bench_command(app);
  rwkv::cli::add_init_command(app);
  rwkv::cli::add_quantize_command(app);
  rwkv::cli::add_kl_command(app);
  rwkv::cli::add_tokenize_command(app);
  rwkv::cli::add_detokenize_command(app);
  rwkv::cli::add_generate_command(app);
  rwkv::cli::add_chat_command(app);
  rwkv::cli::add_eval_commands(app);
  rwkv::cli::add_grad_command(app);
  rwkv::cli::add_train_command(app);
  rwkv::cli::add_serve_command(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const rwkv::Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
