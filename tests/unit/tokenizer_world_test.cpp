// RWKV World tokenizer: vocab literal parsing (str vs bytes \x, quotes, escapes, spaces inside
// literals), errors that name the file and line, greedy longest match through non-token trie
// states, load time, and round trips on random bytes with the real vocab.
#include <gtest/gtest.h>

#include <ctime>
#include <random>

#include "rwkv/tokenizer.h"
#include "test_util.h"

namespace rwkv::test {
namespace {

// The 256 single-byte tokens (ids 1..256, id = byte + 1) every World vocab starts with.
std::string byte_lines() {
  std::string out;
  for (int b = 0; b < 256; ++b) {
    char lit[16];
    std::snprintf(lit, sizeof lit, b < 128 ? "'\\x%02x'" : "b'\\x%02x'", b);
    out += std::to_string(b + 1) + " " + lit + " 1\n";
  }
  return out;
}

std::unique_ptr<Tokenizer> load_vocab(const std::string& extra_lines) {
  const auto path = temp_dir() / "vocab.txt";
  const std::string content = byte_lines() + extra_lines;
  write_bytes(path, std::vector<uint8_t>(content.begin(), content.end()));
  return Tokenizer::load(path.string());
}

std::string load_error(const std::string& extra_lines) {
  try {
    load_vocab(extra_lines);
  } catch (const Error& e) {
    return e.what();
  }
  return "no error";
}

TEST(WorldVocab, LiteralsDecodeLikePython) {
  auto tok = load_vocab(
      "257 '\\x80' 2\n"             // str: code point U+0080, two UTF-8 bytes
      "258 b'\\xe4\\xb8' 2\n"       // bytes: raw, a partial character
      "259 ' a b ' 5\n"             // spaces inside the literal
      "260 \"it's\" 4\n"            // double quotes when the text has '
      "261 '\\'\\\\\\n\\t\\r' 5\n"  // escapes
      "262 '\\u4e2d' 3\n"           // \u escape
      "263 '中文' 6\n"              // raw UTF-8
      "264 '\\U0001F600' 4\n"       // \U escape
      "265 'a\\qb' 4\n");           // unknown escape keeps the backslash
  EXPECT_EQ(tok->token_bytes(257), "\xC2\x80");
  EXPECT_EQ(tok->token_bytes(129), "\x80");
  EXPECT_EQ(tok->token_bytes(258), "\xE4\xB8");
  EXPECT_EQ(tok->token_bytes(259), " a b ");
  EXPECT_EQ(tok->token_bytes(260), "it's");
  EXPECT_EQ(tok->token_bytes(261), "'\\\n\t\r");
  EXPECT_EQ(tok->token_bytes(262), "中");
  EXPECT_EQ(tok->token_bytes(263), "中文");
  EXPECT_EQ(tok->token_bytes(264), "\xF0\x9F\x98\x80");
  EXPECT_EQ(tok->token_bytes(265), "a\\qb");
  EXPECT_EQ(tok->token_bytes(0), "");  // end of text
  EXPECT_TRUE(tok->is_special(0));
  EXPECT_FALSE(tok->is_special(1));
  EXPECT_EQ(tok->vocab_size(), 266);
  EXPECT_EQ(tok->name(), "world");
}

TEST(WorldVocab, ErrorsNameFileLineAndProblem) {
  EXPECT_NE(load_error("257 'ab' 3\n").find("vocab.txt:257: literal has 2 bytes, line says 3"),
            std::string::npos);
  EXPECT_NE(load_error("257 'ab 2\n").find(":257: expected a quoted"), std::string::npos);
  EXPECT_NE(load_error("257 'a'b' 3\n").find("unescaped quote"), std::string::npos);
  EXPECT_NE(load_error("5 'zz' 2\n").find("token id 5 appears twice"), std::string::npos);
  EXPECT_NE(load_error("x 'zz' 2\n").find("bad token id"), std::string::npos);
  EXPECT_NE(load_error("257 'zz'\n").find("expected 'ID LITERAL LENGTH'"), std::string::npos);
  EXPECT_NE(load_error("257 '\\x4' 1\n").find("truncated \\x escape"), std::string::npos);
  EXPECT_NE(load_error("257 b'\xC3\xA9' 2\n").find("non-ASCII character in a bytes literal"),
            std::string::npos);
  EXPECT_NE(load_error("257 '\\ud800' 3\n").find("not a Unicode scalar value"), std::string::npos);
  EXPECT_NE(load_error("257 'a\xFF' 2\n").find("vocab.txt:257: not valid UTF-8"),
            std::string::npos);
  EXPECT_NE(load_error("257 '\\N{BULLET}' 3\n").find("not supported"), std::string::npos);
  // A vocab that cannot encode every byte is refused at load rather than failing on input.
  const auto path = temp_dir() / "small.txt";
  write_bytes(path, {'1', ' ', '\'', 'a', '\'', ' ', '1', '\n'});
  try {
    Tokenizer::load(path.string());
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("byte 0x00 has no single-byte token"), std::string::npos)
        << e.what();
  }
}

TEST(WorldVocab, GreedyLongestMatchWalksThroughNonTokenStates) {
  // "abcd" and "ab" are tokens, "abc" is not: "abcx" must fall back to "ab" + "c" + "x", and
  // "abcd" must be found through the non-token state "abc".
  auto tok = load_vocab("257 'ab' 2\n258 'abcd' 4\n259 'bcd' 3\n");
  EXPECT_EQ(tok->encode("abcd"), (std::vector<int>{258}));
  EXPECT_EQ(tok->encode("abcx"), (std::vector<int>{257, 'c' + 1, 'x' + 1}));
  EXPECT_EQ(tok->encode("xabcd"), (std::vector<int>{'x' + 1, 258}));
  EXPECT_EQ(tok->encode("abcdbcd"), (std::vector<int>{258, 259}));
  EXPECT_EQ(tok->encode(""), std::vector<int>{});
}

TEST(WorldVocab, GreedyIsNotShortest) {
  // "ab" + "cdef" would be 2 tokens; greedy takes the longest first match "abc" and pays for it.
  auto tok = load_vocab("257 'ab' 2\n258 'abc' 3\n259 'cdef' 4\n");
  EXPECT_EQ(tok->encode("abcdef"), (std::vector<int>{258, 'd' + 1, 'e' + 1, 'f' + 1}));
}

TEST(WorldVocab, LaterDuplicateBytesWinAsInTheReference) {
  auto tok = load_vocab("257 'zz' 2\n258 'zz' 2\n");
  EXPECT_EQ(tok->encode("zz"), (std::vector<int>{258}));
  EXPECT_EQ(tok->decode(std::vector<int>{257, 258}), "zzzz");
}

class WorldReal : public ::testing::Test {
 protected:
  void SetUp() override {
    RWKV_REQUIRE_SHARED();
    path_ = (shared_dir() / "tokenizers/rwkv_vocab_v20230424.txt").string();
    if (!std::filesystem::exists(path_)) GTEST_SKIP() << "SKIPPED: " << path_ << " not found";
    tok_ = Tokenizer::load(path_);
  }
  std::string path_;
  std::unique_ptr<Tokenizer> tok_;
};

TEST_F(WorldReal, LayoutFacts) {
  EXPECT_EQ(tok_->vocab_size(), 65530);
  for (int b = 0; b < 256; ++b) EXPECT_EQ(tok_->token_bytes(b + 1), std::string(1, char(b)));
  EXPECT_EQ(tok_->token_bytes(65529), std::string(128, ' '));
  EXPECT_EQ(tok_->token_bytes(2423), "\xC2\x80");
  EXPECT_EQ(tok_->encode(std::string(257, ' ')), (std::vector<int>{65529, 65529, 33}));
  // <|endoftext|> is plain text for World.
  EXPECT_GT(tok_->encode("<|endoftext|>").size(), 1u);
  EXPECT_THROW(tok_->decode(std::vector<int>{65530}), Error);
  EXPECT_THROW(tok_->decode(std::vector<int>{-1}), Error);
  EXPECT_EQ(tok_->decode(std::vector<int>{0, 35, 0}), "\"");
}

TEST_F(WorldReal, RandomBytesRoundTrip) {
  std::mt19937 rng(7);
  for (int i = 0; i < 300; ++i) {
    std::string s(rng() % 200, '\0');
    for (char& c : s) c = char(rng());
    const auto ids = tok_->encode(s);
    ASSERT_EQ(tok_->decode(ids), s);
    for (int id : ids) ASSERT_TRUE(id >= 1 && id < 65530);
  }
}

// Random spans of real tokens glued together (mostly valid UTF-8, sometimes cut mid-character):
// the round trip holds and the greedy choice is never shorter than a real token at that point.
TEST_F(WorldReal, TokenSoupRoundTripAndGreediness) {
  std::mt19937 rng(11);
  for (int i = 0; i < 200; ++i) {
    std::string s;
    for (int k = rng() % 30; k > 0; --k) {
      const std::string_view t = tok_->token_bytes(1 + int(rng() % 65529));
      s += t.substr(0, 1 + rng() % t.size());
    }
    const auto ids = tok_->encode(s);
    ASSERT_EQ(tok_->decode(ids), s);
    size_t pos = 0;
    for (int id : ids) {
      const size_t len = tok_->token_bytes(id).size();
      // No token with more bytes than the chosen one matches here (spot-check 64 random ids).
      for (int k = 0; k < 64; ++k) {
        const std::string_view other = tok_->token_bytes(1 + int(rng() % 65529));
        if (other.size() > len && s.compare(pos, other.size(), other) == 0)
          FAIL() << "a longer token matches at " << pos;
      }
      pos += len;
    }
  }
}

}  // namespace
}  // namespace rwkv::test
