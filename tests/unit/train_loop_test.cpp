// The training loop: loss goes down, resume is bit-exact, the output loads in the inference
// engine with the same logits, state tuning and LoRA leave the base weights alone, and the data
// readers (text, jsonl, RWKV-LM binidx) and the CLI reject bad input cleanly.
#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>

#include "io/readers.h"
#include "rwkv/model.h"
#include "rwkv/state.h"
#include "test_util.h"
#include "train/trainer.h"
#include "train/train_model.h"

namespace rwkv::train {
namespace {

using test::temp_dir;
const std::string kSample = RWKV_SOURCE_DIR "/tests/train/sample.txt";

std::string tokenize_sample(const std::filesystem::path& dir) {
  const std::string tok = (dir / "sample.tok").string();
  tokenize_to_file(kSample, *Tokenizer::byte_level(), tok);
  return tok;
}

TrainerOptions small_run(const std::filesystem::path& dir, int64_t steps) {
  TrainerOptions o;
  o.init = {"v7", 64, 2, 256, 32, 5};
  o.ctx_len = 32;
  o.chunk_len = 16;
  o.batch = 4;
  o.adam.lr = 3e-3f;
  o.adam.lr_final = 3e-4f;
  o.adam.warmup = 5;
  o.adam.steps = steps;
  o.seed = 9;
  o.threads = 2;
  o.out = (dir / "model.safetensors").string();
  return o;
}

struct RunLog {
  TrainResult result;
  std::vector<double> losses;
};

RunLog run(const TrainerOptions& o, const TokenData& data, int64_t stop_after = -1) {
  RunLog r;
  std::atomic<bool> stop{false};
  r.result = train(o, data, [&](const StepReport& s) {
    r.losses.push_back(s.loss);
    if (s.step == stop_after) stop.store(true);
  }, stop);
  return r;
}

double mean_tail(const std::vector<double>& v, size_t n) {
  double s = 0;
  for (size_t i = v.size() - n; i < v.size(); ++i) s += v[i];
  return s / double(n);
}

TEST(TrainLoop, LowersLossAndOutputMatchesInference) {
  const auto dir = temp_dir();
  const TokenData data = TokenData::open(tokenize_sample(dir));
  TrainerOptions o = small_run(dir, 80);
  const RunLog r = run(o, data);
  ASSERT_EQ(r.losses.size(), 80u);
  // From about ln(256) = 5.5 nats to under 3 (byte-level English; unigram entropy is ~3).
  std::printf("[ loss ] first %.3f, mean of the last 10 steps %.3f\n", r.losses[0],
              mean_tail(r.losses, 10));
  EXPECT_GT(r.losses[0], 5.0);
  EXPECT_LT(mean_tail(r.losses, 10), 3.0);
  EXPECT_GT(r.losses[0] - mean_tail(r.losses, 10), 2.5);

  // The written model loads in the engine and gives the training forward's logits.
  const auto model = Model::load(o.out);
  const ParamSet p = ParamSet::from_map(read_tensor_map(o.out));
  auto net = TrainModel::create(p);
  const std::vector<int> tokens = Tokenizer::byte_level()->encode("The river was his friend");
  std::vector<float> ours(tokens.size() * 256);
  net->forward_logits(p.data.data(), tokens.data(), 1, int64_t(tokens.size()), 8, ours.data(),
                      nullptr);
  const test::RunResult ref = test::run_tokens(*model, tokens);
  EXPECT_LE(test::diff(ours.data(), ref.logits.data(), ours.size()).max_abs, 1e-4);
}

TEST(TrainLoop, ResumeIsBitExact) {
  const auto dir = temp_dir();
  const TokenData data = TokenData::open(tokenize_sample(dir));
  TrainerOptions whole = small_run(dir / "", 12);
  whole.out = (dir / "whole.safetensors").string();
  run(whole, data);

  TrainerOptions part = small_run(dir, 12);
  part.out = (dir / "part.safetensors").string();
  const RunLog first = run(part, data, 5);  // as if interrupted (Ctrl-C) after step 5
  EXPECT_TRUE(first.result.interrupted);
  EXPECT_EQ(first.result.steps_done, 5);
  part.resume = true;
  const RunLog second = run(part, data);
  EXPECT_EQ(second.result.steps_done, 7);
  EXPECT_EQ(test::read_bytes(whole.out), test::read_bytes(part.out));

  part.adam.lr *= 2;  // other options: refused
  EXPECT_THROW(run(part, data), Error);
}

TEST(TrainLoop, StateTuningAndLoraKeepBaseWeights) {
  const auto dir = temp_dir();
  const TokenData data = TokenData::open(tokenize_sample(dir));
  TrainerOptions base = small_run(dir, 30);
  base.out = (dir / "base.safetensors").string();
  run(base, data);
  const std::vector<uint8_t> base_bytes = test::read_bytes(base.out);
  // New text: what the base model has not seen.
  const std::string text_path = (dir / "new.txt").string();
  {
    std::ofstream f(text_path);
    for (int i = 0; i < 20; ++i) f << "Seven swans swim south; sixty sparrows sing softly. ";
  }
  const std::string tok = (dir / "new.tok").string();
  tokenize_to_file(text_path, *Tokenizer::byte_level(), tok);
  const TokenData fresh = TokenData::open(tok);

  for (const std::string mode : {"state", "lora"}) {
    TrainerOptions t = small_run(dir, 40);
    t.init_model = base.out;
    t.tune = mode;
    t.lora_rank = 4;
    t.adam.lr = mode == "state" ? 1.0f : 1e-2f;  // RWKV state tuning uses lr ~1
    t.out = (dir / (mode + ".out")).string();
    t.merge_out = mode == "lora" ? (dir / "merged.safetensors").string() : "";
    const RunLog r = run(t, fresh);
    std::printf("[ %s tuning ] loss %.3f -> %.3f\n", mode.c_str(), r.losses[0],
                mean_tail(r.losses, 5));
    // The initial state only shapes the start of each window, so it wins less than adapters
    // on every matrix.
    EXPECT_LT(mean_tail(r.losses, 5), r.losses[0] - (mode == "state" ? 0.1 : 0.8)) << mode;
    EXPECT_EQ(test::read_bytes(base.out), base_bytes) << mode;
  }
  // The state file loads for the base model; the merged model differs from the base.
  const auto model = Model::load(base.out);
  const State st = State::load(*model, (dir / "state.out").string());
  double sum = 0;
  for (float x : st.data()) sum += std::abs(x);
  EXPECT_GT(sum, 0.0);
  const auto merged = Model::load((dir / "merged.safetensors").string());
  const std::vector<int> tokens = Tokenizer::byte_level()->encode("Seven swans");
  const auto a = test::run_tokens(*model, tokens), b = test::run_tokens(*merged, tokens);
  EXPECT_GT(test::diff(a.logits.data(), b.logits.data(), a.logits.size()).max_abs, 1e-2);
}

TEST(TrainData, JsonlAndBinidx) {
  const auto dir = temp_dir();
  {
    std::ofstream f(dir / "docs.jsonl");
    f << "{\"text\": \"ab\"}\n\n{\"text\": \"c\", \"meta\": 1}\n";
  }
  const std::string tok = (dir / "docs.tok").string();
  EXPECT_EQ(tokenize_to_file((dir / "docs.jsonl").string(), *Tokenizer::byte_level(), tok), 5u);
  const TokenData d = TokenData::open(tok);
  ASSERT_EQ(d.size(), 5u);
  EXPECT_EQ(d[0], 'a');
  EXPECT_EQ(d[1], 'b');
  EXPECT_EQ(d[2], 0);
  EXPECT_EQ(d[3], 'c');
  EXPECT_EQ(d[4], 0);
  {
    std::ofstream f(dir / "bad.jsonl");
    f << "{\"text\": \"ok\"}\n{\"txt\": 1}\n";
  }
  try {
    tokenize_to_file((dir / "bad.jsonl").string(), *Tokenizer::byte_level(), tok);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("bad.jsonl:2"), std::string::npos) << e.what();
  }

  // RWKV-LM binidx (uint16): two documents of 3 and 2 tokens.
  std::string idx("MMIDIDX\0\0", 9);
  auto put = [&idx](uint64_t v, int n) {
    for (int i = 0; i < n; ++i) idx.push_back(char(v >> (8 * i)));
  };
  put(1, 8);
  put(8, 1);
  put(2, 8);
  put(3, 8);
  put(3, 4);
  put(2, 4);
  put(0, 8);
  put(6, 8);
  put(0, 8);
  put(1, 8);
  put(2, 8);
  test::write_bytes(dir / "d.idx", std::vector<uint8_t>(idx.begin(), idx.end()));
  test::write_bytes(dir / "d.bin", {1, 0, 2, 0, 0xff, 0xff, 4, 1, 5, 0});
  const TokenData b = TokenData::open((dir / "d").string());
  ASSERT_EQ(b.size(), 5u);
  EXPECT_EQ(b[2], 65535);
  EXPECT_EQ(b[3], 260);
  EXPECT_TRUE(TokenData::is_token_data((dir / "d.bin").string()));
  test::write_bytes(dir / "d.bin", {1, 0, 2, 0});  // sizes no longer match
  EXPECT_THROW(TokenData::open((dir / "d.bin").string()), Error);
  test::write_bytes(dir / "x.tok", {'R', 'W', 'K', 'V', 'T', 'O', 'K', '1', 9, 0, 0, 0, 0, 0, 0, 0});
  EXPECT_THROW(TokenData::open((dir / "x.tok").string()), Error);  // truncated
  EXPECT_THROW(TokenData::open((dir / "missing.tok").string()), Error);
}

TEST(TrainCli, RunsAndRejectsBadInput) {
  const auto dir = temp_dir();
  const std::string out = (dir / "m.safetensors").string();
  const std::string cli = test::cli_path() + " train --n-embd 32 --n-layer 1 --head-size 16 "
                          "--ctx-len 16 --batch 2 --threads 1 --out " + out;
  ASSERT_EQ(std::system((cli + " --steps 3 --data " + kSample + " 2>/dev/null").c_str()), 0);
  EXPECT_TRUE(std::filesystem::exists(out));
  EXPECT_TRUE(std::filesystem::exists(out + ".ckpt"));
  std::ifstream csv(out + ".csv");
  std::string line;
  int lines = 0;
  while (std::getline(csv, line)) ++lines;
  EXPECT_EQ(lines, 4);  // header and 3 steps
  const std::string err = " >/dev/null 2>&1";
  EXPECT_NE(std::system((cli + " --steps 3 --data " + (dir / "none.txt").string() + err).c_str()), 0);
  EXPECT_NE(std::system((cli + " --steps 0 --data " + kSample + err).c_str()), 0);
  EXPECT_NE(std::system((cli + " --steps 3 --ctx-len 5000 --data " + kSample + err).c_str()), 0);
  EXPECT_NE(std::system((cli + " --steps 3 --tune state --data " + kSample + err).c_str()), 0);
  EXPECT_NE(std::system((cli + " --steps 3 --batch 3 --arch v5 --data " + kSample + err).c_str()), 0);
}

}  // namespace
}  // namespace rwkv::train
