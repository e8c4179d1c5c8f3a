// Byte-level BPE from a Hugging Face tokenizer.json (GPT-NeoX 20B; GPT-2 style files too),
// encoding and decoding exactly as Hugging Face `tokenizers` does. The encode pipeline, in the
// reference's order:
//   1. split out added tokens with normalized=false (<|endoftext|>) on the raw text,
//      leftmost-longest;
//   2. NFC each remaining piece (Unicode 9.0 tables, see unicode.h);
//   3. split out added tokens with normalized=true (the runs of 2..24 spaces), leftmost-longest,
//      so those runs never reach the regex;
//   4. GPT-2 regex pre-tokenization of each remaining segment;
//   5. bytes -> byte-level symbols, then BPE merges by rank (lowest first, leftmost on ties).
// A post_processor is ignored: encode is the reference's encode(text, add_special_tokens=false)
// (the 20B file's ByteLevel post-processor adds nothing anyway).
// Decode joins the tokens' bytes (a token with a character outside the byte-level alphabet, like
// the space-run tokens, contributes its own UTF-8) and replaces invalid UTF-8 with U+FFFD.
#include <algorithm>
#include <array>
#include <nlohmann/json.hpp>
#include <unordered_map>

#include "tokenizer/tokenizers.h"
#include "tokenizer/unicode.h"

namespace rwkv::tokenizer {

namespace {

using nlohmann::json;
using unicode::CharClass;

class FormatError {
 public:
  explicit FormatError(std::string what) : what_(std::move(what)) {}
  const std::string& what() const { return what_; }

 private:
  std::string what_;
};

// GPT-2's byte <-> character table: printable Latin-1 bytes stand for themselves, the other 68
// bytes map in increasing order to U+0100, U+0101, ...
std::array<char32_t, 256> byte_to_char() {
  std::array<char32_t, 256> table{};
  char32_t next = 0x100;
  for (int b = 0; b < 256; ++b) {
    const bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
    table[size_t(b)] = printable ? char32_t(b) : next++;
  }
  return table;
}

// Leftmost-longest matcher for a set of added tokens (what the reference's Aho-Corasick with
// MatchKind::LeftmostLongest finds): the earliest match, the longest one starting there.
class TokenMatcher {
 public:
  void add(std::string_view pattern, int id) {
    if (pattern.empty()) return;
    int node = 0;
    for (unsigned char c : pattern) {
      const uint64_t key = (uint64_t(node) << 8) | c;
      auto it = edges_.find(key);
      if (it == edges_.end()) {
        it = edges_.emplace(key, int(ids_.size())).first;
        ids_.push_back(-1);
      }
      node = it->second;
    }
    ids_[size_t(node)] = id;
    first_byte_[static_cast<unsigned char>(pattern[0])] = true;
    empty_ = false;
  }
  // Calls f(piece, id) in order: id >= 0 for a matched token, -1 for the text between matches.
  template <class F>
  void split(std::string_view s, F&& f) const {
    if (empty_) {
      if (!s.empty()) f(s, -1);
      return;
    }
    size_t gap = 0;
    for (size_t i = 0; i < s.size();) {
      int best = -1;
      size_t best_len = 0;
      if (first_byte_[static_cast<unsigned char>(s[i])]) {
        int node = 0;
        for (size_t k = i; k < s.size(); ++k) {
          auto it = edges_.find((uint64_t(node) << 8) | static_cast<unsigned char>(s[k]));
          if (it == edges_.end()) break;
          node = it->second;
          if (ids_[size_t(node)] >= 0) {
            best = ids_[size_t(node)];
            best_len = k - i + 1;
          }
        }
      }
      if (best < 0) {
        ++i;
        continue;
      }
      if (i > gap) f(s.substr(gap, i - gap), -1);
      f(s.substr(i, best_len), best);
      i += best_len;
      gap = i;
    }
    if (gap < s.size()) f(s.substr(gap), -1);
  }

 private:
  std::unordered_map<uint64_t, int> edges_;  // (node, byte) -> node
  std::vector<int> ids_{-1};                 // node -> token id or -1; node 0 is the root
  std::array<bool, 256> first_byte_{};
  bool empty_ = true;
};

CharClass class_at(std::string_view s, size_t& i) {
  static const std::array<CharClass, 128> ascii = [] {
    std::array<CharClass, 128> t{};
    for (char32_t c = 0; c < 128; ++c) t[c] = unicode::char_class(c);
    return t;
  }();
  const auto c = static_cast<unsigned char>(s[i]);
  if (c < 0x80) {
    ++i;
    return ascii[c];
  }
  return unicode::char_class(unicode::next_code_point(s, i));
}

// The GPT-2 pre-tokenizer regex as Oniguruma runs it (leftmost alternative first, greedy):
//   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
// Every character is exactly one of \p{L}, \p{N}, \s or "other", so the matches tile the text.
template <class F>
void split_gpt2(std::string_view s, F&& emit) {
  const size_t n = s.size();
  for (size_t i = 0; i < n;) {
    if (s[i] == '\'' && i + 1 < n) {
      const char a = s[i + 1], b = i + 2 < n ? s[i + 2] : '\0';
      size_t len = 0;
      if (a == 's' || a == 't' || a == 'm' || a == 'd')
        len = 2;
      else if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l'))
        len = 3;
      if (len) {
        emit(s.substr(i, len));
        i += len;
        continue;
      }
    }
    // ` ?X+` for X = letter, number, other: an optional plain space, then a run of one class.
    const size_t j = s[i] == ' ' ? i + 1 : i;
    if (j < n) {
      size_t k = j;
      const CharClass cls = class_at(s, k);
      if (cls != CharClass::kSpace) {
        for (size_t next = k; k < n && class_at(s, next) == cls; next = k) k = next;
        emit(s.substr(i, k - i));
        i = k;
        continue;
      }
    }
    // Whitespace: `\s+(?!\S)` takes the run but leaves its last character to the word after it
    // (when there is one and the run has two or more characters); `\s+` takes a single one.
    size_t k = i, last = i;
    for (size_t next = k; k < n && class_at(s, next) == CharClass::kSpace; next = k) {
      last = k;
      k = next;
    }
    const size_t end = (k == n || last == i) ? k : last;
    emit(s.substr(i, end - i));
    i = end;
  }
}

// Hash for std::string keys that also looks up std::string_view without a copy.
struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};

class NeoxTokenizer final : public Tokenizer {
 public:
  NeoxTokenizer(std::string_view content, const std::string& name) {
    json j;
    try {
      j = json::parse(content);
    } catch (const json::exception& e) {
      throw Error(name + ": not a valid tokenizer.json: " + e.what());
    }
    try {
      load(j);
    } catch (const FormatError& e) {
      throw Error(name + ": " + e.what());
    } catch (const json::exception& e) {  // a field of the wrong type
      throw Error(name + ": unexpected tokenizer.json content: " + e.what());
    }
  }

  std::vector<int> encode(std::string_view input) const override {
    // The reference takes Unicode text: invalid bytes become U+FFFD, as a lossy reader would.
    std::string fixed;
    if (!unicode::is_valid_utf8(input)) unicode::append_lossy_utf8(fixed, input, true);
    const std::string_view text = fixed.empty() ? input : std::string_view(fixed);
    std::vector<int> ids;
    ids.reserve(text.size() / 3 + 1);
    Work work;
    raw_added_.split(text, [&](std::string_view piece, int id) {
      if (id >= 0) {
        ids.push_back(id);
        return;
      }
      const std::string normalized = nfc_ ? unicode::nfc(piece) : std::string(piece);
      normalized_added_.split(normalized, [&](std::string_view segment, int id2) {
        if (id2 >= 0) {
          ids.push_back(id2);
          return;
        }
        std::string prefixed;
        if (add_prefix_space_ && segment[0] != ' ') {
          prefixed = " " + std::string(segment);
          segment = prefixed;
        }
        if (use_regex_)
          split_gpt2(segment, [&](std::string_view word) { encode_word(word, ids, work); });
        else
          encode_word(segment, ids, work);
      });
    });
    return ids;
  }

  std::string decode(std::span<const int> ids) const override {
    std::string raw;
    for (int id : ids) raw += token_bytes(id);
    std::string out;
    out.reserve(raw.size());
    unicode::append_lossy_utf8(out, raw, true);
    return out;
  }

  std::string_view token_bytes(int id) const override {
    if (id < 0 || id >= vocab_size() || !has_token_[size_t(id)])
      throw Error("token id " + std::to_string(id) + " is not in the tokenizer.json vocabulary" +
                  " (ids 0.." + std::to_string(vocab_size() - 1) + ")");
    return token_bytes_[size_t(id)];
  }
  bool is_special(int id) const override {
    return id >= 0 && id < vocab_size() && special_[size_t(id)];
  }
  int vocab_size() const override { return int(token_bytes_.size()); }
  std::string_view name() const override { return "neox"; }

 private:
  struct Merge {
    uint32_t rank;
    int new_id;
  };
  // Per-encode buffers and the word cache (words repeat a lot in real text).
  struct Work {
    struct Symbol {
      int id, prev, next;
      bool alive;
    };
    struct Candidate {
      uint32_t rank;
      int pos, new_id;
      bool operator<(const Candidate& o) const {  // heap top = lowest rank, then leftmost
        return rank != o.rank ? rank > o.rank : pos > o.pos;
      }
    };
    std::vector<Symbol> symbols;
    std::vector<Candidate> heap;
    std::unordered_map<std::string, std::vector<int>, StringHash, std::equal_to<>> cache;
  };
  static constexpr size_t kMaxCacheEntries = 1 << 16;

  static uint64_t pair_key(int a, int b) { return (uint64_t(uint32_t(a)) << 32) | uint32_t(b); }
  const Merge* find_merge(int a, int b) const {
    auto it = merges_.find(pair_key(a, b));
    return it == merges_.end() ? nullptr : &it->second;
  }

  void encode_word(std::string_view word, std::vector<int>& ids, Work& w) const {
    if (word.size() == 1 && byte_symbol_[static_cast<unsigned char>(word[0])] >= 0) {
      ids.push_back(byte_symbol_[static_cast<unsigned char>(word[0])]);
      return;
    }
    if (auto it = w.cache.find(word); it != w.cache.end()) {
      ids.insert(ids.end(), it->second.begin(), it->second.end());
      return;
    }
    const size_t start = ids.size();
    bpe(word, ids, w);
    if (w.cache.size() < kMaxCacheEntries)
      w.cache.emplace(std::string(word), std::vector<int>(ids.begin() + long(start), ids.end()));
  }

  // BPE as the reference's Word::merge_all: a heap of candidate merges of adjacent symbols,
  // lowest rank first and leftmost on ties; a candidate whose pair has changed since it was
  // queued is skipped unless the pair now there merges into the same token.
  void bpe(std::string_view word, std::vector<int>& ids, Work& w) const {
    if (ignore_merges_) {
      if (auto it = vocab_by_bytes_.find(word); it != vocab_by_bytes_.end()) {
        ids.push_back(it->second);
        return;
      }
    }
    auto& sym = w.symbols;
    auto& heap = w.heap;
    sym.clear();
    heap.clear();
    for (unsigned char c : word) {
      const int id = byte_symbol_[c];
      if (id < 0) continue;  // no such symbol and no unk token: the reference drops it
      const int pos = int(sym.size());
      sym.push_back({id, pos - 1, pos + 1, true});
    }
    if (sym.empty()) return;
    sym.back().next = -1;
    auto push = [&](int left) {
      if (const Merge* m =
              find_merge(sym[size_t(left)].id, sym[size_t(sym[size_t(left)].next)].id)) {
        heap.push_back({m->rank, left, m->new_id});
        std::push_heap(heap.begin(), heap.end());
      }
    };
    for (int i = 0; i + 1 < int(sym.size()); ++i) push(i);
    while (!heap.empty()) {
      std::pop_heap(heap.begin(), heap.end());
      const auto top = heap.back();
      heap.pop_back();
      auto& left = sym[size_t(top.pos)];
      if (!left.alive || left.next < 0) continue;
      auto& right = sym[size_t(left.next)];
      const Merge* m = find_merge(left.id, right.id);
      if (!m || m->new_id != top.new_id) continue;
      left.id = top.new_id;
      right.alive = false;
      left.next = right.next;
      if (left.next >= 0) sym[size_t(left.next)].prev = top.pos;
      if (left.prev >= 0) push(left.prev);
      if (left.next >= 0) push(top.pos);
    }
    for (int i = 0; i >= 0; i = sym[size_t(i)].next) ids.push_back(sym[size_t(i)].id);
  }

  void load(const json& j) {
    const json& model = j.at("model");
    if (model.value("type", std::string("BPE")) != "BPE")
      throw FormatError("model type '" + model.value("type", std::string()) +
                        "' is not supported (only byte-level BPE, as GPT-NeoX and GPT-2 use)");
    check_options(j, model);

    // Byte-level alphabet.
    const auto b2c = byte_to_char();
    std::unordered_map<char32_t, uint8_t> c2b;
    for (int b = 0; b < 256; ++b) c2b[b2c[size_t(b)]] = uint8_t(b);
    // A token's bytes as the ByteLevel decoder gives them: each character mapped back to its
    // byte, or the token's own UTF-8 if any character is outside the alphabet.
    auto token_to_bytes = [&](const std::string& token) {
      std::string out;
      for (size_t i = 0; i < token.size();) {
        auto it = c2b.find(unicode::next_code_point(token, i));
        if (it == c2b.end()) return token;
        out += char(it->second);
      }
      return out;
    };

    const json& vocab = model.at("vocab");
    if (!vocab.is_object()) throw FormatError("model.vocab is not an object");
    std::unordered_map<std::string, int> token_to_id;
    int max_id = -1;
    for (const auto& [token, id_json] : vocab.items()) {
      const int id = checked_id(id_json, "model.vocab entry '" + token + "'");
      token_to_id[token] = id;
      max_id = std::max(max_id, id);
    }
    const json& added = j.contains("added_tokens") && !j["added_tokens"].is_null()
                            ? j["added_tokens"]
                            : json::array();
    for (const json& t : added) max_id = std::max(max_id, checked_id(t.at("id"), "added token"));
    if (max_id < 0) throw FormatError("empty vocabulary");
    token_bytes_.assign(size_t(max_id) + 1, {});
    has_token_.assign(size_t(max_id) + 1, 0);
    special_.assign(size_t(max_id) + 1, 0);
    for (const auto& [token, id] : token_to_id) {
      if (!unicode::is_valid_utf8(token)) throw FormatError("vocab token is not valid UTF-8");
      token_bytes_[size_t(id)] = token_to_bytes(token);
      has_token_[size_t(id)] = 1;
      if (ignore_merges_) vocab_by_bytes_[token_bytes_[size_t(id)]] = id;
    }
    for (int b = 0; b < 256; ++b) {
      std::string c;
      unicode::append_utf8(c, b2c[size_t(b)]);
      auto it = token_to_id.find(c);
      byte_symbol_[size_t(b)] = it == token_to_id.end() ? -1 : it->second;
    }

    // Merges: "A B" strings (the split is at the single space) or [A, B] pairs; rank = index.
    const json& merges = model.at("merges");
    merges_.reserve(merges.size());
    for (size_t rank = 0; rank < merges.size(); ++rank) {
      const json& m = merges[rank];
      std::string a, b;
      if (m.is_string()) {
        const std::string s = m.get<std::string>();
        const size_t space = s.find(' ');
        if (space == std::string::npos || s.find(' ', space + 1) != std::string::npos)
          throw FormatError("merge " + std::to_string(rank) + " '" + s + "' is not 'A B'");
        a = s.substr(0, space);
        b = s.substr(space + 1);
      } else if (m.is_array() && m.size() == 2) {
        a = m[0].get<std::string>();
        b = m[1].get<std::string>();
      } else {
        throw FormatError("merge " + std::to_string(rank) + " is neither 'A B' nor [A, B]");
      }
      auto ia = token_to_id.find(a), ib = token_to_id.find(b), ic = token_to_id.find(a + b);
      if (ia == token_to_id.end() || ib == token_to_id.end() || ic == token_to_id.end())
        throw FormatError("merge " + std::to_string(rank) + " '" + a + " " + b +
                          "' uses a token missing from the vocab");
      // Later duplicates win, as in the reference's map.
      merges_[pair_key(ia->second, ib->second)] = {uint32_t(rank), ic->second};
    }

    // Added tokens: matched before the model, split by whether they see normalized text.
    for (const json& t : added) {
      const int id = t.at("id").get<int>();
      const std::string content = t.at("content").get<std::string>();
      const bool special = t.value("special", false);
      if (t.value("lstrip", false) || t.value("rstrip", false) || t.value("single_word", false))
        throw FormatError("added token '" + content +
                          "' uses lstrip/rstrip/single_word, which is not supported");
      if (!unicode::is_valid_utf8(content)) throw FormatError("added token is not valid UTF-8");
      token_bytes_[size_t(id)] = token_to_bytes(content);
      has_token_[size_t(id)] = 1;
      special_[size_t(id)] = special;
      if (t.value("normalized", !special))
        normalized_added_.add(nfc_ ? unicode::nfc(content) : content, id);
      else
        raw_added_.add(content, id);
    }
  }

  static int checked_id(const json& v, const std::string& what) {
    if (!v.is_number_integer() || v.get<int64_t>() < 0 || v.get<int64_t>() > (1 << 22))
      throw FormatError(what + " has a bad id");
    return v.get<int>();
  }

  // Accepts exactly the pipeline this class implements and names anything else.
  void check_options(const json& j, const json& model) {
    const json& norm = j.contains("normalizer") ? j["normalizer"] : json();
    if (!norm.is_null()) {
      if (norm.value("type", std::string()) != "NFC")
        throw FormatError("normalizer '" + norm.value("type", std::string("?")) +
                          "' is not supported (only NFC or none)");
      nfc_ = true;
    }
    const json& pre = j.contains("pre_tokenizer") ? j["pre_tokenizer"] : json();
    if (pre.is_null() || pre.value("type", std::string()) != "ByteLevel")
      throw FormatError("pre_tokenizer must be ByteLevel (a byte-level BPE tokenizer)");
    add_prefix_space_ = pre.value("add_prefix_space", true);
    use_regex_ = pre.value("use_regex", true);
    const json& dec = j.contains("decoder") ? j["decoder"] : json();
    if (!dec.is_null() && dec.value("type", std::string()) != "ByteLevel")
      throw FormatError("decoder must be ByteLevel");
    auto null_or = [&](const char* key, auto empty) {
      return !model.contains(key) || model[key].is_null() || model[key] == empty;
    };
    if (!null_or("dropout", 0.0)) throw FormatError("BPE dropout is not supported");
    if (!null_or("continuing_subword_prefix", "") || !null_or("end_of_word_suffix", ""))
      throw FormatError("continuing_subword_prefix / end_of_word_suffix are not supported");
    ignore_merges_ = model.value("ignore_merges", false);
  }

  bool nfc_ = false, add_prefix_space_ = false, use_regex_ = true, ignore_merges_ = false;
  std::vector<std::string> token_bytes_;  // id -> bytes as decoded
  std::vector<uint8_t> has_token_, special_;
  std::array<int, 256> byte_symbol_{};  // byte -> id of its byte-level symbol, or -1
  std::unordered_map<uint64_t, Merge> merges_;
  std::unordered_map<std::string, int, StringHash, std::equal_to<>> vocab_by_bytes_;
  TokenMatcher raw_added_, normalized_added_;
};

}  // namespace

std::unique_ptr<Tokenizer> make_neox(std::string_view content, const std::string& name) {
  return std::make_unique<NeoxTokenizer>(content, name);
}

}  // namespace rwkv::tokenizer
