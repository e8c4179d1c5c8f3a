// The default model built into the library: a small byte-level RWKV-7 trained with `rwkv train`
// (models/default.safetensors; README says how it was made). The assembler's .incbin puts the
// file's bytes in the binary, so it needs no path and cannot go missing.
#include "io/readers.h"
#include "model/registry.h"

#ifdef RWKV_DEFAULT_MODEL_FILE
asm(".pushsection .rodata\n"
    ".balign 64\n"
    "rwkv_default_model_begin:\n"
    ".incbin \"" RWKV_DEFAULT_MODEL_FILE
    "\"\n"
    "rwkv_default_model_end:\n"
    ".popsection\n");
extern "C" const uint8_t rwkv_default_model_begin[], rwkv_default_model_end[];
#endif

namespace rwkv {

std::unique_ptr<Model> Model::load_default(const LoadOptions& options) {
#ifdef RWKV_DEFAULT_MODEL_FILE
  const std::string name = "(built-in default model)";
  Bytes bytes;
  bytes.data = {rwkv_default_model_begin,
                size_t(rwkv_default_model_end - rwkv_default_model_begin)};
  TensorMap map = read_safetensors(bytes, name);
  auto model = build_model(std::make_shared<TensorMap>(std::move(map)), options);
  return model;
#else
  (void)options;
  throw Error(
      "this build has no default model (models/default.safetensors was missing); "
      "give a model file");
#endif
}

}  // namespace rwkv
