#include <algorithm>
#include <cstdio>
#include <thread>

#include "cli.h"

namespace rwkv::cli {

void ModelOptions::add_to(CLI::App& cmd, bool required) {
  auto* model =
      cmd.add_option("model", path,
                     allow_default ? "Model file: .pth, .safetensors or rwkv.cpp .bin (default: "
                                     "the built-in byte-level RWKV-7)"
                                   : "Model file: .pth, .safetensors or rwkv.cpp .bin")
          ->required(required && !allow_default);
  // generate takes `rwkv generate "prompt"` for the default model, so it checks the file itself.
  if (!allow_default) model->check(CLI::ExistingFile);
  cmd.add_option("--arch", arch, "Architecture to assume instead of detecting it")
      ->check(CLI::IsMember({"4", "5", "5.0", "5.1", "5.2", "6", "7", "v4", "v5", "v6", "v7"}));
  cmd.add_option("--ln-x-eps", ln_x_eps,
                 "GroupNorm eps of RWKV-5/6/7 (default: the file's convention, 64e-5 for "
                 "official checkpoints, 1e-5 for rwkv.cpp v5 .bin files)")
      ->check(kPositive);
  cmd.add_flag("--int8-activations", int8_activations,
               "For weights in ggml blocks (Q8_0, Q5_x, Q4_x) and I8: round each matrix "
               "product's input to int8 per 32 values and use integer dot products (AVX-512 VNNI "
               "or AVX2), as rwkv.cpp does; faster generation, slightly different logits");
  cmd.add_option("--repack-cache", repack_cache,
                 "Where --int8-activations caches the weights it repacks for AVX-512 VNNI, built "
                 "at the first load and read into huge pages at later ones (default: "
                 "$RWKV_CACHE_DIR, else $XDG_CACHE_HOME/rwkv or ~/.cache/rwkv); 'none' repacks at "
                 "every load");
  cmd.add_flag("--map-repack-cache", map_repack_cache,
               "Map the repack cache instead of reading it: faster loads (no memory to zero and "
               "fill), 2-12% slower generation");
  cmd.add_option("--threads", threads, "Threads for the matrix products (default: one per core)")
      ->check(CLI::Range(1, 1024));
}

std::unique_ptr<ThreadPool> ModelOptions::make_pool() const {
  const int n = threads > 0 ? threads : int(std::max(1u, std::thread::hardware_concurrency()));
  return std::make_unique<ThreadPool>(n);
}

std::unique_ptr<Model> ModelOptions::load() const {
  LoadOptions options;
  options.version = !arch.empty() && arch[0] == 'v' ? arch.substr(1) : arch;
  if (ln_x_eps > 0) options.ln_x_eps = ln_x_eps;
  options.int8_activations = int8_activations;
  options.repack_cache_dir = repack_cache;
  options.map_repack_cache = map_repack_cache;
  if (path.empty() && allow_default) return Model::load_default(options);
  auto model = Model::load(path, options);
  for (const std::string& w : model->info().warnings)
    std::fprintf(stderr, "warning: %s: %s\n", path.c_str(), w.c_str());
  return model;
}

}  // namespace rwkv::cli
