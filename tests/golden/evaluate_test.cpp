// Perplexity and LAMBADA: the CLI's numbers against values computed independently from
// `rwkv logits --all`, and the LAMBADA scoring on hand-made logits.
#include "engine/evaluate.h"

#include <gtest/gtest.h>
#include <sys/wait.h>

#include <nlohmann/json.hpp>

#include "test_util.h"

namespace rwkv::test {
namespace {

std::string run_cli(const std::string& args, const std::filesystem::path& dir, int* code = nullptr) {
  const CommandResult r = run_shell(cli_path() + " " + args, dir);
  if (code) *code = r.exit_code;
  return r.out;
}

TEST(Perplexity, EqualsExpOfMeanNllFromLogitsAll) {
  RWKV_REQUIRE_SHARED();
  const auto dir = temp_dir();
  const std::string model = (shared_dir() / "testdata/tiny-rwkv/tiny-rwkv-7v0-834K-FP32.bin").string();
  const std::string text = "The quick brown fox jumps over the lazy dog. It was a dark night.";
  write_bytes(dir / "t.txt", std::vector<uint8_t>(text.begin(), text.end()));
  std::string ids;
  for (unsigned char c : text) ids += std::to_string(int(c)) + " ";
  int code = 0;
  run_cli("logits " + model + " --tokens '" + ids + "' --all --out " + (dir / "l.f32").string(), dir, &code);
  ASSERT_EQ(code, 0);
  const auto logits = read_f32(dir / "l.f32");
  double nll = 0;
  for (size_t i = 0; i + 1 < text.size(); ++i) {
    const float* row = logits.data() + i * 256;
    double sum = 0, top = *std::max_element(row, row + 256);
    for (int v = 0; v < 256; ++v) sum += std::exp(double(row[v]) - top);
    nll -= double(row[static_cast<unsigned char>(text[i + 1])]) - top - std::log(sum);
  }
  const double want = std::exp(nll / double(text.size() - 1));
  // Chunks smaller than the text exercise the state carried between them.
  const auto j = nlohmann::json::parse(run_cli(
      "perplexity " + model + " --file " + (dir / "t.txt").string() + " --chunk 7 --json", dir, &code));
  ASSERT_EQ(code, 0);
  EXPECT_EQ(j["predictions"], text.size() - 1);
  EXPECT_NEAR(j["perplexity"].get<double>(), want, want * 1e-5);
}

TEST(Lambada, SplitsAtTheLastSpace) {
  auto d = split_lambada("he said hello to the world");
  EXPECT_EQ(d.context, "he said hello to the");
  EXPECT_EQ(d.target, " world");
  d = split_lambada("word");
  EXPECT_EQ(d.context, "");
  EXPECT_EQ(d.target, " word");
}

TEST(Lambada, ScoringOnHandMadeLogits) {
  // src = 2 tokens, dst = {1, 2}: rows 1 and 2 predict the target tokens.
  const int64_t V = 3;
  std::vector<float> logits = {0, 0, 0,     // after src[0]: unused
                               0, 5, 0,     // predicts dst[0] = 1: argmax 1, correct
                               0, 0, 5,     // predicts dst[1] = 2: correct
                               9, 9, 9};    // after the last target token: unused
  const std::vector<int> dst = {1, 2};
  auto s = score_lambada(logits, V, 2, dst);
  EXPECT_TRUE(s.correct);
  const double lp = 5 - std::log(std::exp(5.0) + 2);
  EXPECT_NEAR(s.logprob, 2 * lp, 1e-9);
  logits[3 * 2 + 0] = 6;  // row 2's argmax becomes 0: the document is wrong
  s = score_lambada(logits, V, 2, dst);
  EXPECT_FALSE(s.correct);
}

TEST(Lambada, BatchedCliEqualsDocumentByDocument) {
  RWKV_REQUIRE_SHARED();
  const auto dir = temp_dir();
  const std::string path = (shared_dir() / "testdata/tiny-rwkv/tiny-rwkv-5v2-730K-FP32.bin").string();
  const std::vector<std::string> texts = {"the cat sat on the mat", "and then there was the end",
                                          "x", "she looked at him and said the"};
  std::string jsonl;
  for (const auto& t : texts) jsonl += nlohmann::json{{"text", t}}.dump() + "\n";
  write_bytes(dir / "l.jsonl", std::vector<uint8_t>(jsonl.begin(), jsonl.end()));
  int code = 0;
  const auto j = nlohmann::json::parse(run_cli(
      "lambada " + path + " --file " + (dir / "l.jsonl").string() + " --batch 3 --json", dir, &code));
  ASSERT_EQ(code, 0);
  EXPECT_EQ(j["documents"], 4);
  // Independently: each document alone, token by token.
  auto model = Model::load(path);
  auto tok = Tokenizer::byte_level();
  double logprob = 0;
  int correct = 0;
  for (const auto& t : texts) {
    const LambadaDoc d = split_lambada(t);
    std::vector<int> ids = {0};
    for (unsigned char c : d.context) ids.push_back(c);
    const size_t src = ids.size();
    std::vector<int> dst;
    for (unsigned char c : d.target) dst.push_back(c);
    ids.insert(ids.end(), dst.begin(), dst.end());
    RunResult r = run_tokens(*model, ids);
    const LambadaScore s = score_lambada(r.logits, 256, src, dst);
    logprob += s.logprob;
    correct += s.correct;
  }
  EXPECT_NEAR(j["accuracy"].get<double>(), correct / 4.0, 1e-12);
  const double ppl = std::exp(-logprob / 4);
  EXPECT_NEAR(j["perplexity"].get<double>(), ppl, ppl * 1e-4);
}

TEST(Lambada, BadFileIsAClearError) {
  RWKV_REQUIRE_SHARED();
  const auto dir = temp_dir();
  write_bytes(dir / "bad.jsonl", {'{', 'x', '\n'});
  int code = 0;
  run_cli("lambada " + (shared_dir() / "testdata/tiny-rwkv/tiny-rwkv-5v2-730K-FP32.bin").string() +
              " --file " + (dir / "bad.jsonl").string(), dir, &code);
  EXPECT_NE(code, 0);
}

}  // namespace
}  // namespace rwkv::test
