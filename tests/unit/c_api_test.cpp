// The C API gives the same logits as the C++ API and reports errors through rwkv_last_error.
#include "rwkv/rwkv.h"

#include <gtest/gtest.h>

#include "test_util.h"

namespace rwkv::test {
namespace {

TEST(CApi, ForwardMatchesExpectedLogits) {
  RWKV_REQUIRE_SHARED();
  const auto dir = shared_dir() / "testdata/tiny-rwkv";
  rwkv_model* m = rwkv_model_load((dir / "tiny-rwkv-5v2-730K-FP32.bin").c_str(), nullptr, 0);
  ASSERT_NE(m, nullptr) << rwkv_last_error();
  EXPECT_STREQ(rwkv_model_version(m), "5.2");
  EXPECT_EQ(rwkv_model_n_layer(m), 12);
  EXPECT_EQ(rwkv_model_n_embd(m), 64);
  ASSERT_EQ(rwkv_model_n_vocab(m), 256);
  std::vector<float> state(rwkv_model_state_size(m)), logits(256);
  rwkv_model_init_state(m, state.data());
  for (int t : {34, 105, 110}) ASSERT_EQ(rwkv_model_forward(m, t, state.data(), logits.data()), 0);
  auto want = read_f32(dir / "expected-logits-5v2-730K.bin");
  EXPECT_LE(diff(logits.data(), want.data(), 256).max_abs, 1e-4);
  EXPECT_EQ(rwkv_model_forward(m, 256, state.data(), logits.data()), -1);
  EXPECT_NE(std::string(rwkv_last_error()).find("outside the vocabulary"), std::string::npos);
  rwkv_model_free(m);
}

// The flag gives the C++ API's int8-activation model, logit for logit.
TEST(CApi, Int8ActivationsFlag) {
  RWKV_REQUIRE_SHARED();
  const std::string file =
      (shared_dir() / "testdata/tiny-rwkv/tiny-rwkv-7v0-834K-Q5_1.bin").string();
  rwkv_model* m = rwkv_model_load_flags(file.c_str(), nullptr, 0, RWKV_LOAD_INT8_ACTIVATIONS);
  ASSERT_NE(m, nullptr) << rwkv_last_error();
  std::vector<float> state(rwkv_model_state_size(m)), logits(256);
  rwkv_model_init_state(m, state.data());
  for (int t : {34, 105, 110}) ASSERT_EQ(rwkv_model_forward(m, t, state.data(), logits.data()), 0);
  rwkv_model_free(m);
  LoadOptions options;
  options.int8_activations = true;
  const RunResult int8 = run_tokens(*Model::load(file, options), {34, 105, 110});
  const RunResult exact = run_tokens(*Model::load(file), {34, 105, 110});
  EXPECT_EQ(diff(logits.data(), int8.logits.data() + 512, 256).max_abs, 0.0);
  EXPECT_GT(diff(logits.data(), exact.logits.data() + 512, 256).max_abs, 0.0);
  rwkv_model* mapped = rwkv_model_load_flags(
      file.c_str(), nullptr, 0, RWKV_LOAD_INT8_ACTIVATIONS | RWKV_LOAD_MAP_REPACK_CACHE);
  ASSERT_NE(mapped, nullptr) << rwkv_last_error();
  rwkv_model_init_state(mapped, state.data());
  for (int t : {34, 105, 110})
    ASSERT_EQ(rwkv_model_forward(mapped, t, state.data(), logits.data()), 0);
  rwkv_model_free(mapped);
  EXPECT_EQ(diff(logits.data(), int8.logits.data() + 512, 256).max_abs, 0.0);
  EXPECT_EQ(rwkv_model_load_flags(file.c_str(), nullptr, 0, 4u), nullptr);
  EXPECT_NE(std::string(rwkv_last_error()).find("unknown flags 4"), std::string::npos);
}

TEST(CApi, LoadErrors) {
  EXPECT_EQ(rwkv_model_load("/nonexistent.pth", nullptr, 0), nullptr);
  EXPECT_NE(std::string(rwkv_last_error()).find("/nonexistent.pth"), std::string::npos);
  EXPECT_EQ(rwkv_model_load(nullptr, nullptr, 0), nullptr);
  EXPECT_NE(std::string(rwkv_last_error()).find("NULL"), std::string::npos);
}

}  // namespace
}  // namespace rwkv::test
