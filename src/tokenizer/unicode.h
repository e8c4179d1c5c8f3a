// UTF-8 and Unicode helpers for the tokenizers: lossy UTF-8 validation, the character classes of
// the GPT-2 regex, and NFC with the reference's Unicode 9.0 tables.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace rwkv::unicode {

// Classes of the GPT-2 pre-tokenizer regex, as Oniguruma (Unicode 16.0) sees them.
enum class CharClass : uint8_t { kOther = 0, kLetter = 1, kNumber = 2, kSpace = 3 };

CharClass char_class(char32_t cp);

// Decodes the code point at s[i] of *valid* UTF-8 and advances i past it.
inline char32_t next_code_point(std::string_view s, size_t& i) {
  const auto b = [&](size_t k) { return char32_t(static_cast<uint8_t>(s[i + k])); };
  const char32_t c = b(0);
  if (c < 0x80) {
    i += 1;
    return c;
  }
  if (c < 0xE0) {
    const char32_t cp = ((c & 0x1F) << 6) | (b(1) & 0x3F);
    i += 2;
    return cp;
  }
  if (c < 0xF0) {
    const char32_t cp = ((c & 0x0F) << 12) | ((b(1) & 0x3F) << 6) | (b(2) & 0x3F);
    i += 3;
    return cp;
  }
  const char32_t cp =
      ((c & 0x07) << 18) | ((b(1) & 0x3F) << 12) | ((b(2) & 0x3F) << 6) | (b(3) & 0x3F);
  i += 4;
  return cp;
}

void append_utf8(std::string& out, char32_t cp);

// Length of the longest valid UTF-8 prefix of s.
size_t valid_utf8_prefix(std::string_view s);
inline bool is_valid_utf8(std::string_view s) { return valid_utf8_prefix(s) == s.size(); }

// Appends s to out with every maximal invalid subsequence replaced by U+FFFD (the policy of
// Rust's String::from_utf8_lossy, Python's errors="replace" and WHATWG). When `final` is false,
// a valid but unfinished sequence at the end is not converted: its length is returned (0..3)
// so the caller can keep it for more bytes. With `final`, it becomes one U+FFFD and 0 is returned.
size_t append_lossy_utf8(std::string& out, std::string_view s, bool final);

// NFC of valid UTF-8, with the Unicode 9.0 tables of the reference normalizer: marks and
// mappings added later behave as unassigned (combining class 0, no decomposition).
std::string nfc(std::string_view utf8);

}  // namespace rwkv::unicode
