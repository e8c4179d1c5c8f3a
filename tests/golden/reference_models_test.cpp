// Official-layout .pth checkpoints of every version (fp32 and bf16) against the outputs of the
// official implementation, with the tolerances of ../shared/testdata/reference/README.md.
#include <gtest/gtest.h>

#include "test_util.h"

namespace rwkv::test {
namespace {

class ReferenceModel : public ::testing::TestWithParam<std::string> {
 protected:
  std::filesystem::path root() const { return shared_dir() / "testdata/reference"; }
  std::unique_ptr<Model> load() const {
    return Model::load((root() / "models" / (GetParam() + ".pth")).string());
  }
  // Per row: max |diff| <= 1e-3 and mean |diff| <= 1e-4.
  void expect_rows_close(const std::vector<float>& got, const std::vector<float>& want,
                         size_t n_vocab) const {
    ASSERT_EQ(got.size(), want.size());
    for (size_t row = 0; row < want.size() / n_vocab; ++row) {
      DiffStats d = diff(got.data() + row * n_vocab, want.data() + row * n_vocab, n_vocab);
      EXPECT_LE(d.max_abs, 1e-3) << "row " << row;
      EXPECT_LE(d.mean_abs, 1e-4) << "row " << row;
    }
  }
};

TEST_P(ReferenceModel, Prompt16Logits) {
  RWKV_REQUIRE_SHARED();
  auto model = load();
  RunResult run = run_tokens(*model, read_tokens(root() / "tokens/tokens16.txt"));
  expect_rows_close(run.logits, read_f32(root() / "ref" / (GetParam() + ".prompt16.logits.f32")),
                    512);
}

TEST_P(ReferenceModel, Seq64LogitsAndState) {
  RWKV_REQUIRE_SHARED();
  auto model = load();
  RunResult run = run_tokens(*model, read_tokens(root() / "tokens/tokens64.txt"));
  expect_rows_close(run.logits, read_f32(root() / "ref" / (GetParam() + ".seq64.logits.f32")),
                    512);
  const auto state = read_f32(root() / "ref" / (GetParam() + ".seq64.state.f32"));
  ASSERT_EQ(run.state.size(), state.size());
  EXPECT_LE(max_rel_diff(run.state, state), 1e-3);
}

INSTANTIATE_TEST_SUITE_P(All, ReferenceModel,
                         ::testing::Values("rwkv4-ref-fp32", "rwkv4-ref-bf16", "rwkv5v1-ref-fp32",
                                           "rwkv5v1-ref-bf16", "rwkv5v2-ref-fp32",
                                           "rwkv5v2-ref-bf16", "rwkv6-ref-fp32", "rwkv6-ref-bf16",
                                           "rwkv7-ref-fp32", "rwkv7-ref-bf16"),
                         [](const auto& info) {
                           std::string s = info.param;
                           for (char& ch : s)
                             if (ch == '-') ch = '_';
                           return s;
                         });

TEST(ReferenceModels, DetectsVersionsLikeTheOfficialCode) {
  RWKV_REQUIRE_SHARED();
  const auto dir = shared_dir() / "testdata/reference/models";
  const std::pair<const char*, const char*> cases[] = {
      {"rwkv4-ref-bf16.pth", "4"},   {"rwkv5v1-ref-bf16.pth", "5.0"},
      {"rwkv5v2-ref-bf16.pth", "5.2"}, {"rwkv6-ref-bf16.pth", "6.0"},
      {"rwkv7-ref-bf16.pth", "7.0"}};
  for (const auto& [file, version] : cases) {
    auto model = Model::load((dir / file).string());
    EXPECT_EQ(model->info().version, version) << file;
    EXPECT_EQ(model->info().n_embd, 128);
    EXPECT_EQ(model->info().n_layer, 3);
    EXPECT_EQ(model->info().n_vocab, 512);
    EXPECT_FLOAT_EQ(model->info().ln_x_eps, std::string(version) == "4" ? 0.0f : 64e-5f);
    // v7's layer-0 v0/v1/v2 are ignored as the reference does, without a warning.
    EXPECT_TRUE(model->info().warnings.empty()) << file;
  }
  auto v6 = Model::load((dir / "rwkv6-ref-fp32.pth").string());
  EXPECT_EQ(v6->info().n_head, 2);
  EXPECT_EQ(v6->info().head_size, 64);
  EXPECT_EQ(v6->info().ffn_dim, 448);
  EXPECT_EQ(v6->info().lora.at("time_maa"), 32);
  EXPECT_EQ(v6->info().lora.at("time_decay"), 64);
  auto v7 = Model::load((dir / "rwkv7-ref-fp32.pth").string());
  EXPECT_EQ(v7->info().lora.at("w"), 32);
  EXPECT_EQ(v7->info().lora.at("g"), 64);
}

}  // namespace
}  // namespace rwkv::test
