// The RWKV World tokenizer: vocab file parsing (Python str/bytes literals, without eval) and
// greedy longest-match encoding over bytes with a double-array trie.
//
// Vocab lines read `ID LITERAL LENGTH`; the literal may contain spaces, so the line is cut at its
// first and last space. In a str literal `\xHH` is the code point U+00HH (2 UTF-8 bytes when
// >= 0x80); in a bytes literal it is one raw byte. LENGTH is the token's byte length and is
// checked, as the reference asserts it. Id 0 is end of text and has no line.
#include <algorithm>
#include <array>
#include <charconv>
#include <optional>

#include "tokenizer/tokenizers.h"
#include "tokenizer/unicode.h"

namespace rwkv::tokenizer {

namespace {

// Largest id accepted in a vocab file: bounds the per-id arrays a bad file can make us allocate.
constexpr int kMaxId = 1 << 22;

class VocabError {
 public:
  explicit VocabError(std::string what) : what_(std::move(what)) {}
  const std::string& what() const { return what_; }

 private:
  std::string what_;
};

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// Reads `digits` hex digits at s[i]; advances i.
uint32_t read_hex(std::string_view s, size_t& i, int digits, char escape) {
  uint32_t v = 0;
  for (int k = 0; k < digits; ++k, ++i) {
    const int h = i < s.size() ? hex_value(s[i]) : -1;
    if (h < 0)
      throw VocabError(std::string("truncated \\") + escape + " escape (needs " +
                       std::to_string(digits) + " hex digits)");
    v = v * 16 + uint32_t(h);
  }
  return v;
}

// The bytes of a Python str literal (UTF-8 encoded) or bytes literal, as eval() would give them.
std::string parse_literal(std::string_view lit) {
  bool is_bytes = false;
  if (!lit.empty() && (lit[0] == 'b' || lit[0] == 'B')) {
    is_bytes = true;
    lit.remove_prefix(1);
  } else if (!lit.empty() && (lit[0] == 'u' || lit[0] == 'U')) {
    lit.remove_prefix(1);
  }
  if (lit.size() < 2 || (lit[0] != '\'' && lit[0] != '"') || lit.back() != lit[0])
    throw VocabError("expected a quoted Python str or bytes literal");
  const char quote = lit[0];
  const std::string_view body = lit.substr(1, lit.size() - 2);
  std::string out;
  auto put = [&](uint32_t v) {  // a code point (str) or a byte (bytes)
    if (is_bytes) {
      if (v > 0xFF) throw VocabError("byte value above 0xff in a bytes literal");
      out += char(v);
    } else {
      if (v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF))
        throw VocabError("escape is not a Unicode scalar value (cannot be encoded as UTF-8)");
      unicode::append_utf8(out, v);
    }
  };
  for (size_t i = 0; i < body.size();) {
    const char c = body[i];
    if (c == quote) throw VocabError("unescaped quote inside the literal");
    if (c != '\\') {
      if (is_bytes && static_cast<uint8_t>(c) >= 0x80)
        throw VocabError("non-ASCII character in a bytes literal");
      out += c;
      ++i;
      continue;
    }
    if (i + 1 >= body.size()) throw VocabError("literal ends with a backslash");
    const char e = body[i + 1];
    i += 2;
    switch (e) {
      case '\\':
      case '\'':
      case '"':
        out += e;
        break;
      case 'n':
        out += '\n';
        break;
      case 't':
        out += '\t';
        break;
      case 'r':
        out += '\r';
        break;
      case 'a':
        out += '\a';
        break;
      case 'b':
        out += '\b';
        break;
      case 'f':
        out += '\f';
        break;
      case 'v':
        out += '\v';
        break;
      case 'x':
        put(read_hex(body, i, 2, e));
        break;
      case '0':
      case '1':
      case '2':
      case '3':
      case '4':
      case '5':
      case '6':
      case '7': {
        uint32_t v = uint32_t(e - '0');
        for (int k = 0; k < 2 && i < body.size() && body[i] >= '0' && body[i] <= '7'; ++k, ++i)
          v = v * 8 + uint32_t(body[i] - '0');
        put(v);
        break;
      }
      case 'u':
      case 'U':
      case 'N':
        if (!is_bytes) {
          if (e == 'N') throw VocabError("\\N{...} escapes are not supported");
          put(read_hex(body, i, e == 'u' ? 4 : 8, e));
          break;
        }
        [[fallthrough]];  // not an escape in bytes literals
      default:            // Python keeps unknown escapes as a backslash and the character
        out += '\\';
        --i;
        break;
    }
  }
  return out;
}

std::optional<long> parse_int(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r'))
    s.remove_suffix(1);
  long v = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || end != s.data() + s.size() || s.empty()) return std::nullopt;
  return v;
}

// Double-array trie over token bytes: from state s, byte c leads to t = base[s] + c when
// check[t] == s. One 12-byte unit per state keeps a transition to one cache line.
struct Unit {
  int32_t base = 0;
  int32_t check = -1;
  int32_t id = -1;  // token ending here, or -1
};

class TrieBuilder {
 public:
  struct Key {
    std::string_view bytes;
    int id;
  };
  explicit TrieBuilder(std::vector<Key> keys) : keys_(std::move(keys)) {
    grow(1 << 16);
    use(0);  // the root
    units_[0].check = 0;
    if (!keys_.empty()) build_all();
    // Any state's base + 255 must stay inside the array so the walk needs no bounds check.
    int32_t max_base = 0;
    for (const Unit& u : units_) max_base = std::max(max_base, u.base);
    units_.resize(std::max(size_t(max_base) + 256, last_used_ + 1));
  }
  std::vector<Unit> take() { return std::move(units_); }

 private:
  // Makes slots [0, n) exist (doubling, so the searches below stay cheap).
  void grow(size_t n) {
    const size_t old = next_free_.size();
    if (n <= old) return;
    n = std::max(n, 2 * old);
    units_.resize(n);
    next_free_.resize(n);
    for (size_t i = old; i < n; ++i) next_free_[i] = uint32_t(i);
  }
  // Smallest free slot >= i (union-find with path halving: used slots point further on).
  size_t find_free(size_t i) {
    for (;;) {
      grow(i + 512);
      if (next_free_[i] == i) return i;
      next_free_[i] = next_free_[next_free_[i]];
      i = next_free_[i];
    }
  }
  void use(size_t i) {
    next_free_[i] = uint32_t(i + 1);
    last_used_ = std::max(last_used_, i);
  }
  // Places the children of every state, depth first with an explicit stack (a token can be as
  // long as a line of the file, too deep for recursion). keys_[lo, hi) are the keys below state
  // s, sorted and sharing their first `depth` bytes.
  void build_all() {
    struct Task {
      int32_t s;
      size_t lo, hi, depth;
    };
    std::vector<Task> stack{{0, 0, keys_.size(), 0}};
    std::vector<std::pair<uint8_t, size_t>> children;  // (label, first key)
    while (!stack.empty()) {
      auto [s, lo, hi, depth] = stack.back();
      stack.pop_back();
      if (keys_[lo].bytes.size() == depth) units_[size_t(s)].id = keys_[lo++].id;
      if (lo == hi) continue;
      children.clear();
      for (size_t i = lo; i < hi; ++i) {
        const auto c = static_cast<uint8_t>(keys_[i].bytes[depth]);
        if (children.empty() || children.back().first != c) children.emplace_back(c, i);
      }
      const size_t base = find_base(children);
      units_[size_t(s)].base = int32_t(base);
      for (size_t k = 0; k < children.size(); ++k) {
        const size_t t = base + children[k].first;
        use(t);
        units_[t].check = s;
        const size_t end = k + 1 < children.size() ? children[k + 1].second : hi;
        stack.push_back({int32_t(t), children[k].second, end, depth + 1});
      }
    }
  }
  // The first base at which every child's slot is free. States with several children only look
  // near the end of the used area: searching the sparse holes further back costs 10x the tries
  // for the real vocab and saves no space (single children fill those holes anyway).
  size_t find_base(const std::vector<std::pair<uint8_t, size_t>>& children) {
    constexpr size_t kWindow = 256;
    size_t start = size_t(children[0].first) + 1;
    if (children.size() > 1 && last_used_ > kWindow) start = std::max(start, last_used_ - kWindow);
    for (size_t pos = find_free(start);; pos = find_free(pos + 1)) {
      const size_t base = pos - children[0].first;
      bool fits = true;
      for (size_t k = 1; k < children.size() && fits; ++k) {
        const size_t t = base + children[k].first;
        grow(t + 1);
        fits = next_free_[t] == t;
      }
      if (fits) return base;
    }
  }

  std::vector<Key> keys_;
  std::vector<Unit> units_;
  std::vector<uint32_t> next_free_;
  size_t last_used_ = 0;
};

class WorldTokenizer final : public Tokenizer {
 public:
  WorldTokenizer(std::string_view content, const std::string& name) {
    byte_id_.fill(-1);
    if (const size_t valid = unicode::valid_utf8_prefix(content); valid != content.size()) {
      const auto line = std::count(content.begin(), content.begin() + long(valid), '\n') + 1;
      throw Error(name + ":" + std::to_string(line) + ": not valid UTF-8");
    }
    struct Entry {
      int id;
      uint32_t offset, size;
    };
    std::vector<Entry> entries;
    int max_id = 0;
    size_t line_no = 0;
    for (size_t pos = 0; pos < content.size();) {
      size_t eol = content.find('\n', pos);
      if (eol == std::string_view::npos) eol = content.size();
      std::string_view line = content.substr(pos, eol - pos);
      pos = eol + 1;
      ++line_no;
      if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
      try {
        const size_t first = line.find(' '), last = line.rfind(' ');
        if (first == std::string_view::npos || last == first)
          throw VocabError("expected 'ID LITERAL LENGTH'");
        const auto id = parse_int(line.substr(0, first));
        const auto length = parse_int(line.substr(last + 1));
        if (!id || *id < 1 || *id > kMaxId)
          throw VocabError("bad token id (expected 1.." + std::to_string(kMaxId) + ")");
        if (!length) throw VocabError("bad byte length");
        std::string_view lit = line.substr(first + 1, last - first - 1);
        while (!lit.empty() && (lit.front() == ' ' || lit.front() == '\t')) lit.remove_prefix(1);
        while (!lit.empty() && (lit.back() == ' ' || lit.back() == '\t')) lit.remove_suffix(1);
        const std::string bytes = parse_literal(lit);
        if (long(bytes.size()) != *length)
          throw VocabError("literal has " + std::to_string(bytes.size()) + " bytes, line says " +
                           std::to_string(*length));
        if (bytes.empty()) throw VocabError("empty token");
        entries.push_back({int(*id), uint32_t(bytes_.size()), uint32_t(bytes.size())});
        bytes_ += bytes;
        max_id = std::max(max_id, int(*id));
      } catch (const VocabError& e) {
        throw Error(name + ":" + std::to_string(line_no) + ": " + e.what());
      }
    }
    if (entries.empty()) throw Error(name + ": no tokens (not an RWKV World vocab file?)");
    vocab_size_ = max_id + 1;
    token_.assign(size_t(vocab_size_), {0, 0});
    has_token_.assign(size_t(vocab_size_), 0);
    has_token_[0] = 1;  // end of text: no bytes
    for (const Entry& e : entries) {
      if (has_token_[size_t(e.id)])
        throw Error(name + ": token id " + std::to_string(e.id) + " appears twice");
      has_token_[size_t(e.id)] = 1;
      token_[size_t(e.id)] = {e.offset, e.size};
    }
    // The reference maps bytes to ids with a dict built in file order, so when two lines have
    // the same bytes the later one wins; a stable sort keeps file order among equal keys.
    std::vector<TrieBuilder::Key> keys;
    keys.reserve(entries.size());
    for (const Entry& e : entries)
      keys.push_back({std::string_view(bytes_).substr(e.offset, e.size), e.id});
    std::stable_sort(keys.begin(), keys.end(),
                     [](const auto& a, const auto& b) { return a.bytes < b.bytes; });
    std::vector<TrieBuilder::Key> unique;
    unique.reserve(keys.size());
    for (size_t i = 0; i < keys.size(); ++i)
      if (i + 1 == keys.size() || keys[i + 1].bytes != keys[i].bytes) unique.push_back(keys[i]);
    for (const auto& k : unique)
      if (k.bytes.size() == 1) byte_id_[static_cast<uint8_t>(k.bytes[0])] = k.id;
    for (int b = 0; b < 256; ++b)
      if (byte_id_[b] < 0)
        throw Error(name + ": byte 0x" + "0123456789abcdef"[b >> 4] + "0123456789abcdef"[b & 15] +
                    " has no single-byte token, so some inputs could not be encoded");
    units_ = TrieBuilder(std::move(unique)).take();
  }

  std::vector<int> encode(std::string_view text) const override {
    std::vector<int> ids;
    ids.reserve(text.size() / 3 + 1);
    const auto* src = reinterpret_cast<const uint8_t*>(text.data());
    const size_t n = text.size();
    const Unit* units = units_.data();
    for (size_t pos = 0; pos < n;) {
      // Walk as deep as the bytes allow, through states that end no token too, and keep the
      // last token end seen: the longest vocab entry that prefixes the rest.
      int best = byte_id_[src[pos]];
      size_t best_len = 1;
      int32_t s = 0;
      for (size_t i = pos; i < n; ++i) {
        const int32_t t = units[s].base + src[i];
        if (units[t].check != s) break;
        s = t;
        if (units[s].id >= 0) {
          best = units[s].id;
          best_len = i - pos + 1;
        }
      }
      ids.push_back(best);
      pos += best_len;
    }
    return ids;
  }

  std::string decode(std::span<const int> ids) const override {
    size_t total = 0;
    for (int id : ids) total += token_bytes(id).size();
    std::string out;
    out.reserve(total);
    for (int id : ids) {
      const auto [offset, size] = token_[size_t(id)];
      out.append(bytes_.data() + offset, size);
    }
    return out;
  }

  std::string_view token_bytes(int id) const override {
    if (id < 0 || id >= vocab_size_ || !has_token_[size_t(id)])
      throw Error("token id " + std::to_string(id) + " is not in the World vocabulary (ids 0.." +
                  std::to_string(vocab_size_ - 1) + ")");
    return std::string_view(bytes_).substr(token_[size_t(id)].first, token_[size_t(id)].second);
  }
  bool is_special(int id) const override { return id == 0; }
  int vocab_size() const override { return vocab_size_; }
  std::string_view name() const override { return "world"; }

 private:
  std::string bytes_;                                 // every token's bytes, back to back
  std::vector<std::pair<uint32_t, uint32_t>> token_;  // id -> (offset, size) in bytes_
  std::vector<uint8_t> has_token_;
  int vocab_size_ = 0;
  std::array<int, 256> byte_id_;
  std::vector<Unit> units_;
};

}  // namespace

std::unique_ptr<Tokenizer> make_world(std::string_view content, const std::string& name) {
  return std::make_unique<WorldTokenizer>(content, name);
}

}  // namespace rwkv::tokenizer
