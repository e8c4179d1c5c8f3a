// Tokenizer::load (by file content), the byte-level tokenizer, the choice of tokenizer for a model
// and the streaming UTF-8 decoder.
#include "rwkv/tokenizer.h"

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "tokenizer/tokenizers.h"
#include "tokenizer/unicode.h"

namespace rwkv {

namespace tokenizer {

namespace {

class ByteTokenizer final : public Tokenizer {
 public:
  ByteTokenizer() {
    for (int b = 0; b < 256; ++b) bytes_[size_t(b)] = char(b);
  }
  std::vector<int> encode(std::string_view text) const override {
    std::vector<int> ids(text.size());
    for (size_t i = 0; i < text.size(); ++i) ids[i] = static_cast<unsigned char>(text[i]);
    return ids;
  }
  std::string decode(std::span<const int> ids) const override {
    std::string out(ids.size(), '\0');
    for (size_t i = 0; i < ids.size(); ++i) out[i] = token_bytes(ids[i])[0];
    return out;
  }
  std::string_view token_bytes(int id) const override {
    if (id < 0 || id > 255)
      throw Error("token id " + std::to_string(id) + " is not a byte (byte-level ids are 0..255)");
    return std::string_view(bytes_).substr(size_t(id), 1);
  }
  bool is_special(int) const override { return false; }
  int vocab_size() const override { return 256; }
  std::string_view name() const override { return "byte"; }

 private:
  std::string bytes_ = std::string(256, '\0');
};

}  // namespace

std::unique_ptr<Tokenizer> make_byte() { return std::make_unique<ByteTokenizer>(); }

}  // namespace tokenizer

std::unique_ptr<Tokenizer> Tokenizer::load(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  if (!file) throw Error(path + ": cannot open tokenizer file: " + std::strerror(errno));
  std::ostringstream buffer;
  buffer << file.rdbuf();
  if (file.bad()) throw Error(path + ": read error");
  const std::string content = std::move(buffer).str();
  // By content, not by name: a JSON object is a Hugging Face tokenizer.json, a line starting
  // with a token id is an RWKV World vocab.
  const size_t first = content.find_first_not_of(" \t\r\n");
  if (first != std::string::npos && content[first] == '{')
    return tokenizer::make_neox(content, path);
  if (first != std::string::npos && content[first] >= '0' && content[first] <= '9')
    return tokenizer::make_world(content, path);
  throw Error(path +
              ": not a tokenizer file (expected an RWKV World vocab .txt or a Hugging Face "
              "tokenizer.json)");
}

std::unique_ptr<Tokenizer> Tokenizer::byte_level() { return tokenizer::make_byte(); }

std::unique_ptr<Tokenizer> Tokenizer::for_model(const std::string& model_path, int n_vocab,
                                                const std::string& explicit_path) {
  std::unique_ptr<Tokenizer> tok;
  if (explicit_path == "byte") {
    tok = byte_level();
  } else if (!explicit_path.empty()) {
    tok = load(explicit_path);
  } else if (n_vocab == 256) {
    tok = byte_level();
  } else {
    std::string file, kind;
    if (n_vocab >= 65530 && n_vocab <= 65536) {
      file = "rwkv_vocab_v20230424.txt";
      kind = "RWKV World";
    } else if (n_vocab >= 50277 && n_vocab <= 50432) {
      file = "20B_tokenizer.json";
      kind = "GPT-NeoX 20B";
    } else {
      throw Error(model_path + ": no known tokenizer for a vocabulary of " +
                  std::to_string(n_vocab) + " tokens; pass --tokenizer FILE");
    }
    const std::filesystem::path candidate = std::filesystem::path(model_path).parent_path() / file;
    if (!std::filesystem::exists(candidate))
      throw Error(model_path + ": its " + std::to_string(n_vocab) + "-token vocabulary needs the " +
                  kind + " tokenizer, but " + candidate.string() +
                  " was not found; copy it there or pass --tokenizer FILE");
    tok = load(candidate.string());
  }
  if (n_vocab > 0 && tok->vocab_size() > n_vocab)
    throw Error(model_path + ": the " + std::string(tok->name()) + " tokenizer has " +
                std::to_string(tok->vocab_size()) + " ids but the model only " +
                std::to_string(n_vocab) + "; wrong --tokenizer?");
  return tok;
}

std::string Utf8Stream::push(std::string_view bytes) {
  pending_.append(bytes);
  std::string out;
  const size_t keep = unicode::append_lossy_utf8(out, pending_, false);
  pending_.erase(0, pending_.size() - keep);
  return out;
}

std::string Utf8Stream::flush() {
  std::string out;
  unicode::append_lossy_utf8(out, pending_, true);
  pending_.clear();
  return out;
}

}  // namespace rwkv
