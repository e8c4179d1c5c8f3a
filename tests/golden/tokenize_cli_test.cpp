// `rwkv tokenize` / `rwkv detokenize` end to end: output byte-identical to the reference .ids
// files, raw bytes through pipes and stdin, the tokenizer picked from a model, and one clear
// error line with a non-zero exit for every kind of bad input.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <nlohmann/json.hpp>

#include "test_util.h"

namespace rwkv::test {
namespace {

class TokenizeCli : public ::testing::Test {
 protected:
  void SetUp() override {
    if (shared_dir().empty()) GTEST_SKIP() << "SKIPPED: ../shared/testdata not found";
    dir_ = temp_dir();
    world_ = (shared_dir() / "tokenizers/rwkv_vocab_v20230424.txt").string();
    neox_ = (shared_dir() / "tokenizers/20B_tokenizer.json").string();
    vectors_ = shared_dir() / "testdata/tokenizer";
  }
  // Runs `rwkv ARGS` through the shell, so ARGS may hold pipes and redirections.
  CommandResult run(const std::string& args) { return run_shell(args, dir_); }
  std::string rwkv() const { return cli_path(); }
  void expect_error(const CommandResult& r, const std::string& what) {
    EXPECT_NE(r.exit_code, 0);
    EXPECT_EQ(r.err.rfind("error: ", 0), 0u) << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
    EXPECT_NE(r.err.find(what), std::string::npos) << r.err;
    EXPECT_EQ(r.out, "");
  }
  std::filesystem::path dir_, vectors_;
  std::string world_, neox_;
};

// The CLI's output is exactly the .ids file of every vector, for both tokenizers, and
// detokenize gives back the text (World: byte for byte, even invalid UTF-8).
TEST_F(TokenizeCli, OutputMatchesEveryVectorFile) {
  std::ifstream f(vectors_ / "cases.json");
  const auto cases = nlohmann::json::parse(f);
  int checked = 0;
  for (const auto& c : cases) {
    const std::string name = c["name"];
    const auto txt = vectors_ / (name + ".txt");
    if (!std::filesystem::exists(txt)) continue;
    for (const auto& [kind, vocab] : {std::pair{"world", world_}, std::pair{"neox", neox_}}) {
      const auto ids = vectors_ / (name + "." + kind + ".ids");
      if (!std::filesystem::exists(ids)) continue;
      SCOPED_TRACE(name + " " + kind);
      auto r = run(rwkv() + " tokenize --tokenizer " + vocab + " --file " + txt.string());
      ASSERT_EQ(r.exit_code, 0) << r.err;
      EXPECT_EQ(r.out, read_text(ids));
      if (std::string(kind) == "world") {
        auto d = run(rwkv() + " detokenize -t " + vocab + " --file " + ids.string());
        ASSERT_EQ(d.exit_code, 0) << d.err;
        EXPECT_EQ(d.out, read_text(txt));
      }
      ++checked;
    }
  }
  EXPECT_GE(checked, 2);
}

TEST_F(TokenizeCli, TextArgumentStdinAndPipes) {
  auto r = run(rwkv() + " tokenize -t " + neox_ + " 'Hello world'");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "12092 1533\n");
  // Raw bytes, including NUL and invalid UTF-8, survive tokenize | detokenize.
  write_bytes(dir_ / "in.bin", {'a', 0, 0xFF, 0xE4, 0xB8, '\n', ' ', ' ', 'z'});
  r = run("cat " + (dir_ / "in.bin").string() + " | " + rwkv() + " tokenize -t " + world_ +
          " --file - | " + rwkv() + " detokenize -t " + world_ + " --file -");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, read_text(dir_ / "in.bin"));
  // Ids may be separated by commas and newlines too.
  r = run(rwkv() + " detokenize -t byte '104,105\n33'");
  EXPECT_EQ(r.out, "hi!");
  // Empty input: no ids, no output.
  r = run(rwkv() + " tokenize -t " + world_ + " ''");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "");
  // --skip-special drops <|endoftext|>.
  r = run(rwkv() + " detokenize -t " + neox_ + " --skip-special '0 12092 0'");
  EXPECT_EQ(r.out, "Hello");
}

TEST_F(TokenizeCli, PicksTheTokenizerFromTheModel) {
  const auto tiny = shared_dir() / "testdata/tiny-rwkv/tiny-rwkv-7v0-834K-FP32.bin";
  auto r = run(rwkv() + " tokenize --model " + tiny.string() + " '\"in'");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "34 105 110\n");  // byte-level, as the tiny models are
  // The reference models have a 512-token vocabulary that no known tokenizer fits.
  const auto ref = shared_dir() / "testdata/reference/models/rwkv7-ref-fp32.pth";
  expect_error(run(rwkv() + " tokenize --model " + ref.string() + " hi"),
               "no known tokenizer for a vocabulary of 512 tokens; pass --tokenizer FILE");
  // A World tokenizer cannot serve a byte-level model.
  expect_error(run(rwkv() + " tokenize --model " + tiny.string() + " -t " + world_ + " hi"),
               "has 65530 ids but the model only 256");
}

TEST_F(TokenizeCli, ClearErrors) {
  expect_error(run(rwkv() + " tokenize -t /nonexistent/vocab.txt hi"),
               "/nonexistent/vocab.txt: cannot open tokenizer file");
  expect_error(run(rwkv() + " tokenize hi"), "no tokenizer: pass --tokenizer FILE");
  expect_error(run(rwkv() + " tokenize -t byte"), "give the TEXT as an argument or with --file");
  expect_error(run(rwkv() + " tokenize -t byte --file /nonexistent/in.txt"),
               "/nonexistent/in.txt: cannot open");
  expect_error(run(rwkv() + " detokenize -t " + world_ + " '12 abc'"), "'abc' is not a token id");
  expect_error(run(rwkv() + " detokenize -t " + world_ + " '12 70000'"),
               "token id 70000 is not in the World vocabulary");
  expect_error(run(rwkv() + " detokenize -t " + neox_ + " '50277'"),
               "token id 50277 is not in the tokenizer.json vocabulary");
  expect_error(run(rwkv() + " detokenize -t byte -- '-1'"), "'-1' is not a token id");
  // Flag errors come from the argument parser: non-zero exit, message on stderr.
  auto r = run(rwkv() + " tokenize -t byte --file x 'text'");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("excludes"), std::string::npos) << r.err;
  r = run(rwkv() + " tokenize --bogus");
  EXPECT_NE(r.exit_code, 0);
}

}  // namespace
}  // namespace rwkv::test
