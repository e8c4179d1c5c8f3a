// `rwkv info MODEL`: what a model file holds, as text or JSON.
#include <fmt/format.h>

#include <map>
#include <nlohmann/json.hpp>

#include "cli.h"

namespace rwkv::cli {

namespace {

std::string shape_text(const std::vector<int64_t>& shape) {
  std::string s = "(";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + ")";
}

void print_info(const ModelInfo& info, bool json, bool tensors) {
  if (json) {
    nlohmann::json j = {{"path", info.path},         {"format", info.format},
                        {"version", info.version},   {"n_layer", info.n_layer},
                        {"n_embd", info.n_embd},     {"n_vocab", info.n_vocab},
                        {"n_head", info.n_head},     {"head_size", info.head_size},
                        {"ffn_dim", info.ffn_dim},   {"n_params", info.n_params},
                        {"lora", info.lora},         {"warnings", info.warnings}};
    if (info.version != "4") j["ln_x_eps"] = info.ln_x_eps;
    nlohmann::json list = nlohmann::json::array();
    for (const TensorInfo& t : info.tensors)
      list.push_back({{"name", t.name}, {"dtype", t.dtype}, {"shape", t.shape}});
    j["tensors"] = list;
    fmt::print("{}\n", j.dump(1));
    return;
  }
  fmt::print("file:       {}\n", info.path);
  fmt::print("format:     {}\n", info.format);
  fmt::print("version:    RWKV-{}\n", info.version);
  fmt::print("n_layer:    {}\nn_embd:     {}\nn_vocab:    {}\n", info.n_layer, info.n_embd,
             info.n_vocab);
  if (info.n_head) fmt::print("heads:      {} x {}\n", info.n_head, info.head_size);
  fmt::print("ffn_dim:    {}\n", info.ffn_dim);
  for (const auto& [name, rank] : info.lora) fmt::print("lora {:<6} {}\n", name + ":", rank);
  if (info.version != "4") fmt::print("ln_x eps:   {:g}\n", info.ln_x_eps);
  fmt::print("parameters: {} ({:.2f}M)\n", info.n_params, double(info.n_params) / 1e6);
  std::map<std::string, int> by_dtype;
  for (const TensorInfo& t : info.tensors) ++by_dtype[t.dtype];
  std::string counts;
  for (const auto& [dtype, n] : by_dtype) counts += fmt::format(" {} x{}", dtype, n);
  fmt::print("tensors:    {}:{}\n", info.tensors.size(), counts);
  if (tensors)
    for (const TensorInfo& t : info.tensors)
      fmt::print("  {:<40} {:<5} {}\n", t.name, t.dtype, shape_text(t.shape));
}

}  // namespace

void add_info_command(CLI::App& app) {
  auto* cmd = app.add_subcommand("info", "Print a model's version, dims, parameters and tensors");
  auto opts = std::make_shared<ModelOptions>();
  auto json = std::make_shared<bool>(false);
  auto brief = std::make_shared<bool>(false);
  opts->add_to(*cmd);
  cmd->add_flag("--json", *json, "Print one JSON object");
  cmd->add_flag("--brief", *brief, "Leave out the per-tensor list");
  cmd->callback([=] { print_info(opts->load()->info(), *json, !*brief); });
}

}  // namespace rwkv::cli
