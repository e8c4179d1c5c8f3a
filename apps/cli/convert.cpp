// `rwkv convert IN OUT.safetensors`: rewrite any supported model file as safetensors with the
// official tensor names and shapes (what every other reader of ours expects), atomically.
#include <fmt/format.h>

#include "cli.h"
#include "io/readers.h"

namespace rwkv::cli {

void add_convert_command(CLI::App& app) {
  auto* cmd = app.add_subcommand(
      "convert", "Rewrite a model file as safetensors with official tensor names and shapes");
  auto in = std::make_shared<std::string>();
  auto out = std::make_shared<std::string>();
  auto dtype = std::make_shared<std::string>("keep");
  cmd->add_option("input", *in, "Model file: .pth, .safetensors or rwkv.cpp .bin")
      ->required()
      ->check(CLI::ExistingFile);
  cmd->add_option("output", *out, "Output .safetensors file (replaced atomically)")->required();
  cmd->add_option("--dtype", *dtype, "Store every tensor as this type (default: keep each one's)")
      ->check(CLI::IsMember({"keep", "F32", "F16", "BF16"}, CLI::ignore_case));
  cmd->callback([=] {
    TensorMap map = read_tensor_map(*in);
    if (*dtype != "keep") {
      std::string upper = *dtype;
      for (char& c : upper) c = char(std::toupper(static_cast<unsigned char>(c)));
      map = cast_tensor_map(map, *dtype_from_name(upper));
    }
    map.metadata["converted_from"] = map.format;
    write_safetensors(map, *out);
    fmt::print(stderr, "wrote {} tensors to {}\n", map.size(), *out);
  });
}

}  // namespace rwkv::cli
