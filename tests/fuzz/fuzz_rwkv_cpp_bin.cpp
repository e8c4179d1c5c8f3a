// libFuzzer target: the rwkv.cpp .bin reader, including the transforms it undoes, and the model
// builder that checks shapes. Any input must end in a TensorMap or an rwkv::Error.
#include <cstddef>
#include <cstdint>
#include <memory>

#include "io/readers.h"
#include "model/registry.h"
#include "rwkv/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  rwkv::Bytes bytes{{data, size}, nullptr};
  try {
    auto map = std::make_shared<rwkv::TensorMap>(rwkv::read_rwkv_cpp_bin(bytes, "fuzz.bin"));
    auto model = rwkv::build_model(map, {});
    std::vector<float> state(model->state_size()), logits(size_t(model->info().n_vocab));
    model->init_state(state);
    if (state.size() < (1u << 22) && logits.size() < (1u << 20)) model->forward(0, state, logits);
  } catch (const rwkv::Error&) {
  }
  return 0;
}
