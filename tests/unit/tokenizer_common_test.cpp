// The byte tokenizer, the streaming UTF-8 decoder (against a whole-string lossy decode and the
// WHATWG examples), Tokenizer::load by content, and Tokenizer::for_model's choice and errors.
#include <gtest/gtest.h>

#include <random>

#include "rwkv/tokenizer.h"
#include "test_util.h"
#include "tokenizer/unicode.h"

namespace rwkv::test {
namespace {

const std::string kFffd = "\uFFFD";

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "no error";
}

TEST(ByteTokenizer, IdsAreBytes) {
  auto tok = Tokenizer::byte_level();
  EXPECT_EQ(tok->name(), "byte");
  EXPECT_EQ(tok->vocab_size(), 256);
  EXPECT_EQ(tok->encode("\"in"), (std::vector<int>{34, 105, 110}));
  std::string all(256, '\0');
  for (int b = 0; b < 256; ++b) all[size_t(b)] = char(b);
  EXPECT_EQ(tok->decode(tok->encode(all)), all);
  EXPECT_THROW(tok->decode(std::vector<int>{256}), Error);
  EXPECT_FALSE(tok->is_special(0));
}

TEST(Utf8Stream, HoldsBackUnfinishedCharacters) {
  Utf8Stream s;
  EXPECT_EQ(s.push("a\xE4"), "a");
  EXPECT_EQ(s.push("\xB8"), "");
  EXPECT_EQ(s.push("\xAD"
                   "b"),
            "\u4e2d"
            "b");
  EXPECT_EQ(s.push("\xF0\x9F\x98"), "");
  EXPECT_EQ(s.flush(), kFffd);  // an unfinished sequence at the end is one U+FFFD
  EXPECT_EQ(s.flush(), "");
}

TEST(Utf8Stream, MaximalSubpartsBecomeOneReplacementEach) {
  auto lossy = [](std::string_view b) {
    Utf8Stream s;
    std::string out = s.push(b);
    return out + s.flush();
  };
  // The examples of Unicode chapter 3 / WHATWG.
  EXPECT_EQ(lossy("\xC0\xAF"), kFffd + kFffd);
  EXPECT_EQ(lossy("\xE0\x80\xAF"), kFffd + kFffd + kFffd);
  EXPECT_EQ(lossy("\xED\xA0\x80"), kFffd + kFffd + kFffd);              // surrogates
  EXPECT_EQ(lossy("\xF4\x90\x80\x80"), kFffd + kFffd + kFffd + kFffd);  // > U+10FFFF
  EXPECT_EQ(lossy("\xE1\x80"
                  "a"),
            kFffd + "a");
  EXPECT_EQ(lossy("\xF1\x80\x80\xE1\x80\xC2"), kFffd + kFffd + kFffd);
  EXPECT_EQ(lossy("\x61\xF1\x80\x80\xE1\x80\xC2\x62\x80\x63\x80\xBF\x64"),
            "a" + kFffd + kFffd + kFffd + "b" + kFffd + "c" + kFffd + kFffd + "d");
}

// However the bytes are cut into pushes, the output is the same as decoding them in one piece,
// and every push returns valid UTF-8.
TEST(Utf8Stream, ChunkingNeverChangesTheOutput) {
  std::mt19937 rng(1);
  const std::string alphabet[] = {"a",    "\xC3\xA9", "\xE4\xB8\xAD", "\xF0\x9F\x98\x80", "\x80",
                                  "\xFF", "\xE4",     "\xF0\x9F",     "\xED\xA0"};
  for (int i = 0; i < 2000; ++i) {
    std::string bytes;
    for (int k = rng() % 20; k > 0; --k) bytes += alphabet[rng() % std::size(alphabet)];
    Utf8Stream whole;
    std::string want = whole.push(bytes);
    want += whole.flush();
    Utf8Stream s;
    std::string got;
    for (size_t pos = 0; pos < bytes.size();) {
      const size_t n = std::min(bytes.size() - pos, size_t(rng() % 4));
      const std::string piece = s.push(std::string_view(bytes).substr(pos, n));
      ASSERT_TRUE(unicode::is_valid_utf8(piece)) << "a push returned invalid UTF-8";
      got += piece;
      pos += n;
    }
    got += s.flush();
    ASSERT_EQ(got, want);
  }
}

TEST(TokenizerLoad, ErrorsNameTheFile) {
  EXPECT_NE(error_of([] {
              Tokenizer::load("/nonexistent/vocab.txt");
            }).find("/nonexistent/vocab.txt: cannot open tokenizer file"),
            std::string::npos);
  const auto path = temp_dir() / "garbage.bin";
  write_bytes(path, {'h', 'i'});
  EXPECT_NE(error_of([&] { Tokenizer::load(path.string()); }).find("garbage.bin: not a tokenizer"),
            std::string::npos);
}

class ForModel : public ::testing::Test {
 protected:
  void SetUp() override {
    RWKV_REQUIRE_SHARED();
    dir_ = temp_dir();
    model_ = (dir_ / "model.pth").string();
  }
  void link(const std::string& name) {
    std::filesystem::create_symlink(shared_dir() / "tokenizers" / name, dir_ / name);
  }
  std::filesystem::path dir_;
  std::string model_;
};

TEST_F(ForModel, PicksByVocabSizeAndNeighbourFile) {
  EXPECT_EQ(Tokenizer::for_model(model_, 256)->name(), "byte");
  link("rwkv_vocab_v20230424.txt");
  link("20B_tokenizer.json");
  EXPECT_EQ(Tokenizer::for_model(model_, 65536)->name(), "world");
  EXPECT_EQ(Tokenizer::for_model(model_, 50277)->name(), "neox");
  EXPECT_EQ(Tokenizer::for_model(model_, 50432)->name(), "neox");
  // An explicit choice wins; "byte" names the byte-level tokenizer.
  EXPECT_EQ(Tokenizer::for_model(model_, 65536, "byte")->name(), "byte");
  EXPECT_EQ(Tokenizer::for_model(model_, 65536, (dir_ / "20B_tokenizer.json").string())->name(),
            "neox");
}

TEST_F(ForModel, SaysWhatIsMissing) {
  const std::string world = error_of([&] { Tokenizer::for_model(model_, 65536); });
  EXPECT_NE(world.find("rwkv_vocab_v20230424.txt was not found"), std::string::npos) << world;
  EXPECT_NE(world.find("--tokenizer"), std::string::npos) << world;
  const std::string neox = error_of([&] { Tokenizer::for_model(model_, 50277); });
  EXPECT_NE(neox.find("20B_tokenizer.json was not found"), std::string::npos) << neox;
  const std::string odd = error_of([&] { Tokenizer::for_model(model_, 1000); });
  EXPECT_NE(odd.find("no known tokenizer for a vocabulary of 1000 tokens"), std::string::npos);
  // A tokenizer with more ids than the model has rows is a mistake.
  const std::string big = error_of([&] {
    Tokenizer::for_model(model_, 256,
                         (shared_dir() / "tokenizers/rwkv_vocab_v20230424.txt").string());
  });
  EXPECT_NE(big.find("has 65530 ids but the model only 256"), std::string::npos) << big;
}

}  // namespace
}  // namespace rwkv::test
