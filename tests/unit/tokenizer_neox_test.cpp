// GPT-NeoX 20B tokenizer: the pitfalls of shared/docs/TOKENIZERS.md one by one (expected ids from
// Hugging Face tokenizers 0.23.2), invalid UTF-8 input, decode rules, round-trip properties on
// random Unicode text, and clear errors for tokenizer.json files we do not support.
#include <gtest/gtest.h>

#include <random>

#include "rwkv/tokenizer.h"
#include "test_util.h"
#include "tokenizer/unicode.h"

namespace rwkv::test {
namespace {

using Ids = std::vector<int>;

class Neox : public ::testing::Test {
 protected:
  void SetUp() override {
    RWKV_REQUIRE_SHARED();
    const auto path = shared_dir() / "tokenizers/20B_tokenizer.json";
    if (!std::filesystem::exists(path)) GTEST_SKIP() << "SKIPPED: " << path << " not found";
    static std::unique_ptr<Tokenizer> loaded = Tokenizer::load(path.string());
    tok_ = loaded.get();
  }
  Ids enc(std::string_view s) const { return tok_->encode(s); }
  const Tokenizer* tok_ = nullptr;
};

TEST_F(Neox, Basics) {
  EXPECT_EQ(tok_->name(), "neox");
  EXPECT_EQ(tok_->vocab_size(), 50277);
  EXPECT_EQ(enc(""), Ids{});
  EXPECT_EQ(enc("hello \n world"), (Ids{25521, 2490, 1533}));
}

TEST_F(Neox, SpecialTokensAreMatchedInRawTextWithoutStripping) {
  EXPECT_EQ(enc(" <|endoftext|> x"), (Ids{209, 0, 1269}));
  EXPECT_EQ(enc("<|endoftext|><|endoftext|><|padding|>"), (Ids{0, 0, 1}));
  // Case-sensitive, and a partial token is plain text.
  EXPECT_EQ(enc("<|ENDOFTEXT|><|endoftext|"),
            (Ids{29, 93, 8112, 48, 5518, 9465, 93, 2730, 93, 423, 1171, 1156, 93}));
}

TEST_F(Neox, SpaceRunsAreAddedTokensSplitBeforeTheRegex) {
  EXPECT_EQ(enc("a  b"), (Ids{66, 50276, 67}));
  EXPECT_EQ(enc("x" + std::string(30, ' ') + "y"), (Ids{89, 50254, 50272, 90}));
  EXPECT_EQ(enc("  hi"), (Ids{50276, 5801}));
  EXPECT_EQ(enc("a" + std::string(25, ' ') + "b"), (Ids{66, 50254, 270}));  // 24 + " b"
}

TEST_F(Neox, Gpt2RegexEdges) {
  EXPECT_EQ(enc("I'M he's we'll they're 'twas"),
            (Ids{42, 8, 46, 344, 434, 359, 1833, 597, 1472, 686, 85, 4238}));
  EXPECT_EQ(enc("\t\tfoo"), (Ids{186, 186, 12110}));
  EXPECT_EQ(enc("a\r\n\r\nb"), (Ids{66, 4888, 187, 67}));
  // NBSP, U+3000, U+2028 and U+0085 are \s; each is followed by a non-space, so stands alone.
  EXPECT_EQ(enc("x\u00a0\u00a0y\u3000z\u2028w\u0085v"),
            (Ids{89, 575, 575, 90, 19409, 91, 40702, 88, 16643, 87}));
  // \p{N} beyond ASCII digits.
  EXPECT_EQ(enc("½²Ⅻ١٢٣४"),
            (Ids{8313, 15818, 158, 216, 106, 149, 96, 149, 97, 149, 98, 6123, 105}));
}

TEST_F(Neox, NfcWithUnicode9Tables) {
  // U+1E2EE (Unicode 12) is a starter for the reference, so it does not move before U+0315.
  EXPECT_EQ(enc("a\u0315\u0300\u05AE\U0001E2EE"
                "b"),
            (Ids{5991, 146, 108, 136, 232, 172, 241, 222, 108, 67}));
  EXPECT_EQ(tok_->decode(enc("a\u0315\u0300\u05AE\U0001E2EE"
                             "b")),
            "\u00e0\u05AE\u0315\U0001E2EE"
            "b");
  EXPECT_EQ(enc("\u1100\u1161\u11A8"), (Ids{26532, 212}));                   // Hangul -> 각
  EXPECT_EQ(enc("\u212B\u2126\uFB01"), (Ids{18221, 138, 104, 46992, 212}));  // singletons; ﬁ stays
  EXPECT_EQ(enc("e\u0301"), (Ids{860}));                                     // é
  EXPECT_EQ(enc("\u0F73\u0958"), (Ids{49233, 111, 49233, 112, 24381, 2483, 122}));  // exclusions
}

TEST_F(Neox, InvalidUtf8BecomesReplacementCharacters) {
  EXPECT_EQ(enc("\xFF"), (Ids{21478}));  // U+FFFD
  EXPECT_EQ(enc("abc\xE4\xB8"
                "def"),
            enc("abc\uFFFDdef"));
  EXPECT_EQ(enc("abc\xE4\xB8"
                "def"),
            (Ids{19758, 21478, 1545}));
  EXPECT_EQ(enc("\xC0\x80"), enc("\uFFFD\uFFFD"));
}

TEST_F(Neox, DecodeRules) {
  EXPECT_EQ(tok_->decode(Ids{50276, 50254}), std::string(26, ' '));  // raw content, not byte-mapped
  EXPECT_EQ(tok_->decode(Ids{0, 1}), "<|endoftext|><|padding|>");
  EXPECT_TRUE(tok_->is_special(0));
  EXPECT_TRUE(tok_->is_special(1));
  EXPECT_FALSE(tok_->is_special(50254));
  EXPECT_FALSE(tok_->is_special(50277));
  // A lone byte of a multi-byte character decodes to U+FFFD; token_bytes keeps it raw.
  const Ids yu = enc("\u9b31");  // 鬱 is three byte-level tokens
  ASSERT_EQ(yu, (Ids{165, 107, 111}));
  EXPECT_EQ(tok_->decode(Ids{yu[0]}), "\uFFFD");
  EXPECT_EQ(tok_->token_bytes(yu[0]), "\xE9");
  EXPECT_EQ(tok_->decode(yu), "\u9b31");
  EXPECT_THROW(tok_->decode(Ids{50277}), Error);
  EXPECT_THROW(tok_->decode(Ids{-3}), Error);
}

// Random text from many scripts, marks, whitespace and special tokens: decode(encode(x)) is the
// NFC of x piece by piece, and re-encoding the decoded text gives the same ids.
TEST_F(Neox, RandomUnicodeRoundTrips) {
  const std::vector<std::pair<char32_t, char32_t>> ranges = {
      {0x20, 0x7E},     {0x20, 0x7E},       {0x9, 0xD},         {0xA0, 0x17F},    {0x300, 0x36F},
      {0x590, 0x5FF},   {0x600, 0x6FF},     {0x900, 0x9FF},     {0xE00, 0xFFF},   {0x1100, 0x11FF},
      {0x1DC0, 0x1DFF}, {0x2000, 0x206F},   {0x3000, 0x30FF},   {0x4E00, 0x4FFF}, {0xAC00, 0xACFF},
      {0xFB00, 0xFB4F}, {0x1F300, 0x1F64F}, {0x1E2C0, 0x1E2FF}, {0x80, 0x10FFFF}};
  std::mt19937 rng(3);
  for (int i = 0; i < 500; ++i) {
    std::string s;
    for (int k = rng() % 40; k > 0; --k) {
      if (rng() % 25 == 0) {
        s += rng() % 2 ? "<|endoftext|>" : std::string(1 + rng() % 30, ' ');
        continue;
      }
      const auto [lo, hi] = ranges[rng() % ranges.size()];
      char32_t cp = lo + rng() % (hi - lo + 1);
      if (cp >= 0xD800 && cp <= 0xDFFF) cp = 'x';
      unicode::append_utf8(s, cp);
    }
    const Ids ids = enc(s);
    const std::string decoded = tok_->decode(ids);
    ASSERT_EQ(enc(decoded), ids);
    if (s.find("<|endoftext|>") == std::string::npos) {
      ASSERT_EQ(decoded, unicode::nfc(s));
    }
  }
}

TEST_F(Neox, NoCrashOnRandomBytes) {
  std::mt19937 rng(5);
  for (int i = 0; i < 300; ++i) {
    std::string s(rng() % 300, '\0');
    for (char& c : s) c = char(rng() % 4 ? rng() : 0x80 + rng() % 64);
    const Ids ids = enc(s);
    const std::string decoded = tok_->decode(ids);
    ASSERT_TRUE(unicode::is_valid_utf8(decoded));
    ASSERT_EQ(enc(decoded), ids);
  }
}

std::string json_error(const std::string& content) {
  const auto path = temp_dir() / "tokenizer.json";
  write_bytes(path, std::vector<uint8_t>(content.begin(), content.end()));
  try {
    Tokenizer::load(path.string());
  } catch (const Error& e) {
    return e.what();
  }
  return "no error";
}

TEST(NeoxJson, UnsupportedOrBrokenFilesAreRefusedClearly) {
  const std::string pre =
      R"("pre_tokenizer": {"type": "ByteLevel"}, "decoder": {"type": "ByteLevel"})";
  EXPECT_NE(json_error("{ not json").find("tokenizer.json: not a valid tokenizer.json"),
            std::string::npos);
  EXPECT_NE(json_error(R"({"model": {"type": "Unigram", "vocab": []}, )" + pre + "}")
                .find("model type 'Unigram' is not supported"),
            std::string::npos);
  EXPECT_NE(json_error(R"({"model": {"type": "BPE", "vocab": {}, "merges": []}, )"
                       R"("pre_tokenizer": {"type": "Whitespace"}})")
                .find("pre_tokenizer must be ByteLevel"),
            std::string::npos);
  EXPECT_NE(
      json_error(R"({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": ["a b"]}, )" + pre + "}")
          .find("merge 0 'a b' uses a token missing from the vocab"),
      std::string::npos);
  EXPECT_NE(
      json_error(R"({"model": {"type": "BPE", "vocab": {"a": -4}, "merges": []}, )" + pre + "}")
          .find("bad id"),
      std::string::npos);
  EXPECT_NE(json_error(R"({"normalizer": {"type": "NFKC"}, "model": {"type": "BPE", "vocab": {},)"
                       R"( "merges": []}, )" +
                       pre + "}")
                .find("normalizer 'NFKC' is not supported"),
            std::string::npos);
}

// A tiny GPT-2 style file: add_prefix_space, [A, B] merges, unknown byte symbols dropped.
TEST(NeoxJson, SmallByteLevelBpe) {
  const auto path = temp_dir() / "tiny.json";
  const std::string content = R"({
    "added_tokens": [{"id": 5, "content": "<s>", "special": true}],
    "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": true},
    "decoder": {"type": "ByteLevel"},
    "model": {"type": "BPE", "vocab": {"Ġ": 0, "a": 1, "b": 2, "Ġa": 3, "Ġab": 4},
              "merges": [["Ġ", "a"], "Ġa b"]}})";
  write_bytes(path, std::vector<uint8_t>(content.begin(), content.end()));
  auto tok = Tokenizer::load(path.string());
  EXPECT_EQ(tok->encode("ab"), (Ids{4}));  // " ab" after the prefix space
  EXPECT_EQ(tok->encode("ab<s>ba"), (Ids{4, 5, 0, 2, 1}));
  EXPECT_EQ(tok->encode("c"), (Ids{0}));  // 'c' has no symbol: dropped like the reference
  EXPECT_EQ(tok->decode(Ids{4, 5}), " ab<s>");
  EXPECT_EQ(tok->vocab_size(), 6);
}

}  // namespace
}  // namespace rwkv::test
