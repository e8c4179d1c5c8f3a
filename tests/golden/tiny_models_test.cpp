// The real trained tiny models of ../shared/testdata/tiny-rwkv (rwkv.cpp .bin files of every
// version and stored type) against their expected logits, and the 200-position references of
// ../shared/testdata/reference/ref/tiny.
#include <gtest/gtest.h>

#include "test_util.h"

namespace rwkv::test {
namespace {

struct ExpectedCase {
  std::string stem;     // e.g. "4v0-660K"
  std::string type;     // FP32, FP16, Q5_0, Q5_1
  double max_abs;       // our bound on max |logit - expected|
  double upstream_sum;  // rwkv.cpp's own signed sum of differences (0 for FP32: bound 0.001)
};

std::ostream& operator<<(std::ostream& os, const ExpectedCase& c) {
  return os << c.stem << "-" << c.type;
}

// Max-abs bounds: FP32 1e-4 (the requirement); reduced-precision files get bounds just
// above what exact dequantization gives, so a decoding regression fails.
const ExpectedCase kExpectedCases[] = {
    ExpectedCase{"4v0-660K", "FP32", 1e-4, 0},
    ExpectedCase{"4v0-660K", "FP16", 0.005, -0.0137},
    ExpectedCase{"4v0-660K", "Q5_0", 0.15, -0.170},
    ExpectedCase{"4v0-660K", "Q5_1", 0.15, 0.278},
    ExpectedCase{"5v1-730K", "FP32", 1e-4, 0},
    ExpectedCase{"5v1-730K", "FP16", 0.01, -0.290},
    ExpectedCase{"5v1-730K", "Q5_0", 2.0, -163.4},
    ExpectedCase{"5v1-730K", "Q5_1", 0.4, -18.0},
    ExpectedCase{"5v2-730K", "FP32", 1e-4, 0},
    ExpectedCase{"5v2-730K", "FP16", 0.01, 0.456},
    ExpectedCase{"5v2-730K", "Q5_0", 0.6, 25.3},
    ExpectedCase{"5v2-730K", "Q5_1", 0.5, 48.1},
    ExpectedCase{"6v0-3m", "Q5_0", 0.2, -27.3},
    ExpectedCase{"6v0-3m", "Q5_1", 0.1, 3.58},
    ExpectedCase{"7v0-834K", "FP32", 1e-4, 0},
    ExpectedCase{"7v0-834K", "FP16", 0.005, 0.0058},
    ExpectedCase{"7v0-834K", "Q5_0", 0.01, -0.064},
    ExpectedCase{"7v0-834K", "Q5_1", 0.01, -0.065},
};

class TinyExpectedLogits : public ::testing::TestWithParam<ExpectedCase> {};

TEST_P(TinyExpectedLogits, ReproducesExpectedLogitsAfter34_105_110) {
  RWKV_REQUIRE_SHARED();
  const ExpectedCase& c = GetParam();
  const auto dir = shared_dir() / "testdata/tiny-rwkv";
  auto model = Model::load((dir / ("tiny-rwkv-" + c.stem + "-" + c.type + ".bin")).string());
  const std::vector<float> expected = read_f32(dir / ("expected-logits-" + c.stem + ".bin"));
  RunResult run = run_tokens(*model, {34, 105, 110});
  ASSERT_EQ(expected.size(), 256u);
  const float* last = run.logits.data() + 2 * 256;
  DiffStats d = diff(last, expected.data(), 256);
  EXPECT_LE(d.max_abs, c.max_abs);
  // Upstream requires |sum| <= 1.05 * bound with bound = its own sum (0.001 for FP32). Our
  // quantized matmuls dequantize exactly where ggml also rounds activations to 8 bits, so the sum
  // may differ from upstream's by the FP32 tolerance on mean |diff| (1e-4) over 256 logits.
  const double bound = c.type == "FP32" ? 1.05 * 0.001 : 1.05 * std::abs(c.upstream_sum) + 256e-4;
  EXPECT_LE(std::abs(d.sum), bound) << "sum of differences " << d.sum;
}

INSTANTIATE_TEST_SUITE_P(All, TinyExpectedLogits, ::testing::ValuesIn(kExpectedCases),
                         [](const auto& info) {
                           std::string s = info.param.stem + "_" + info.param.type;
                           for (char& ch : s)
                             if (!std::isalnum(static_cast<unsigned char>(ch))) ch = '_';
                           return s;
                         });

// Sequence mode on a pool of 3 threads (matrix rows, WKV heads and the layers' elementwise work
// split across them) gives the very bits of the calling thread alone, exact and, for quantized
// files, with int8 activations.
TEST_P(TinyExpectedLogits, AThreadPoolChangesNoBit) {
  RWKV_REQUIRE_SHARED();
  const ExpectedCase& c = GetParam();
  const std::string file =
      (shared_dir() / "testdata/tiny-rwkv" / ("tiny-rwkv-" + c.stem + "-" + c.type + ".bin"))
          .string();
  const std::vector<int> tokens = {34,  105, 110, 32, 116, 104, 101, 32,  119, 111, 114, 108,
                                   100, 46,  10,  84, 104, 101, 32,  101, 110, 100, 33,  63};
  ThreadPool pool(3);
  for (bool int8 : {false, true}) {
    if (int8 && c.type[0] != 'Q') continue;
    LoadOptions options;
    options.int8_activations = int8;
    auto model = Model::load(file, options);
    std::vector<float> state[2], logits[2];
    for (int with_pool = 0; with_pool < 2; ++with_pool) {
      state[with_pool].resize(model->state_size());
      logits[with_pool].resize(tokens.size() * size_t(model->info().n_vocab));
      model->init_state(state[with_pool]);
      Scratch scratch;
      model->forward_seq(tokens, state[with_pool], logits[with_pool], true, scratch,
                         {.chunk = 16, .pool = with_pool ? &pool : nullptr});
    }
    EXPECT_EQ(logits[0], logits[1]) << (int8 ? "int8 activations" : "exact");
    EXPECT_EQ(state[0], state[1]) << (int8 ? "int8 activations" : "exact");
  }
}

class TinyInt8Activations : public ::testing::TestWithParam<ExpectedCase> {};

// --int8-activations on rwkv.cpp's own quantized files: the logits after 34 105 110 stay within
// the bound of exact decoding above and move only a little from exact decoding, and sequence
// mode agrees with token-by-token generation bit for bit.
TEST_P(TinyInt8Activations, StayCloseToExactAndAgreeAcrossModes) {
  RWKV_REQUIRE_SHARED();
  const ExpectedCase& c = GetParam();
  const auto dir = shared_dir() / "testdata/tiny-rwkv";
  const std::string file = (dir / ("tiny-rwkv-" + c.stem + "-" + c.type + ".bin")).string();
  LoadOptions options;
  options.int8_activations = true;
  auto model = Model::load(file, options);
  auto exact_model = Model::load(file);
  const std::vector<float> expected = read_f32(dir / ("expected-logits-" + c.stem + ".bin"));
  RunResult run = run_tokens(*model, {34, 105, 110});
  RunResult exact = run_tokens(*exact_model, {34, 105, 110});
  const float* last = run.logits.data() + 2 * 256;
  const DiffStats d = diff(last, expected.data(), 256);
  const DiffStats moved = diff(last, exact.logits.data() + 2 * 256, 256);
  EXPECT_LE(d.max_abs, c.max_abs);
  // Measured: 0.017-0.095 over these files.
  EXPECT_GT(moved.max_abs, 0.0) << "the int8 path was not taken";
  EXPECT_LE(moved.max_abs, 0.15);

  const std::vector<int> tokens = {34,  105, 110, 32, 116, 104, 101, 32,  119, 111, 114, 108,
                                   100, 46,  10,  84, 104, 101, 32,  101, 110, 100, 33,  63};
  RunResult rnn = run_tokens(*model, tokens);
  std::vector<float> state(model->state_size()), logits(rnn.logits.size());
  model->init_state(state);
  Scratch scratch;
  model->forward_seq(tokens, state, logits, true, scratch, {.chunk = 16});
  EXPECT_EQ(diff(logits.data(), rnn.logits.data(), logits.size()).max_abs, 0.0);
  EXPECT_EQ(diff(state.data(), rnn.state.data(), state.size()).max_abs, 0.0);
}

std::vector<ExpectedCase> quantized_cases() {
  std::vector<ExpectedCase> out;
  for (const ExpectedCase& c : kExpectedCases)
    if (c.type[0] == 'Q') out.push_back(c);
  return out;
}

INSTANTIATE_TEST_SUITE_P(All, TinyInt8Activations, ::testing::ValuesIn(quantized_cases()),
                         [](const auto& info) {
                           std::string s = info.param.stem + "_" + info.param.type;
                           for (char& ch : s)
                             if (!std::isalnum(static_cast<unsigned char>(ch))) ch = '_';
                           return s;
                         });

struct Text200Case {
  std::string file;      // model file name in tiny-rwkv/
  std::string ref_stem;  // file stem in reference/ref/tiny/
  float ln_x_eps;        // 0 = the file's default
};

std::ostream& operator<<(std::ostream& os, const Text200Case& c) {
  return os << c.ref_stem << (c.ln_x_eps > 0 ? " with --ln-x-eps" : "");
}

class TinyText200 : public ::testing::TestWithParam<Text200Case> {};

TEST_P(TinyText200, MatchesReferenceAtAll200PositionsAndFinalState) {
  RWKV_REQUIRE_SHARED();
  const Text200Case& c = GetParam();
  const auto root = shared_dir() / "testdata";
  LoadOptions options;
  if (c.ln_x_eps > 0) options.ln_x_eps = c.ln_x_eps;
  auto model = Model::load((root / "tiny-rwkv" / c.file).string(), options);
  const auto tokens = read_tokens(root / "reference/tokens/tokens_text200_bytes.txt");
  ASSERT_EQ(tokens.size(), 200u);
  RunResult run = run_tokens(*model, tokens);
  const auto ref_dir = root / "reference/ref/tiny";
  const auto expected = read_f32(ref_dir / (c.ref_stem + ".text200.logits.f32"));
  ASSERT_EQ(expected.size(), run.logits.size());
  DiffStats d = diff(run.logits.data(), expected.data(), expected.size());
  EXPECT_LE(d.max_abs, 2e-3);
  const auto state = read_f32(ref_dir / (c.ref_stem + ".text200.state.f32"));
  ASSERT_EQ(state.size(), run.state.size());
  EXPECT_LE(max_rel_diff(run.state, state), 1e-3);

  // Sequence mode against the reference's sequence mode.
  std::vector<float> seq_state(model->state_size()), seq_logits(expected.size());
  model->init_state(seq_state);
  Scratch scratch;
  model->forward_seq(tokens, seq_state, seq_logits, true, scratch);
  const auto expected_seq = read_f32(ref_dir / (c.ref_stem + ".text200.seqmode.logits.f32"));
  ASSERT_EQ(expected_seq.size(), seq_logits.size());
  EXPECT_LE(diff(seq_logits.data(), expected_seq.data(), seq_logits.size()).max_abs, 2e-3);
  EXPECT_LE(max_rel_diff(seq_state, state), 1e-3);
}

INSTANTIATE_TEST_SUITE_P(
    All, TinyText200,
    ::testing::Values(
        Text200Case{"tiny-rwkv-4v0-660K-FP32.bin", "tiny-rwkv-4v0-660K-FP32", 0},
        // rwkv.cpp's own convention (eps 1e-5) is the default for its v5 files ...
        Text200Case{"tiny-rwkv-5v1-730K-FP32.bin", "tiny-rwkv-5v1-730K-FP32.lnx-eps1e-5", 0},
        Text200Case{"tiny-rwkv-5v2-730K-FP32.bin", "tiny-rwkv-5v2-730K-FP32.lnx-eps1e-5", 0},
        // ... and the flag gives the official 64e-5.
        Text200Case{"tiny-rwkv-5v1-730K-FP32.bin", "tiny-rwkv-5v1-730K-FP32", 64e-5f},
        Text200Case{"tiny-rwkv-5v2-730K-FP32.bin", "tiny-rwkv-5v2-730K-FP32", 64e-5f},
        Text200Case{"tiny-rwkv-6v0-3m-Q5_0.bin", "tiny-rwkv-6v0-3m-Q5_0", 0},
        Text200Case{"tiny-rwkv-6v0-3m-Q5_1.bin", "tiny-rwkv-6v0-3m-Q5_1", 0},
        Text200Case{"tiny-rwkv-7v0-834K-FP32.bin", "tiny-rwkv-7v0-834K-FP32", 0}),
    [](const auto& info) {
      std::string s = info.param.ref_stem + (info.param.ln_x_eps > 0 ? "_eps_flag" : "");
      for (char& ch : s)
        if (!std::isalnum(static_cast<unsigned char>(ch))) ch = '_';
      return s;
    });

TEST(TinyModels, DetectsVersionsAndDims) {
  RWKV_REQUIRE_SHARED();
  const auto dir = shared_dir() / "testdata/tiny-rwkv";
  auto v4 = Model::load((dir / "tiny-rwkv-4v0-660K-FP16.bin").string());
  EXPECT_EQ(v4->info().version, "4");
  EXPECT_EQ(v4->info().n_layer, 4);
  EXPECT_EQ(v4->info().n_embd, 128);
  EXPECT_EQ(v4->info().n_vocab, 256);
  EXPECT_EQ(v4->info().format, "rwkv.cpp bin v100");
  auto v5 = Model::load((dir / "tiny-rwkv-5v2-730K-Q5_1.bin").string());
  EXPECT_EQ(v5->info().version, "5.2");
  EXPECT_EQ(v5->info().n_head, 8);
  EXPECT_EQ(v5->info().head_size, 8);
  EXPECT_FLOAT_EQ(v5->info().ln_x_eps, 1e-5f);
  auto v6 = Model::load((dir / "tiny-rwkv-6v0-3m-Q5_0.bin").string());
  EXPECT_EQ(v6->info().version, "6.0");
  EXPECT_EQ(v6->info().lora.at("time_maa"), 32);
  EXPECT_EQ(v6->info().lora.at("time_decay"), 64);
  EXPECT_FLOAT_EQ(v6->info().ln_x_eps, 64e-5f);
  auto v7 = Model::load((dir / "tiny-rwkv-7v0-834K-FP32.bin").string());
  EXPECT_EQ(v7->info().version, "7.0");
  EXPECT_EQ(v7->info().n_layer, 12);
  EXPECT_EQ(v7->info().lora.at("w"), 32);
  EXPECT_TRUE(v7->info().warnings.empty());
}

}  // namespace
}  // namespace rwkv::test
