// Every reference vector in shared/testdata/tokenizer/ (see its README and cases.json): encode
// ids, decode bytes, round trips and the decode-only cases, for the World and NeoX tokenizers,
// and streaming decode through Utf8Stream giving the same text as decode.
#include <gtest/gtest.h>

#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "rwkv/tokenizer.h"
#include "test_util.h"
#include "tokenizer/unicode.h"

namespace rwkv::test {
namespace {

std::filesystem::path vector_dir() { return shared_dir() / "testdata/tokenizer"; }

std::string read_text(const std::filesystem::path& p) {
  const auto b = read_bytes(p);
  return std::string(b.begin(), b.end());
}

// The .ids layout: decimal ids separated by single spaces, one trailing newline, empty file for
// no ids. Checked strictly so the CLI's output format can be compared byte for byte too.
std::vector<int> read_ids(const std::filesystem::path& p) {
  const std::string text = read_text(p);
  std::vector<int> ids = read_tokens(p);
  std::string again;
  for (size_t i = 0; i < ids.size(); ++i) again += (i ? " " : "") + std::to_string(ids[i]);
  if (!ids.empty()) again += "\n";
  EXPECT_EQ(again, text) << p << " is not in the documented .ids layout";
  return ids;
}

std::string lossy(std::string_view bytes) {
  Utf8Stream s;
  std::string out = s.push(bytes);
  return out + s.flush();
}

class TokenizerVectors : public ::testing::Test {
 protected:
  void SetUp() override {
    RWKV_REQUIRE_SHARED();
    if (!std::filesystem::exists(vector_dir() / "cases.json"))
      GTEST_SKIP() << "SKIPPED: " << vector_dir() << "/cases.json not found";
    std::ifstream f(vector_dir() / "cases.json");
    cases_ = nlohmann::json::parse(f);
    ASSERT_GE(cases_.size(), 1u);
  }
  static const Tokenizer& world() {
    static auto t =
        Tokenizer::load((shared_dir() / "tokenizers/rwkv_vocab_v20230424.txt").string());
    return *t;
  }
  static const Tokenizer& neox() {
    static auto t = Tokenizer::load((shared_dir() / "tokenizers/20B_tokenizer.json").string());
    return *t;
  }
  bool has(const std::string& file) const { return std::filesystem::exists(vector_dir() / file); }
  nlohmann::json cases_;
};

TEST_F(TokenizerVectors, EveryVectorFileBelongsToACase) {
  std::set<std::string> listed;
  for (const auto& c : cases_)
    for (const auto& f : c["files"]) listed.insert(f.get<std::string>());
  for (const auto& entry : std::filesystem::directory_iterator(vector_dir())) {
    const std::string name = entry.path().filename().string();
    const bool vector_file = name.ends_with(".ids") || name.ends_with(".alt_ids") ||
                             (name.ends_with(".txt") && name != "README.txt");
    if (vector_file) {
      EXPECT_TRUE(listed.count(name)) << name << " is not in cases.json, so no test would read it";
    }
  }
}

TEST_F(TokenizerVectors, WorldEncodeAndDecodeMatchExactly) {
  int checked = 0;
  for (const auto& c : cases_) {
    const std::string name = c["name"];
    if (!has(name + ".world.ids") || !has(name + ".txt")) continue;
    SCOPED_TRACE(name);
    const std::string text = read_text(vector_dir() / (name + ".txt"));
    const std::vector<int> want = read_ids(vector_dir() / (name + ".world.ids"));
    EXPECT_EQ(world().encode(text), want);
    if (c.contains("world_tokens")) {
      EXPECT_EQ(want.size(), c["world_tokens"].get<size_t>());
    }
    // Round trip on bytes holds for every input, valid UTF-8 or not.
    EXPECT_EQ(world().decode(want), text);
    ++checked;
  }
  EXPECT_GE(checked, 1);
}

TEST_F(TokenizerVectors, NeoxEncodeAndDecodeMatchExactly) {
  int checked = 0;
  for (const auto& c : cases_) {
    const std::string name = c["name"];
    if (!has(name + ".neox.ids") || !has(name + ".txt")) continue;
    SCOPED_TRACE(name);
    const std::string text = read_text(vector_dir() / (name + ".txt"));
    const std::vector<int> want = read_ids(vector_dir() / (name + ".neox.ids"));
    // .neox.ids is the Hugging Face (Unicode 9.0 NFC) result, which we match bit for bit; the
    // .alt_ids of version-sensitive cases are what a current-Unicode NFC would give.
    EXPECT_EQ(neox().encode(text), want);
    if (c.contains("neox_tokens")) {
      EXPECT_EQ(want.size(), c["neox_tokens"].get<size_t>());
    }
    const std::string decoded_file = name + ".neox.decoded.txt";
    const std::string expected = has(decoded_file) ? read_text(vector_dir() / decoded_file) : text;
    EXPECT_EQ(neox().decode(want), expected);
    if (c.value("neox_decode_equals_input", true)) {
      EXPECT_EQ(expected, text);
    }
    ++checked;
  }
  EXPECT_GE(checked, 1);
}

TEST_F(TokenizerVectors, DecodeOnlyCases) {
  int checked = 0;
  for (const auto& c : cases_) {
    if (!c.value("decode_only", false)) continue;
    const std::string name = c["name"];
    SCOPED_TRACE(name);
    if (has(name + ".world.ids")) {
      const auto ids = read_ids(vector_dir() / (name + ".world.ids"));
      EXPECT_EQ(world().decode(ids), read_text(vector_dir() / (name + ".world.decoded.txt")));
      ++checked;
    }
    if (has(name + ".neox.ids")) {
      auto ids = read_ids(vector_dir() / (name + ".neox.ids"));
      EXPECT_EQ(neox().decode(ids), read_text(vector_dir() / (name + ".neox.decoded.txt")));
      std::erase_if(ids, [](int id) { return neox().is_special(id); });
      EXPECT_EQ(neox().decode(ids),
                read_text(vector_dir() / (name + ".neox.decoded_skip_special.txt")));
      ++checked;
    }
  }
  EXPECT_GE(checked, 1);
}

// Printing tokens one at a time through Utf8Stream gives exactly NeoX's decode of all of them,
// and for World the lossy rendering of its bytes; no push ever ends inside a character.
TEST_F(TokenizerVectors, StreamingDecodeEqualsWholeDecode) {
  for (const auto& c : cases_) {
    const std::string name = c["name"];
    for (const char* kind : {"world", "neox"}) {
      const auto file = vector_dir() / (name + "." + kind + ".ids");
      if (!std::filesystem::exists(file)) continue;
      SCOPED_TRACE(name + " " + kind);
      const Tokenizer& tok = std::string(kind) == "world" ? world() : neox();
      const auto ids = read_tokens(file);
      Utf8Stream stream;
      std::string streamed;
      for (int id : ids) {
        const std::string piece = stream.push(tok.token_bytes(id));
        EXPECT_TRUE(unicode::is_valid_utf8(piece));  // never half a character
        streamed += piece;
      }
      streamed += stream.flush();
      EXPECT_EQ(streamed, lossy(tok.decode(ids)));
      if (tok.name() == "neox") {
        EXPECT_EQ(streamed, tok.decode(ids));
      }
    }
  }
}

}  // namespace
}  // namespace rwkv::test
