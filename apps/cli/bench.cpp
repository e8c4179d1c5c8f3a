// `rwkv bench MODEL`: load time, prefill speed in sequence mode next to token-by-token speed,
// and the memory traffic of one generated token. Medians of --runs runs.
#include <fmt/format.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>

#include "cli.h"
#include "core/cpu.h"
#include "core/dtype.h"
#include "kernels/activations.h"
#include "kernels/kernels.h"
#include "kernels/probes.h"

namespace rwkv::cli {

namespace {

struct BenchOptions {
  ModelOptions model;
  bool json = false;
  bool memory = false;
  bool profile = false;
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

// Resident set size now (Linux /proc/self/statm; mapped weight pages count once touched).
double rss_mb() {
  std::ifstream statm("/proc/self/statm");
  long pages_total = 0, pages_resident = 0;
  statm >> pages_total >> pages_resident;
  return double(pages_resident) * double(sysconf(_SC_PAGESIZE)) / 1e6;
}

// Peak resident set size of the process so far.
double peak_rss_mb() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return double(u.ru_maxrss) * 1024 / 1e6;  // Linux reports KiB
}

// The kernels' prefetch hint as the text's "threads:" line puts it.
std::string prefetch_words() {
  const std::string hint = kernels::prefetch_hint();
  if (hint == "none") return "";
  return hint == "nta" ? ", weights prefetched non-temporally" : ", weights prefetched into L2";
}

struct Probes {
  double read_gbps;
  double fma_gflops;
};

Probes probe_machine(ThreadPool& pool) {
  return {kernels::measure_read_bandwidth(pool), kernels::measure_fma_peak(pool)};
}

// One more generation pass of `gen` tokens with every weight product timed: where a token's
// time goes (kernels::ProductProfile).
struct Profile {
  double token_s = 0, products_s = 0, setup_s = 0;
  int64_t calls = 0;
  nlohmann::json by_size = nlohmann::json::array();
};

Profile profile_generation(Model& model, std::vector<float>& state, std::vector<float>& logits,
                           Scratch& scratch, const EvalOptions& eval, int gen) {
  kernels::ProductProfile products;
  // Uninstalled however the pass ends.
  struct Installed {
    explicit Installed(kernels::ProductProfile* p) { kernels::set_product_profile(p); }
    ~Installed() { kernels::set_product_profile(nullptr); }
  } installed(&products);
  int token = 0;
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < gen; ++i) {
    model.forward(token, state, logits, scratch, eval);
    token = int(kernels::argmax(logits.data(), int64_t(logits.size())));
  }
  Profile p;
  p.token_s = seconds_since(start) / gen;
  for (const auto& [bytes, c] : products.by_bytes) {
    p.products_s += c.total_s / gen;
    p.setup_s += c.setup_s / gen;
    p.calls += c.calls;
    p.by_size.push_back({{"weight_bytes", bytes},
                         {"per_token", double(c.calls) / gen},
                         {"call_us", 1e6 * c.total_s / double(c.calls)},
                         {"setup_us", 1e6 * c.setup_s / double(c.calls)},
                         {"gbps", double(bytes) * double(c.calls) / c.total_s / 1e9}});
  }
  p.calls /= gen;
  return p;
}

void run(const BenchOptions& o) {
  auto pool = o.model.make_pool();
  if (o.memory) {
    const Probes p = probe_machine(*pool);
    if (o.json) {
      fmt::print("{}\n", nlohmann::json{{"threads", pool->size()},
                                        {"cpu_features", cpu_features_string()},
                                        {"read_gbps", p.read_gbps},
                                        {"fma_gflops", p.fma_gflops}}
                             .dump());
    } else {
      fmt::print(
          "threads: {}\ncpu features: {}\nmemory read: {:.1f} GB/s\nfp32 FMA peak: {:.0f} "
          "GFLOP/s\n",
          pool->size(), cpu_features_string(), p.read_gbps, p.fma_gflops);
    }
    return;
  }
  if (o.model.path.empty()) throw Error("bench: a model file is required (or --memory)");
  auto start = std::chrono::steady_clock::now();
  auto model = o.model.load();
  const double load_s = seconds_since(start);
  const ModelInfo& info = model->info();
  std::mt19937 rng(1234);
  std::vector<int> prompt(static_cast<size_t>(o.prompt));
  for (int& t : prompt) t = int(rng() % uint32_t(info.n_vocab));
  std::vector<float> state(model->state_size()), logits(size_t(info.n_vocab));
  Scratch scratch;
  const EvalOptions eval{.chunk = o.chunk, .pool = pool.get()};

  // A generated token reads every weight once, except the embedding: one row of it, and the
  // whole state (written back too, which is not counted). Each weight a token multiplies is one
  // FMA (2 flops).
  double bytes = 0, flops = 0, weight_bytes = 0;
  for (const TensorInfo& t : info.tensors) {
    int64_t n = 1;
    for (int64_t d : t.shape) n *= d;
    const DType dtype = *dtype_from_name(t.dtype);
    const double per =
        double(dtype_info(dtype).block_bytes) / double(dtype_info(dtype).block_elems);
    const bool emb = t.name == "emb.weight";
    // I8 adds one float32 scale per row.
    const double rows = t.shape.empty() || t.shape.back() == 0 ? 0.0 : double(n / t.shape.back());
    const double scales = dtype == DType::I8 ? 4 : 0;
    bytes += double(emb ? info.n_embd : n) * per + (emb ? 1 : rows) * scales;
    weight_bytes += double(n) * per + rows * scales;
    if (!emb && t.shape.size() == 2) flops += 2.0 * double(n);
  }

  const double state_bytes = double(state.size()) * 4;
  bytes += state_bytes;
  std::vector<double> prefill, generate, probe_gbps, fractions;
  double gen_rss_mb = 0, peak_mb = 0;
  for (int r = 0; r < o.runs; ++r) {
    model->init_state(state);
    start = std::chrono::steady_clock::now();
    model->forward_seq(prompt, state, logits, false, scratch, eval);
    prefill.push_back(double(o.prompt) / seconds_since(start));
    start = std::chrono::steady_clock::now();
    int token = prompt.back();
    for (int i = 0; i < o.gen; ++i) {
      model->forward(token, state, logits, scratch, eval);
      token = int(kernels::argmax(logits.data(), int64_t(logits.size())));
    }
    generate.push_back(double(o.gen) / seconds_since(start));
    gen_rss_mb = std::max(gen_rss_mb, rss_mb());
    // Every run uses the memory of the first; the peak is taken before any probe buffer exists.
    if (r == 0) peak_mb = peak_rss_mb();
    // The read bandwidth right after each run: a VM's varies by 30-50% over minutes, so the
    // fraction compares each run with a probe of the same moment (256 MiB: 8x a 32 MiB L3).
    probe_gbps.push_back(kernels::measure_read_bandwidth(*pool, size_t(256) << 20, 3));
    fractions.push_back(bytes * generate.back() / 1e9 / probe_gbps.back());
  }
  const double fma_gflops = kernels::measure_fma_peak(*pool);
  const Profile profile =
      o.profile ? profile_generation(*model, state, logits, scratch, eval, o.gen) : Profile{};
  const double prefill_tps = median(prefill), gen_tps = median(generate);
  const double read_gbps = bytes * gen_tps / 1e9, machine_read_gbps = median(probe_gbps);
  const double bandwidth_fraction = median(fractions);
  const double fma_fraction = prefill_tps * flops / 1e9 / fma_gflops;
  // The memory budget: weights + state + 64 MB.
  const double rss_budget_mb = (weight_bytes + double(state.size()) * 4) / 1e6 + 64;
  if (o.json) {
    nlohmann::json j = {{"model", info.path},
                        {"version", info.version},
                        {"threads", pool->size()},
                        {"load_s", load_s},
                        {"prefill_tokens", o.prompt},
                        {"prefill_tok_s", prefill_tps},
                        {"gen_tok_s", gen_tps},
                        {"bytes_per_token", bytes},
                        {"state_bytes", state_bytes},
                        {"read_gbps", read_gbps},
                        {"machine_read_gbps", machine_read_gbps},
                        {"bandwidth_fraction", bandwidth_fraction},
                        {"flops_per_token", flops},
                        {"machine_fma_gflops", fma_gflops},
                        {"fma_fraction", fma_fraction},
                        {"weights_mb", weight_bytes / 1e6},
                        {"rss_gen_mb", gen_rss_mb},
                        {"rss_peak_mb", peak_mb},
                        {"rss_budget_mb", rss_budget_mb},
                        {"kernels", kernels::variant_name(kernels::active_variant())},
                        {"cpu_features", cpu_features_string()},
                        {"prefetch", kernels::prefetch_hint()},
                        {"int8_activations", info.int8_activations},
                        {"repacked", info.repacked},
                        {"repack_cache", info.repack_cache},
                        {"repack_huge_mb", info.repack_huge_bytes / 1e6},
                        {"file_huge_mb", info.file_huge_bytes / 1e6}};
    if (o.profile)
      j["profile"] = {{"token_ms", 1e3 * profile.token_s},
                      {"products_ms", 1e3 * profile.products_s},
                      {"setup_ms", 1e3 * profile.setup_s},
                      {"products_per_token", profile.calls},
                      {"by_size", profile.by_size}};
    fmt::print("{}\n", j.dump());
    return;
  }
  fmt::print("model:      {} (RWKV-{}, {} layers x {}, vocab {}, {:.2f}M params)\n", info.path,
             info.version, info.n_layer, info.n_embd, info.n_vocab, double(info.n_params) / 1e6);
  fmt::print("threads:    {} ({} kernels{}{})\n", pool->size(),
             kernels::variant_name(kernels::active_variant()), prefetch_words(),
             info.int8_activations ? ", int8 activations for block weights" : "");
  fmt::print("cpu:        {}\n", cpu_features_string());
  fmt::print(
      "load:       {:.3f} s{}{}\n", load_s,
      info.repacked == "cached" ? fmt::format(" (repacked weights read from {})", info.repack_cache)
      : info.repacked == "mapped"
          ? fmt::format(" (repacked weights mapped from {}, {:.0f} MB of it by 2 MiB pages)",
                        info.repack_cache, double(info.repack_huge_bytes) / 1e6)
      : info.repacked == "built" && !info.repack_cache.empty()
          ? fmt::format(" (weights repacked, cached in {})", info.repack_cache)
      : info.repacked == "built" ? " (weights repacked in memory)"
                                 : "",
      info.file_huge_bytes > 0 ? fmt::format(" ({:.0f} MB of the model file mapped by 2 MiB pages)",
                                             double(info.file_huge_bytes) / 1e6)
                               : "");
  fmt::print(
      "prefill:    {:.1f} tok/s  (sequence mode, T={}, chunk {}, median of {}), {:.0f}% of "
      "the FMA peak ({:.0f} GFLOP/s)\n",
      prefill_tps, o.prompt, o.chunk, o.runs, 100 * fma_fraction, fma_gflops);
  fmt::print("generation: {:.1f} tok/s  (one token per call, median of {} x {})\n", gen_tps, o.runs,
             o.gen);
  fmt::print("prefill speedup over token-by-token: {:.2f}x\n", prefill_tps / gen_tps);
  fmt::print(
      "bytes read per token: {:.1f} MB (the state {:.1f} MB of it), effective {:.2f} GB/s; {:.0f}% "
      "of the read bandwidth measured after each run (median {:.1f} GB/s)\n",
      bytes / 1e6, state_bytes / 1e6, read_gbps, 100 * bandwidth_fraction, machine_read_gbps);
  fmt::print(
      "memory:     RSS {:.0f} MB while generating, {:.0f} MB peak; budget weights + state + 64 MB "
      "= {:.0f} MB{}\n",
      gen_rss_mb, peak_mb, rss_budget_mb,
      std::max(gen_rss_mb, peak_mb) <= rss_budget_mb ? "" : " (over)");
  if (!o.profile) return;
  fmt::print(
      "profile:    one more pass of {} tokens: {:.2f} ms a token, {:.2f} ms of it in {} weight "
      "products ({:.0f}%), {:.2f} ms of those on this thread before the others start\n",
      o.gen, 1e3 * profile.token_s, 1e3 * profile.products_s, profile.calls,
      100 * profile.products_s / profile.token_s, 1e3 * profile.setup_s);
  fmt::print("            {:>14} {:>12} {:>10} {:>12} {:>8}\n", "weights a call", "calls/token",
             "us a call", "setup us", "GB/s");
  for (const nlohmann::json& s : profile.by_size)
    fmt::print("            {:>11.3f} MB {:>12.0f} {:>10.1f} {:>12.2f} {:>8.1f}\n",
               s["weight_bytes"].get<double>() / 1e6, s["per_token"].get<double>(),
               s["call_us"].get<double>(), s["setup_us"].get<double>(), s["gbps"].get<double>());
}

}  // namespace

void add_bench_command(CLI::App& app) {
  auto* cmd = app.add_subcommand("bench", "Measure load time, prefill and generation speed");
  auto o = std::make_shared<BenchOptions>();
  o->model.add_to(*cmd, /*required=*/false);
  cmd->add_option("--prompt", o->prompt, "Prompt tokens for the prefill measurement (default 512)")
      ->check(kPositive);
  cmd->add_option("--gen", o->gen, "Tokens generated one by one (default 64)")->check(kPositive);
  cmd->add_option("--runs", o->runs, "Repetitions; medians are reported (default 3)")
      ->check(kPositive);
  cmd->add_option("--chunk", o->chunk, "Tokens per step in sequence mode (default 64)")
      ->check(kPositive);
  cmd->add_flag("--json", o->json, "Print one JSON object");
  cmd->add_flag("--profile", o->profile,
                "Then time one more generation pass by weight product: where a token's time goes");
  cmd->add_flag("--memory", o->memory,
                "Only measure this machine: memory read bandwidth and FMA peak");
  cmd->callback([o] { run(*o); });
}

}  // namespace rwkv::cli
