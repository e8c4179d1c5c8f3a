// `rwkv init`: write a random-weight model of any size in the official layout, so anyone can
// reproduce the benchmarks and quantization measurements without downloading a checkpoint.
#include "model/init.h"

#include <fmt/format.h>

#include <chrono>
#include <thread>

#include "cli.h"
#include "io/readers.h"
#include "progress.h"

namespace rwkv::cli {

void add_init_command(CLI::App& app) {
  auto* cmd = app.add_subcommand(
      "init", "Write a random-weight model of any size in the official checkpoint layout");
  auto o = std::make_shared<InitOptions>();
  auto out = std::make_shared<std::string>();
  auto dtype = std::make_shared<std::string>("F32");
  auto threads = std::make_shared<int>(0);
  cmd->add_option("--arch", o->arch, "Architecture: v4, v5 (the 5.2 layout), v6 or v7")
      ->required()
      ->check(CLI::IsMember({"v4", "v5", "v6", "v7", "4", "5", "6", "7"}));
  cmd->add_option("--n-embd", o->n_embd, "Embedding size C")->required()->check(kPositive);
  cmd->add_option("--n-layer", o->n_layer, "Number of layers")->required()->check(kPositive);
  cmd->add_option("--vocab", o->n_vocab, "Vocabulary size")->required()->check(kPositive);
  cmd->add_option("--head-size", o->head_size, "Head size of RWKV-5/6/7 (default 64)")
      ->check(kPositive);
  cmd->add_option("--ffn-dim", o->ffn_dim,
                  "FFN width (default: 4C for v4/v7, 3.5C rounded down to 32 for v5/v6)")
      ->check(kPositive);
  cmd->add_option("--seed", o->seed, "Random seed (default 0); same seed, same file");
  cmd->add_option("--dtype", *dtype, "Type of every tensor: F32 (default), F16 or BF16")
      ->check(CLI::IsMember({"F32", "F16", "BF16"}, CLI::ignore_case));
  cmd->add_option("--threads", *threads, "Threads generating weights (default: all cores)")
      ->check(kNonNegative);
  cmd->add_option("--out", *out, "Output .safetensors file (replaced atomically)")->required();
  cmd->callback([=] {
    std::string upper = *dtype;
    for (char& c : upper) c = char(std::toupper(static_cast<unsigned char>(c)));
    InitOptions opts = *o;
    opts.dtype = *dtype_from_name(upper);
    const int n_threads =
        *threads > 0 ? *threads : std::max(1, int(std::thread::hardware_concurrency()));
    ThreadPool pool(n_threads);
    opts.pool = &pool;
    ProgressBar bar("generating");
    const uint64_t elem = dtype_info(opts.dtype).block_bytes;
    opts.progress = [&](uint64_t done, uint64_t total) {
      bar.update(double(done), double(total),
                 fmt::format("{} / {}", human_bytes(double(done * elem)),
                             human_bytes(double(total * elem))));
    };
    const auto start = std::chrono::steady_clock::now();
    TensorMap map = init_model(opts);
    bar.finish();
    const auto generated = std::chrono::steady_clock::now();
    uint64_t params = 0, bytes = 0;
    for (const std::string& name : map.names()) {
      params += uint64_t(map.at(name).numel());
      bytes += map.at(name).nbytes;
    }
    if (isatty(2)) fmt::print(stderr, "writing {} to {}...\n", human_bytes(double(bytes)), *out);
    write_safetensors(map, *out);
    const auto written = std::chrono::steady_clock::now();
    auto secs = [](auto a, auto b) { return std::chrono::duration<double>(b - a).count(); };
    fmt::print(stderr,
               "wrote RWKV-{} {}x{} vocab {} ({:.2f}M params, {} {}) to {} in {:.1f} s "
               "(generate {:.1f} s, write {:.1f} s)\n",
               map.metadata["arch"], opts.n_embd, opts.n_layer, opts.n_vocab, double(params) / 1e6,
               human_bytes(double(bytes)), upper, *out, secs(start, written),
               secs(start, generated), secs(generated, written));
  });
}

}  // namespace rwkv::cli
