// State objects and state files: round trips, clones, and every way a file can be refused.
#include "rwkv/state.h"

#include <gtest/gtest.h>

#include "test_util.h"

namespace rwkv::test {
namespace {

class StateFile : public ::testing::Test {
 protected:
  void SetUp() override {
    if (shared_dir().empty()) GTEST_SKIP() << "SKIPPED: ../shared/testdata not found";
    model_ = Model::load(ref("rwkv7-ref-fp32.pth"));
    dir_ = temp_dir();
  }
  std::string ref(const std::string& file) const {
    return (shared_dir() / "testdata/reference/models" / file).string();
  }
  // A state after a few tokens, saved to `name`.
  State saved(const std::string& name) {
    State s(*model_);
    std::vector<float> logits(512);
    const std::vector<int> tokens = {1, 2, 3, 4};
    model_->forward_seq(tokens, s.data(), logits, false, scratch_);
    s.save((dir_ / name).string());
    return s;
  }
  std::string load_error(const Model& model, const std::filesystem::path& p) {
    try {
      State::load(model, p.string());
    } catch (const Error& e) {
      std::string msg = e.what();
      EXPECT_NE(msg.find(p.string()), std::string::npos) << msg;
      return msg;
    }
    return "";
  }
  std::unique_ptr<Model> model_;
  std::filesystem::path dir_;
  Scratch scratch_;
};

TEST_F(StateFile, RoundTripIsExact) {
  State s = saved("s.state");
  State back = State::load(*model_, (dir_ / "s.state").string());
  EXPECT_EQ(std::vector<float>(back.data().begin(), back.data().end()),
            std::vector<float>(s.data().begin(), s.data().end()));
  EXPECT_EQ(read_bytes(dir_ / "s.state").size(), 64 + model_->state_size() * 4);
}

TEST_F(StateFile, CloneIsIndependentAndResetRestoresInitial) {
  State a = saved("a.state");
  State b = a;
  std::vector<float> logits(512);
  model_->forward(5, b.data(), logits);
  EXPECT_NE(std::vector<float>(a.data().begin(), a.data().end()),
            std::vector<float>(b.data().begin(), b.data().end()));
  b.reset();
  State initial(*model_);
  EXPECT_EQ(std::vector<float>(b.data().begin(), b.data().end()),
            std::vector<float>(initial.data().begin(), initial.data().end()));
}

TEST_F(StateFile, CorruptPayloadIsRefused) {
  saved("c.state");
  auto bytes = read_bytes(dir_ / "c.state");
  bytes[64 + 1000] ^= 0x10;
  write_bytes(dir_ / "c.state", bytes);
  EXPECT_NE(load_error(*model_, dir_ / "c.state").find("checksum mismatch"), std::string::npos);
}

TEST_F(StateFile, TruncatedFileIsRefused) {
  saved("t.state");
  auto bytes = read_bytes(dir_ / "t.state");
  bytes.resize(bytes.size() - 4);
  write_bytes(dir_ / "t.state", bytes);
  EXPECT_NE(load_error(*model_, dir_ / "t.state").find("truncated state file"), std::string::npos);
  bytes.resize(30);
  write_bytes(dir_ / "t.state", bytes);
  EXPECT_NE(load_error(*model_, dir_ / "t.state").find("truncated state file"), std::string::npos);
}

TEST_F(StateFile, WrongMagicIsRefused) {
  write_bytes(dir_ / "m.state", std::vector<uint8_t>(200, 'x'));
  EXPECT_NE(load_error(*model_, dir_ / "m.state").find("not an rwkv state file"),
            std::string::npos);
}

TEST_F(StateFile, OtherDimsAreRefused) {
  saved("d.state");
  auto tiny = Model::load((shared_dir() / "testdata/tiny-rwkv/tiny-rwkv-7v0-834K-FP32.bin").string());
  EXPECT_NE(load_error(*tiny, dir_ / "d.state")
                .find("state is for RWKV-7.0 n_layer=3 n_embd=128 head_size=64 but the model is "
                      "RWKV-7.0 n_layer=12 n_embd=64 head_size=64"),
            std::string::npos);
  auto v6 = Model::load(ref("rwkv6-ref-fp32.pth"));
  EXPECT_NE(load_error(*v6, dir_ / "d.state").find("state is for RWKV-7.0"), std::string::npos);
}

TEST_F(StateFile, AnotherModelOfTheSameShapeIsRefusedUnlessAsked) {
  saved("o.state");
  auto bf16 = Model::load(ref("rwkv7-ref-bf16.pth"));
  EXPECT_NE(load_error(*bf16, dir_ / "o.state").find("saved by another model"), std::string::npos);
  EXPECT_NO_THROW(State::load(*bf16, (dir_ / "o.state").string(), /*any_model=*/true));
  // The same weights in another file format are the same model.
  auto again = Model::load(ref("rwkv7-ref-fp32.pth"));
  EXPECT_NO_THROW(State::load(*again, (dir_ / "o.state").string()));
}

TEST_F(StateFile, SaveIsAtomic) {
  saved("keep.state");
  const auto before = read_bytes(dir_ / "keep.state");
  State s(*model_);
  EXPECT_THROW(s.save((dir_ / "missing-dir" / "x.state").string()), Error);
  EXPECT_EQ(read_bytes(dir_ / "keep.state"), before);
  for (const auto& e : std::filesystem::directory_iterator(dir_))
    EXPECT_EQ(e.path().string().find(".tmp."), std::string::npos) << e.path();
}

// The reference's own state after 64 tokens, fed in sequence mode.
TEST(ReferenceState, Seq64InSequenceModeMatchesOfficialState) {
  RWKV_REQUIRE_SHARED();
  const auto root = shared_dir() / "testdata/reference";
  for (std::string stem : {"rwkv4-ref-fp32", "rwkv5v1-ref-bf16", "rwkv5v2-ref-fp32",
                           "rwkv6-ref-bf16", "rwkv7-ref-fp32", "rwkv7-ref-bf16"}) {
    auto model = Model::load((root / "models" / (stem + ".pth")).string());
    State state(*model);
    const auto tokens = read_tokens(root / "tokens/tokens64.txt");
    std::vector<float> logits(512 * tokens.size());
    Scratch scratch;
    model->forward_seq(tokens, state.data(), logits, true, scratch);
    const auto want_state = read_f32(root / "ref" / (stem + ".seq64.state.f32"));
    EXPECT_LE(max_rel_diff({state.data().begin(), state.data().end()}, want_state), 1e-3) << stem;
    const auto want = read_f32(root / "ref" / (stem + ".seq64.seqmode.logits.f32"));
    for (size_t row = 0; row < tokens.size(); ++row) {
      DiffStats d = diff(logits.data() + row * 512, want.data() + row * 512, 512);
      EXPECT_LE(d.max_abs, 1e-3) << stem << " row " << row;
      EXPECT_LE(d.mean_abs, 1e-4) << stem << " row " << row;
    }
  }
}

}  // namespace
}  // namespace rwkv::test
