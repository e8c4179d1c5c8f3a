// `rwkv generate` end to end: greedy generation equals argmax over `rwkv logits` step by step,
// seeds reproduce, --json and stop strings behave, the state file continues a generation.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <nlohmann/json.hpp>
#include <algorithm>
#include <cctype>
#include <sstream>

#include "test_util.h"

namespace rwkv::test {
namespace {

class GenerateCli : public ::testing::Test {
 protected:
  void SetUp() override {
    if (shared_dir().empty()) GTEST_SKIP() << "SKIPPED: ../shared/testdata not found";
    dir_ = temp_dir();
    model_ = (shared_dir() / "testdata/tiny-rwkv/tiny-rwkv-5v2-730K-FP32.bin").string();
  }
  // Runs the CLI; returns stdout, and the exit code in `code`.
  std::string run(const std::string& args, int* code = nullptr) {
    const CommandResult r = run_shell(cli_path() + " " + args, dir_);
    if (code) *code = r.exit_code;
    return r.out;
  }
  std::vector<nlohmann::json> json_lines(const std::string& text) {
    std::vector<nlohmann::json> out;
    std::istringstream in(text);
    for (std::string line; std::getline(in, line);) out.push_back(nlohmann::json::parse(line));
    return out;
  }
  std::filesystem::path dir_;
  std::string model_;
};

TEST_F(GenerateCli, GreedyEqualsArgmaxOfLogitsStepByStep) {
  int code = 0;
  const auto lines = json_lines(run("generate " + model_ +
                                        " 'The ' -n 12 --temperature 0 --presence-penalty 0 "
                                        "--frequency-penalty 0 --json",
                                    &code));
  ASSERT_EQ(code, 0);
  ASSERT_EQ(lines.size(), 13u);  // 12 tokens + summary
  EXPECT_EQ(lines.back()["generated_tokens"], 12);
  EXPECT_EQ(lines.back()["prompt_tokens"], 4);
  std::string tokens = "84 104 101 32";  // "The " as bytes
  for (size_t i = 0; i < 12; ++i) {
    const std::string top = run("logits " + model_ + " --tokens '" + tokens + "' --top 1");
    const size_t colon = top.find(": ");
    const int argmax = std::stoi(top.substr(colon + 2));
    EXPECT_EQ(lines[i]["id"], argmax) << "step " << i;
    tokens += " " + std::to_string(lines[i]["id"].get<int>());
  }
}

TEST_F(GenerateCli, SameSeedSameText) {
  const std::string args = "generate " + model_ + " 'Once upon' -n 30 --seed 7";
  EXPECT_EQ(run(args), run(args));
  EXPECT_NE(run(args), run("generate " + model_ + " 'Once upon' -n 30 --seed 8"));
}

TEST_F(GenerateCli, StopStringEndsGenerationAndIsNotPrinted) {
  // Greedy output of this model repeats " the"; stop at "the".
  int code = 0;
  const std::string text = run("generate " + model_ + " 'The ' -n 50 --temperature 0 --stop the", &code);
  ASSERT_EQ(code, 0);
  EXPECT_EQ(text.find("the"), std::string::npos) << text;
  const auto lines = json_lines(run("generate " + model_ +
                                    " 'The ' -n 50 --temperature 0 --stop the --json"));
  EXPECT_EQ(lines.back()["finish_reason"], "stop_string");
}

TEST_F(GenerateCli, StateOutThenStateInContinues) {
  const auto st = dir_ / "g.state";
  const std::string greedy = " --temperature 0 --presence-penalty 0 --frequency-penalty 0";
  const std::string whole = run("generate " + model_ + " 'Hello world' -n 10" + greedy);
  int code = 0;
  run("generate " + model_ + " 'Hello' -n 0 --state-out " + st.string() + greedy, &code);
  ASSERT_EQ(code, 0);
  const std::string cont =
      run("generate " + model_ + " ' world' -n 10 --state-in " + st.string() + greedy);
  EXPECT_EQ(whole, cont);
}

TEST_F(GenerateCli, PromptFromStdinAndFile) {
  write_bytes(dir_ / "p.txt", {'T', 'h', 'e', ' '});
  const std::string greedy = " -n 8 --temperature 0";
  const std::string from_arg = run("generate " + model_ + " 'The '" + greedy);
  EXPECT_EQ(run("generate " + model_ + " --file " + (dir_ / "p.txt").string() + greedy), from_arg);
  EXPECT_EQ(run_shell(cli_path() + " generate " + model_ + greedy + " --file -", dir_, "The ").out,
            from_arg);
}

TEST_F(GenerateCli, BadInputIsAClearError) {
  int code = 0;
  run("generate " + model_ + " 'x' --top-p 2", &code);
  EXPECT_NE(code, 0);
  run("generate " + model_ + " 'x' --logit-bias nonsense", &code);
  EXPECT_NE(code, 0);
  run("generate " + model_, &code);  // no prompt at all (stdin is /dev/null: empty)
  EXPECT_NE(code, 0);
  run("generate /nonexistent.bin 'x'", &code);
  EXPECT_NE(code, 0);
}

// The built-in model (models/default.safetensors, compiled into the binary) runs without a file:
// `rwkv generate "prompt"` and `rwkv chat`, and writes text, not byte soup.
TEST(DefaultModel, GenerateAndChatRunWithoutAModelFile) {
  const auto dir = temp_dir();
  const CommandResult g =
      run_shell(cli_path() + " generate 'And it came to pass' -n 300 --temperature 0.7 --seed 1", dir);
  ASSERT_EQ(g.exit_code, 0) << g.err;
  ASSERT_GE(g.out.size(), 250u) << g.out;
  const auto plain = std::count_if(g.out.begin(), g.out.end(), [](unsigned char c) {
    return std::isalpha(c) || c == ' ' || c == ',' || c == '.' || c == ';' || c == ':' || c == '\n';
  });
  EXPECT_GE(double(plain) / double(g.out.size()), 0.95) << g.out;
  const CommandResult same = run_shell(
      cli_path() + " generate 'And it came to pass' -n 300 --temperature 0.7 --seed 1", dir);
  EXPECT_EQ(same.out, g.out);

  const CommandResult c = run_shell(cli_path() + " chat -n 20 -v", dir, "Hello\n");
  ASSERT_EQ(c.exit_code, 0) << c.err;
  EXPECT_EQ(c.out.rfind("Assistant:", 0), 0u) << c.out;
  EXPECT_NE(c.err.find("[turn 1: 18 new tokens processed"), std::string::npos) << c.err;
}

}  // namespace
}  // namespace rwkv::test
