// Tokenizers of RWKV models: text bytes <-> token ids.
//
//   auto tok = rwkv::Tokenizer::for_model("RWKV-x070-World-0.4B.pth", model->info().n_vocab);
//   std::vector<int> ids = tok->encode("Hello, world");
//   std::string text = tok->decode(ids);
//
// - "world": the RWKV World tokenizer (rwkv_vocab_v20230424.txt) of RWKV-5/6/7 World models,
//   greedy longest match over bytes. Works on any bytes; decode(encode(b)) == b always.
// - "neox": the GPT-NeoX 20B byte-level BPE (20B_tokenizer.json, Hugging Face format) of RWKV-4
//   Pile models: NFC, special and space-run added tokens, the GPT-2 regex, BPE by merge rank,
//   exactly as Hugging Face `tokenizers` does.
// - "byte": id = byte value (vocab 256), used by the tiny test models.
//
// A tokenizer is immutable after loading and may be shared between threads.
#pragma once

#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "rwkv/error.h"

namespace rwkv {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;

  // Token ids of raw bytes. Never fails. World and byte take any bytes as they are. NeoX, whose
  // reference takes Unicode text, first replaces invalid UTF-8 with U+FFFD (one per maximal
  // invalid subsequence, as a lossy UTF-8 decoder reading the file would).
  virtual std::vector<int> encode(std::string_view bytes) const = 0;
  // The reference's decode: World and byte give the concatenated token bytes (possibly partial
  // or invalid UTF-8); NeoX gives valid UTF-8 (invalid sequences become U+FFFD, as Hugging Face
  // does). Special tokens are rendered (`<|endoftext|>`), except World's id 0, which has no
  // bytes. Throws rwkv::Error on an id outside [0, vocab_size()) or one with no token.
  virtual std::string decode(std::span<const int> ids) const = 0;
  // The raw bytes one token stands for (decode without NeoX's U+FFFD step): feed these to a
  // Utf8Stream when printing tokens as they are generated. Throws like decode.
  virtual std::string_view token_bytes(int id) const = 0;
  // Special tokens (World 0 = end of text; NeoX <|endoftext|> and <|padding|>): a caller that
  // wants Hugging Face's skip_special_tokens drops these ids before decoding.
  virtual bool is_special(int id) const = 0;
  // One past the largest id (World 65530, NeoX 50277, byte 256). A model's vocabulary may be
  // larger (World models have 65536 rows); those extra ids have no token.
  virtual int vocab_size() const = 0;
  virtual std::string_view name() const = 0;  // "world", "neox" or "byte"

  // Loads a vocab file by its content: an RWKV World .txt vocab or a Hugging Face
  // tokenizer.json (byte-level BPE). Throws rwkv::Error naming the file and the problem.
  static std::unique_ptr<Tokenizer> load(const std::string& path);
  static std::unique_ptr<Tokenizer> byte_level();
  // The tokenizer for a model with n_vocab rows: `explicit_path` if given ("byte" means
  // byte_level()); else byte-level for 256; else the known vocab file next to the model:
  // rwkv_vocab_v20230424.txt for 65530..65536, 20B_tokenizer.json for 50277..50432. Throws
  // rwkv::Error naming the missing file and the --tokenizer flag, or when the tokenizer has
  // more ids than the model.
  static std::unique_ptr<Tokenizer> for_model(const std::string& model_path, int n_vocab,
                                              const std::string& explicit_path = "");
};

// Turns a stream of token bytes into text that never ends in half a character: push() returns
// the complete UTF-8 characters available so far and keeps an unfinished sequence for later.
// Invalid bytes are rendered as U+FFFD, one per maximal invalid subsequence (Rust's
// String::from_utf8_lossy, Python's errors="replace", WHATWG): the concatenated output of all
// push() calls and flush() equals that lossy decoding of all bytes at once, and so equals
// NeoX's decode() of the same tokens.
class Utf8Stream {
 public:
  std::string push(std::string_view bytes);
  // Ends the stream: an unfinished sequence left over becomes one U+FFFD.
  std::string flush();

 private:
  std::string pending_;  // a valid but incomplete UTF-8 prefix, at most 3 bytes
};

}  // namespace rwkv
