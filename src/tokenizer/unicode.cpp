// UTF-8 validation and lossy decoding, GPT-2 regex character classes and NFC (Unicode 9.0 tables,
// as the reference normalizer). Per-code-point properties come from a two-stage table built once
// from the generated range tables, so the hot loops do one or two array reads per character.
#include "tokenizer/unicode.h"

#include <algorithm>
#include <map>
#include <vector>

#include "tokenizer/unicode_tables.h"

namespace rwkv::unicode {

namespace {

// Property bits per code point.
constexpr uint8_t kClassMask = 3;             // CharClass
constexpr uint8_t kHasDecomposition = 4;      // canonical decomposition (Hangul syllables too)
constexpr uint8_t kComposesWithPrevious = 8;  // second of a composition pair
constexpr uint8_t kNonStarter = 16;           // canonical combining class != 0

constexpr char32_t kSBase = 0xAC00, kLBase = 0x1100, kVBase = 0x1161, kTBase = 0x11A7;
constexpr char32_t kLCount = 19, kVCount = 21, kTCount = 28, kNCount = kVCount * kTCount,
                   kSCount = kLCount * kNCount;

class PropTable {
 public:
  PropTable() {
    std::vector<uint8_t> flat(0x110000, 0);
    for (size_t i = 0; i < kClassRangeCount; ++i)
      for (uint32_t cp = kClassRanges[i].first; cp <= kClassRanges[i].last; ++cp)
        flat[cp] |= kClassRanges[i].klass;
    for (size_t i = 0; i < kCccRangeCount; ++i)
      for (uint32_t cp = kCccRanges[i].first; cp <= kCccRanges[i].last; ++cp)
        flat[cp] |= kNonStarter;
    for (size_t i = 0; i < kDecompositionCount; ++i)
      flat[kDecompositions[i].cp] |= kHasDecomposition;
    for (size_t i = 0; i < kCompositionCount; ++i)
      flat[kCompositions[i].second] |= kComposesWithPrevious;
    for (char32_t cp = kSBase; cp < kSBase + kSCount; ++cp) flat[cp] |= kHasDecomposition;
    for (char32_t cp = kVBase; cp < kVBase + kVCount; ++cp) flat[cp] |= kComposesWithPrevious;
    for (char32_t cp = kTBase + 1; cp < kTBase + kTCount; ++cp) flat[cp] |= kComposesWithPrevious;
    // Most 256-code-point blocks are identical (unassigned planes, CJK): store each once.
    std::map<std::string, uint16_t> seen;
    stage1_.resize(0x110000 >> 8);
    for (size_t block = 0; block < stage1_.size(); ++block) {
      std::string key(reinterpret_cast<const char*>(&flat[block << 8]), 256);
      auto [it, inserted] = seen.emplace(key, uint16_t(seen.size()));
      if (inserted) stage2_.insert(stage2_.end(), key.begin(), key.end());
      stage1_[block] = it->second;
    }
  }
  uint8_t get(char32_t cp) const {
    if (cp > 0x10FFFF) return 0;
    return static_cast<uint8_t>(stage2_[(size_t(stage1_[cp >> 8]) << 8) | (cp & 0xFF)]);
  }

 private:
  std::vector<uint16_t> stage1_;
  std::string stage2_;
};

const PropTable& props() {
  static const PropTable table;
  return table;
}

uint8_t combining_class(char32_t cp) {
  const CccRange* end = kCccRanges + kCccRangeCount;
  const CccRange* it = std::upper_bound(kCccRanges, end, cp,
                                        [](char32_t c, const CccRange& r) { return c < r.first; });
  if (it == kCccRanges) return 0;
  --it;
  return cp <= it->last ? it->ccc : 0;
}

void decompose(char32_t cp, std::u32string& out) {
  if (cp >= kSBase && cp < kSBase + kSCount) {
    const char32_t s = cp - kSBase;
    out.push_back(kLBase + s / kNCount);
    out.push_back(kVBase + (s % kNCount) / kTCount);
    if (s % kTCount) out.push_back(kTBase + s % kTCount);
    return;
  }
  const Decomposition* end = kDecompositions + kDecompositionCount;
  const Decomposition* it = std::lower_bound(
      kDecompositions, end, cp, [](const Decomposition& d, char32_t c) { return d.cp < c; });
  if (it == end || it->cp != cp) {
    out.push_back(cp);
    return;
  }
  decompose(it->first, out);
  if (it->second) decompose(it->second, out);
}

// The primary composite of (a, b), or 0.
char32_t compose(char32_t a, char32_t b) {
  if (a >= kLBase && a < kLBase + kLCount && b >= kVBase && b < kVBase + kVCount)
    return kSBase + ((a - kLBase) * kVCount + (b - kVBase)) * kTCount;
  if (a >= kSBase && a < kSBase + kSCount && (a - kSBase) % kTCount == 0 && b > kTBase &&
      b < kTBase + kTCount)
    return a + (b - kTBase);
  const Composition* end = kCompositions + kCompositionCount;
  const Composition* it =
      std::lower_bound(kCompositions, end, std::pair(a, b), [](const Composition& c, auto key) {
        return c.first != key.first ? c.first < key.first : c.second < key.second;
      });
  return it != end && it->first == a && it->second == b ? it->composite : 0;
}

// Classifies the UTF-8 sequence at p[0..n): returns its length if valid (> 0), 0 if it is a valid
// but unfinished prefix, or -k if its first k bytes are a maximal invalid subsequence (Unicode
// Table 3-7 of well-formed byte sequences decides where it stops).
int check_sequence(const uint8_t* p, size_t n) {
  const uint8_t c = p[0];
  if (c < 0x80) return 1;
  int len;
  uint8_t lo = 0x80, hi = 0xBF;
  if (c >= 0xC2 && c <= 0xDF) {
    len = 2;
  } else if (c >= 0xE0 && c <= 0xEF) {
    len = 3;
    if (c == 0xE0) lo = 0xA0;
    if (c == 0xED) hi = 0x9F;
  } else if (c >= 0xF0 && c <= 0xF4) {
    len = 4;
    if (c == 0xF0) lo = 0x90;
    if (c == 0xF4) hi = 0x8F;
  } else {
    return -1;
  }
  for (int k = 1; k < len; ++k) {
    if (size_t(k) >= n) return 0;
    const uint8_t b = p[k];
    if (k == 1 ? (b < lo || b > hi) : (b < 0x80 || b > 0xBF)) return -k;
  }
  return len;
}

}  // namespace

CharClass char_class(char32_t cp) { return CharClass(props().get(cp) & kClassMask); }

void append_utf8(std::string& out, char32_t cp) {
  if (cp < 0x80) {
    out += char(cp);
  } else if (cp < 0x800) {
    out += char(0xC0 | (cp >> 6));
    out += char(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += char(0xE0 | (cp >> 12));
    out += char(0x80 | ((cp >> 6) & 0x3F));
    out += char(0x80 | (cp & 0x3F));
  } else {
    out += char(0xF0 | (cp >> 18));
    out += char(0x80 | ((cp >> 12) & 0x3F));
    out += char(0x80 | ((cp >> 6) & 0x3F));
    out += char(0x80 | (cp & 0x3F));
  }
}

size_t valid_utf8_prefix(std::string_view s) {
  const auto* p = reinterpret_cast<const uint8_t*>(s.data());
  size_t i = 0;
  while (i < s.size()) {
    if (p[i] < 0x80) {
      ++i;
      continue;
    }
    const int r = check_sequence(p + i, s.size() - i);
    if (r <= 0) break;
    i += size_t(r);
  }
  return i;
}

size_t append_lossy_utf8(std::string& out, std::string_view s, bool final) {
  const auto* p = reinterpret_cast<const uint8_t*>(s.data());
  size_t i = 0;
  while (i < s.size()) {
    size_t run = i;  // copy valid stretches in one piece
    while (run < s.size()) {
      const int r = check_sequence(p + run, s.size() - run);
      if (r <= 0) break;
      run += size_t(r);
    }
    out.append(s.data() + i, run - i);
    i = run;
    if (i == s.size()) break;
    const int r = check_sequence(p + i, s.size() - i);
    if (r == 0) {  // unfinished at the end
      if (!final) return s.size() - i;
      out += "\xEF\xBF\xBD";
      return 0;
    }
    out += "\xEF\xBF\xBD";
    i += size_t(-r);
  }
  return 0;
}

std::string nfc(std::string_view s) {
  const PropTable& table = props();
  // Quick check: text without decomposable characters, non-starters or characters that compose
  // with their predecessor is already NFC (ASCII never is any of those).
  bool simple = true;
  for (size_t i = 0; i < s.size() && simple;) {
    if (static_cast<uint8_t>(s[i]) < 0x80) {
      ++i;
      continue;
    }
    if (table.get(next_code_point(s, i)) &
        (kHasDecomposition | kComposesWithPrevious | kNonStarter))
      simple = false;
  }
  if (simple) return std::string(s);

  // Canonical decomposition.
  std::u32string d;
  d.reserve(s.size());
  for (size_t i = 0; i < s.size();) {
    const char32_t cp = next_code_point(s, i);
    if (table.get(cp) & kHasDecomposition)
      decompose(cp, d);
    else
      d.push_back(cp);
  }
  std::vector<uint8_t> ccc(d.size());
  for (size_t i = 0; i < d.size(); ++i)
    ccc[i] = (table.get(d[i]) & kNonStarter) ? combining_class(d[i]) : 0;
  // Canonical ordering: a stable sort by combining class within each run of non-starters.
  std::vector<std::pair<uint8_t, char32_t>> run;
  for (size_t i = 0; i < d.size();) {
    if (ccc[i] == 0) {
      ++i;
      continue;
    }
    size_t j = i;
    while (j < d.size() && ccc[j] != 0) ++j;
    if (j - i > 1) {
      run.clear();
      for (size_t k = i; k < j; ++k) run.emplace_back(ccc[k], d[k]);
      std::stable_sort(run.begin(), run.end(),
                       [](const auto& a, const auto& b) { return a.first < b.first; });
      for (size_t k = i; k < j; ++k) std::tie(ccc[k], d[k]) = run[k - i];
    }
    i = j;
  }
  // Canonical composition: a character joins the last starter unless something between them is
  // a starter or has a combining class >= its own (it is "blocked").
  std::string out;
  out.reserve(s.size());
  std::u32string r;
  std::vector<uint8_t> rccc;
  r.reserve(d.size());
  rccc.reserve(d.size());
  ptrdiff_t starter = -1;
  for (size_t k = 0; k < d.size(); ++k) {
    const char32_t c = d[k];
    if (starter >= 0 && (table.get(c) & kComposesWithPrevious)) {
      const bool adjacent = ptrdiff_t(r.size()) - 1 == starter;
      if (adjacent || (rccc.back() != 0 && rccc.back() < ccc[k])) {
        if (const char32_t composite = compose(r[size_t(starter)], c)) {
          r[size_t(starter)] = composite;
          continue;
        }
      }
    }
    if (ccc[k] == 0) starter = ptrdiff_t(r.size());
    r.push_back(c);
    rccc.push_back(ccc[k]);
  }
  for (char32_t c : r) append_utf8(out, c);
  return out;
}

}  // namespace rwkv::unicode
