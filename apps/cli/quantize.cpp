// `rwkv quantize IN OUT TYPE`: convert any supported model file to safetensors with quantized
// weights, following the per-tensor policy of engine/quantize.h, atomically.
#include "engine/quantize.h"

#include <fmt/format.h>

#include <chrono>
#include <map>
#include <thread>

#include "cli.h"
#include "io/readers.h"
#include "progress.h"

namespace rwkv::cli {

namespace {

const std::vector<std::string> kTypes = {"Q8_0", "I8",  "Q5_0", "Q5_1", "Q4_0",
                                         "Q4_1", "F16", "BF16", "F32"};

DType parse_type(std::string s) {
  for (char& c : s) c = char(std::toupper(static_cast<unsigned char>(c)));
  return *dtype_from_name(s);
}

}  // namespace

void add_quantize_command(CLI::App& app) {
  auto* cmd = app.add_subcommand(
      "quantize", "Convert a model to safetensors with quantized weights (per-tensor policy)");
  auto in = std::make_shared<std::string>();
  auto out = std::make_shared<std::string>();
  auto type = std::make_shared<std::string>();
  auto head = std::make_shared<std::string>();
  auto emb = std::make_shared<std::string>();
  auto lora = std::make_shared<std::string>();
  auto search = std::make_shared<bool>(false);
  auto threads = std::make_shared<int>(0);
  cmd->add_option("input", *in, "Model file: .pth, .safetensors or rwkv.cpp .bin")
      ->required()
      ->check(CLI::ExistingFile);
  cmd->add_option("output", *out, "Output .safetensors file (replaced atomically)")->required();
  cmd->add_option("type", *type,
                  "Q8_0, I8 (int8 per output channel), Q5_0, Q5_1, Q4_0, Q4_1, F16, BF16 or F32")
      ->required()
      ->check(CLI::IsMember(kTypes, CLI::ignore_case));
  cmd->add_option("--head", *head, "Type of head.weight instead of the policy's")
      ->check(CLI::IsMember(kTypes, CLI::ignore_case));
  cmd->add_option("--emb", *emb, "Type of emb.weight instead of the policy's")
      ->check(CLI::IsMember(kTypes, CLI::ignore_case));
  cmd->add_option("--lora", *lora, "Type of the RWKV-6/7 LoRA matrices instead of the policy's")
      ->check(CLI::IsMember(kTypes, CLI::ignore_case));
  cmd->add_flag("--search", *search,
                "Search each block's scale for the least squared error instead of ggml's "
                "round-to-nearest (lower weight error, not reliably lower KL; no effect on I8)");
  cmd->add_option("--threads", *threads, "Threads (default: all cores)")->check(kNonNegative);
  cmd->callback([=] {
    const DType target = parse_type(*type);
    QuantizeOptions o;
    o.method = *search ? QuantMethod::kSearch : QuantMethod::kReference;
    if (!head->empty()) o.head = parse_type(*head);
    if (!emb->empty()) o.emb = parse_type(*emb);
    if (!lora->empty()) o.lora = parse_type(*lora);
    const int n_threads =
        *threads > 0 ? *threads : std::max(1, int(std::thread::hardware_concurrency()));
    ThreadPool pool(n_threads);
    o.pool = &pool;
    ProgressBar bar("quantizing");
    o.progress = [&](uint64_t done, uint64_t total) {
      bar.update(double(done), double(total),
                 fmt::format("{:.0f}M / {:.0f}M weights", double(done) / 1e6, double(total) / 1e6));
    };
    const auto start = std::chrono::steady_clock::now();
    auto input = std::make_shared<const TensorMap>(read_tensor_map(*in));
    uint64_t in_bytes = 0;
    for (const std::string& name : input->names()) in_bytes += input->at(name).nbytes;
    TensorMap map = quantize_model(input, target, o);
    bar.finish();

    // What went where, for the summary line.
    std::map<std::string, std::pair<int, uint64_t>> by_type;
    uint64_t out_bytes = 0;
    for (const std::string& name : map.names()) {
      const Tensor& t = map.at(name);
      auto& [count, bytes] = by_type[std::string(dtype_name(t.dtype))];
      ++count;
      bytes += t.nbytes;
      out_bytes += t.nbytes;
    }
    if (isatty(2))
      fmt::print(stderr, "writing {} to {}...\n", human_bytes(double(out_bytes)), *out);
    write_safetensors(map, *out);
    std::string parts;
    for (const auto& [name, cb] : by_type)
      parts += fmt::format("{}{} x{} ({})", parts.empty() ? "" : ", ", name, cb.first,
                           human_bytes(double(cb.second)));
    const double secs =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    fmt::print(stderr, "wrote {} ({} -> {}; {}) in {:.1f} s\n", *out, human_bytes(double(in_bytes)),
               human_bytes(double(out_bytes)), parts, secs);
  });
}

}  // namespace rwkv::cli
