// Unicode data for the NeoX tokenizer, generated into unicode_tables.cpp by gen_unicode_tables.mjs
// (regex classes from Unicode 16.0, NFC data from Unicode 9.0, matching the reference).
#pragma once

#include <cstddef>
#include <cstdint>

namespace rwkv::unicode {

// Inclusive code point ranges, sorted. klass: 1 = \p{L}, 2 = \p{N}, 3 = \s (White_Space).
struct ClassRange {
  uint32_t first, last;
  uint8_t klass;
};
struct CccRange {
  uint32_t first, last;
  uint8_t ccc;  // canonical combining class, never 0 here
};
// One level of a canonical decomposition (second = 0 for a singleton), sorted by cp. Hangul
// syllables are algorithmic and not listed.
struct Decomposition {
  uint32_t cp, first, second;
};
// Primary composites (composition exclusions removed), sorted by (first, second).
struct Composition {
  uint32_t first, second, composite;
};

extern const ClassRange kClassRanges[];
extern const size_t kClassRangeCount;
extern const CccRange kCccRanges[];
extern const size_t kCccRangeCount;
extern const Decomposition kDecompositions[];
extern const size_t kDecompositionCount;
extern const Composition kCompositions[];
extern const size_t kCompositionCount;

}  // namespace rwkv::unicode
