// Training data as a memory-mapped stream of token ids: our token file (`.tok`, written by
// tokenize_to_file from raw text or jsonl) or an RWKV-LM binidx dataset read as it is (the
// `.bin` tokens, their width from the `.idx` header; RWKV-LM samples across the concatenation of
// all documents, and so do we).
#pragma once

#include <cstdint>
#include <string>

#include "core/mapped_file.h"
#include "rwkv/tokenizer.h"

namespace rwkv::train {

class TokenData {
 public:
  // `path`: a .tok file, or a binidx pair named by its .bin, its .idx or their common prefix.
  // Throws rwkv::Error naming the file on anything missing, truncated or malformed.
  static TokenData open(const std::string& path);
  // Whether `path` names token data (rather than text to tokenize).
  static bool is_token_data(const std::string& path);

  uint64_t size() const { return count_; }
  int operator[](uint64_t i) const {
    const uint8_t* p = data_ + i * width_;
    if (width_ == 2) return p[0] | (p[1] << 8);
    if (width_ == 1) return p[0];
    return int(uint32_t(p[0]) | uint32_t(p[1]) << 8 | uint32_t(p[2]) << 16 | uint32_t(p[3]) << 24);
  }
  int max_token() const;  // largest id in the data (scans it)

 private:
  Bytes bytes_;
  const uint8_t* data_ = nullptr;
  uint64_t count_ = 0;
  uint32_t width_ = 4;
};

// Tokenizes `input` into a .tok file at `out` (atomically): raw text as one document, or with a
// .jsonl extension one JSON object per line whose "text" is a document, each document followed
// by token 0 (World's end of text). Returns the number of tokens. Throws rwkv::Error naming the
// file and line of malformed input.
uint64_t tokenize_to_file(const std::string& input, const Tokenizer& tokenizer,
                          const std::string& out);

}  // namespace rwkv::train
