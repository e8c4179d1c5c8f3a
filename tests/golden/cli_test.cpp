// The `rwkv` command end to end: logits against expected values, file conversion, and that bad
// input ends in one clear line on stderr and a non-zero exit.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <nlohmann/json.hpp>

#include "core/cpu.h"
#include "test_util.h"

namespace rwkv::test {
namespace {

class Cli : public ::testing::Test {
 protected:
  void SetUp() override {
    if (shared_dir().empty()) GTEST_SKIP() << "SKIPPED: ../shared/testdata not found";
    cli_ = cli_path();
    dir_ = temp_dir();
  }
  CommandResult run(const std::string& args) { return run_shell(cli_ + " " + args, dir_); }
  std::string tiny(const std::string& file) {
    return (shared_dir() / "testdata/tiny-rwkv" / file).string();
  }
  std::string reference(const std::string& file) {
    return (shared_dir() / "testdata/reference/models" / file).string();
  }
  // Asserts a failed run printed exactly one line, starting with "error: " and containing `what`.
  void expect_error(const CommandResult& r, const std::string& what) {
    EXPECT_NE(r.exit_code, 0);
    EXPECT_EQ(r.err.rfind("error: ", 0), 0u) << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
    EXPECT_NE(r.err.find(what), std::string::npos) << r.err;
  }
  std::string cli_;
  std::filesystem::path dir_;
};

TEST_F(Cli, LogitsOutMatchesExpected) {
  const auto out = dir_ / "logits.f32";
  auto r = run("logits " + tiny("tiny-rwkv-7v0-834K-FP32.bin") + " --tokens '34 105 110' --out " +
               out.string());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto got = read_f32(out);
  auto want = read_f32(shared_dir() / "testdata/tiny-rwkv/expected-logits-7v0-834K.bin");
  ASSERT_EQ(got.size(), 256u);
  EXPECT_LE(diff(got.data(), want.data(), 256).max_abs, 1e-4);
}

TEST_F(Cli, LogitsAllWritesEveryPositionAndTopPrintsLargest) {
  const auto out = dir_ / "all.f32";
  auto r = run("logits " + tiny("tiny-rwkv-4v0-660K-FP32.bin") +
               " --tokens 34,105,110 --all --top 2 --out " + out.string());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto got = read_f32(out);
  ASSERT_EQ(got.size(), 3u * 256);
  auto want = read_f32(shared_dir() / "testdata/tiny-rwkv/expected-logits-4v0-660K.bin");
  EXPECT_LE(diff(got.data() + 512, want.data(), 256).max_abs, 1e-4);
  // --top prints one line per position with the largest logit first.
  EXPECT_EQ(std::count(r.out.begin(), r.out.end(), '\n'), 3);
  const float* last = got.data() + 512;
  const int best = int(std::max_element(last, last + 256) - last);
  EXPECT_NE(r.out.find("position 2: " + std::to_string(best) + ":"), std::string::npos) << r.out;
}

TEST_F(Cli, InfoJson) {
  auto r = run("info --json " + reference("rwkv7-ref-bf16.pth"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["version"], "7.0");
  EXPECT_EQ(j["format"], "pth");
  EXPECT_EQ(j["n_layer"], 3);
  EXPECT_EQ(j["n_head"], 2);
  EXPECT_EQ(j["head_size"], 64);
  EXPECT_EQ(j["tensors"][0]["name"], "emb.weight");
  EXPECT_EQ(j["tensors"][0]["dtype"], "BF16");
  EXPECT_EQ(j["tensors"][0]["shape"], nlohmann::json({512, 128}));
  int64_t total = 0;
  for (const auto& t : j["tensors"]) {
    int64_t n = 1;
    for (int64_t d : t["shape"]) n *= d;
    total += n;
  }
  EXPECT_EQ(j["n_params"], total);
}

// The same weights as .pth and as safetensors (written by `rwkv convert`) give identical logits.
TEST_F(Cli, SafetensorsAndPthGiveIdenticalLogits) {
  for (std::string stem :
       {"rwkv4-ref-fp32", "rwkv5v2-ref-bf16", "rwkv6-ref-bf16", "rwkv7-ref-fp32"}) {
    const auto st = dir_ / (stem + ".safetensors");
    auto c = run("convert " + reference(stem + ".pth") + " " + st.string());
    ASSERT_EQ(c.exit_code, 0) << c.err;
    const auto a = dir_ / "a.f32", b = dir_ / "b.f32";
    const std::string tokens = " --tokens '5 17 0 511 42 42 7' --all --out ";
    ASSERT_EQ(run("logits " + reference(stem + ".pth") + tokens + a.string()).exit_code, 0);
    ASSERT_EQ(run("logits " + st.string() + tokens + b.string()).exit_code, 0);
    EXPECT_EQ(read_bytes(a), read_bytes(b)) << stem;
    EXPECT_EQ(read_bytes(a).size(), 7u * 512 * 4);
  }
}

// A bf16 checkpoint upcast to F32 by `convert --dtype F32` computes exactly the same logits.
TEST_F(Cli, ConvertDtypeF32OfBf16IsExact) {
  const auto st = dir_ / "f32.safetensors";
  ASSERT_EQ(
      run("convert --dtype F32 " + reference("rwkv6-ref-bf16.pth") + " " + st.string()).exit_code,
      0);
  auto info = nlohmann::json::parse(run("info --json " + st.string()).out);
  EXPECT_EQ(info["tensors"][0]["dtype"], "F32");
  const auto a = dir_ / "a.f32", b = dir_ / "b.f32";
  // Equal logits need equal kernels: AMX sums BF16 products (not F32 ones) in its own order.
  const std::string kernels = cpu_features().amx_bf16 ? "RWKV_KERNELS=avx512 " : "";
  const auto logits = [&](const std::string& model, const std::filesystem::path& out) {
    return run_shell(
               kernels + cli_ + " logits " + model + " --tokens '1 2 3' --out " + out.string(),
               dir_)
        .exit_code;
  };
  ASSERT_EQ(logits(reference("rwkv6-ref-bf16.pth"), a), 0);
  ASSERT_EQ(logits(st.string(), b), 0);
  EXPECT_EQ(read_bytes(a), read_bytes(b));
}

// A converted rwkv.cpp v5 file keeps its writer's GroupNorm eps convention.
TEST_F(Cli, ConvertKeepsLnXEpsConvention) {
  const auto st = dir_ / "v5.safetensors";
  ASSERT_EQ(run("convert " + tiny("tiny-rwkv-5v2-730K-Q5_1.bin") + " " + st.string()).exit_code, 0);
  auto info = nlohmann::json::parse(run("info --json " + st.string()).out);
  EXPECT_FLOAT_EQ(info["ln_x_eps"].get<float>(), 1e-5f);
  for (const auto& t : info["tensors"]) {
    if (t["name"] == "blocks.0.att.key.weight") {
      EXPECT_EQ(t["dtype"], "Q5_1");
    }
  }
  auto flag = nlohmann::json::parse(run("info --json --ln-x-eps 64e-5 " + st.string()).out);
  EXPECT_FLOAT_EQ(flag["ln_x_eps"].get<float>(), 64e-5f);
}

// 0..n in one call equals 0..k, a state file written and read by the CLI, then k+1..n.
TEST_F(Cli, StateFileCarriesTheConversation) {
  const std::string model = reference("rwkv6-ref-bf16.pth");
  const auto whole = dir_ / "whole.f32", part = dir_ / "part.f32", st = dir_ / "s.state";
  ASSERT_EQ(run("logits " + model + " --tokens '5 6 7 8 9 10' --out " + whole.string()).exit_code,
            0);
  ASSERT_EQ(run("logits " + model + " --tokens '5 6 7' --state-out " + st.string()).exit_code, 0);
  auto r = run("logits " + model + " --tokens '8 9 10' --state-in " + st.string() + " --out " +
               part.string());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto a = read_f32(whole), b = read_f32(part);
  EXPECT_LE(diff(a.data(), b.data(), 512).max_abs, 1e-4);
  // A state from another model is refused with the file named.
  expect_error(
      run("logits " + reference("rwkv7-ref-bf16.pth") + " --tokens 1 --state-in " + st.string()),
      st.string() + ": state is for RWKV-6.0");
}

TEST_F(Cli, RnnAndSeqModesAgree) {
  const std::string model = tiny("tiny-rwkv-5v1-730K-Q5_0.bin");
  const auto a = dir_ / "a.f32", b = dir_ / "b.f32";
  const std::string tokens = " --tokens '72 101 108 108 111 32 119 111 114 108 100' --all --out ";
  ASSERT_EQ(run("logits --mode rnn " + model + tokens + a.string()).exit_code, 0);
  ASSERT_EQ(run("logits --mode seq --chunk 4 " + model + tokens + b.string()).exit_code, 0);
  auto x = read_f32(a), y = read_f32(b);
  ASSERT_EQ(x.size(), 11u * 256);
  EXPECT_LE(diff(x.data(), y.data(), x.size()).max_abs, 1e-4);
}

TEST_F(Cli, BenchReportsPrefillAndGeneration) {
  auto r = run("bench " + reference("rwkv5v2-ref-bf16.pth") + " --prompt 32 --gen 8 --runs 1");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("prefill:"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("generation:"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("tok/s"), std::string::npos) << r.out;
}

TEST_F(Cli, BenchJsonAddsUp) {
  auto r =
      run("bench " + reference("rwkv5v2-ref-bf16.pth") + " --prompt 8 --gen 8 --runs 3 --json");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto j = nlohmann::json::parse(r.out);
  // 825088 BF16 parameters; a token reads one of the 512 rows of the 128-wide embedding, and the
  // float32 state: 3 layers of 2 x 128 shifted channels and 2 heads' 64 x 64.
  EXPECT_DOUBLE_EQ(j["weights_mb"].get<double>(), 825088 * 2 / 1e6);
  EXPECT_DOUBLE_EQ(j["state_bytes"].get<double>(), 3 * (2 * 128 + 2 * 64 * 64) * 4.0);
  EXPECT_DOUBLE_EQ(j["bytes_per_token"].get<double>(),
                   (825088 - 511 * 128) * 2.0 + 3 * (2 * 128 + 2 * 64 * 64) * 4.0);
  EXPECT_NEAR(j["read_gbps"].get<double>(),
              j["bytes_per_token"].get<double>() * j["gen_tok_s"].get<double>() / 1e9, 1e-9);
  // The fraction is the median of each run's rate over the probe taken right after it.
  EXPECT_GT(j["machine_read_gbps"].get<double>(), 0.1);
  EXPECT_GT(j["bandwidth_fraction"].get<double>(), 0);
  EXPECT_EQ(j["cpu_features"].get<std::string>(), cpu_features_string());
#ifndef __SANITIZE_ADDRESS__  // ASan's shadow and quarantine are not the engine's memory
  EXPECT_LE(j["rss_peak_mb"].get<double>(), j["rss_budget_mb"].get<double>());
  EXPECT_LE(j["rss_gen_mb"].get<double>(), j["rss_budget_mb"].get<double>());
#endif
}

TEST_F(Cli, BenchProfileCountsEveryProduct) {
  auto r = run("bench " + reference("rwkv7-ref-fp32.pth") +
               " --prompt 4 --gen 4 --runs 1 --profile --json");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto p = nlohmann::json::parse(r.out)["profile"];
  // RWKV-7, 3 layers of 128, FFN 512, LoRA ranks w 32, a 32, g 64, v 32 (none in layer 0),
  // vocab 512, FP32: per layer five products (r, k, v with the LoRAs' first halves; their
  // second halves; output; FFN key; FFN value), then the head.
  EXPECT_EQ(p["products_per_token"].get<int>(), 3 * 5 + 1);
  double calls = 0, bytes = 0;
  for (const auto& s : p["by_size"]) {
    calls += s["per_token"].get<double>();
    bytes += s["per_token"].get<double>() * s["weight_bytes"].get<double>();
    EXPECT_NEAR(s["gbps"].get<double>(),
                s["weight_bytes"].get<double>() / s["call_us"].get<double>() / 1e3, 1e-6);
    EXPECT_LE(s["setup_us"].get<double>(), s["call_us"].get<double>());
  }
  EXPECT_EQ(calls, 16);
  const double layer = 4 * 128 * 128 + 2 * 128 * 512, lora = 2 * 128;
  EXPECT_EQ(bytes,
            4 * (3 * layer + lora * (32 + 32 + 64) + 2 * lora * (32 + 32 + 64 + 32) + 512 * 128));
  EXPECT_GT(p["setup_ms"].get<double>(), 0);
  EXPECT_LT(p["setup_ms"].get<double>(), p["products_ms"].get<double>());
  EXPECT_LT(p["products_ms"].get<double>(), p["token_ms"].get<double>());
}

TEST_F(Cli, MissingFile) {
  auto r = run("logits /nonexistent/model.pth --tokens 1");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("/nonexistent/model.pth"), std::string::npos) << r.err;
}

TEST_F(Cli, TruncatedFile) {
  auto bytes = read_bytes(reference("rwkv5v2-ref-fp32.pth"));
  bytes.resize(bytes.size() / 3);
  write_bytes(dir_ / "cut.pth", bytes);
  expect_error(run("logits " + (dir_ / "cut.pth").string() + " --tokens 1"),
               (dir_ / "cut.pth").string());
}

TEST_F(Cli, WrongMagic) {
  write_bytes(dir_ / "junk.bin", std::vector<uint8_t>(64, 'x'));
  expect_error(run("info " + (dir_ / "junk.bin").string()), "unknown file format");
}

TEST_F(Cli, BadTokens) {
  expect_error(run("logits " + tiny("tiny-rwkv-7v0-834K-FP32.bin") + " --tokens '1 x 3'"),
               "'x' is not a token id");
  expect_error(run("logits " + tiny("tiny-rwkv-7v0-834K-FP32.bin") + " --tokens '1 256'"),
               "token 256 is outside the vocabulary [0, 256)");
  expect_error(run("logits " + tiny("tiny-rwkv-7v0-834K-FP32.bin") + " --tokens ''"),
               "no token ids");
}

TEST_F(Cli, BadFlags) {
  auto r = run("logits " + tiny("tiny-rwkv-7v0-834K-FP32.bin") + " --tokens 1 --arch 9");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("--arch"), std::string::npos) << r.err;
  EXPECT_NE(run("frobnicate").exit_code, 0);
  // Numeric bounds say what is wanted (CLI11's own check printed 309 digits of DBL_MAX).
  r = run("bench " + tiny("tiny-rwkv-7v0-834K-FP32.bin") + " --runs 0");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_EQ(r.err.rfind("--runs: must be greater than zero, got 0\n", 0), 0u) << r.err;
  r = run("generate " + tiny("tiny-rwkv-7v0-834K-FP32.bin") + " x --temperature -1");
  EXPECT_EQ(r.err.rfind("--temperature: must be zero or more, got -1\n", 0), 0u) << r.err;
  r = run("generate " + tiny("tiny-rwkv-7v0-834K-FP32.bin") + " x -n lots");
  EXPECT_EQ(r.err.rfind("--max-tokens: 'lots' is not a number\n", 0), 0u) << r.err;
  // Forcing an architecture the tensors contradict names the missing tensor.
  expect_error(run("logits " + tiny("tiny-rwkv-7v0-834K-FP32.bin") + " --tokens 1 --arch 6"),
               "missing tensor blocks.0.att.time_faaaa");
}

TEST_F(Cli, OutIsWrittenAtomically) {
  // A failing run must not leave a partial or empty output file behind.
  const auto out = dir_ / "keep.f32";
  write_bytes(out, {1, 2, 3, 4});
  auto r = run("logits " + tiny("tiny-rwkv-7v0-834K-FP32.bin") + " --tokens '1 999' --out " +
               out.string());
  EXPECT_NE(r.exit_code, 0);
  EXPECT_EQ(read_bytes(out), (std::vector<uint8_t>{1, 2, 3, 4}));
  EXPECT_NE(
      run("logits " + tiny("tiny-rwkv-7v0-834K-FP32.bin") + " --tokens 1 --out /nonexistent/x.f32")
          .exit_code,
      0);
}

}  // namespace
}  // namespace rwkv::test
