// libFuzzer target for the tokenizers. The first byte picks what the rest is fed to:
//   0 World encode -> decode must give the bytes back     1 NeoX encode -> decode -> encode
//   2 byte-level round trip                               3 Utf8Stream, chunked vs whole
//   4 the rest as a World vocab file                      5 the rest as a tokenizer.json
//   6 the rest as 16-bit token ids for every decode
// Vocab files come from $RWKV_SHARED/tokenizers or ../shared/tokenizers (scripts/fuzz.sh runs
// from the repository root); modes that need a missing file do nothing. Anything other than
// rwkv::Error escaping, a broken invariant, a crash or a hang is a finding.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <string>

#include "rwkv/tokenizer.h"
#include "tokenizer/tokenizers.h"
#include "tokenizer/unicode.h"

namespace {

std::unique_ptr<rwkv::Tokenizer> load_shared(const char* file) {
  const char* env = std::getenv("RWKV_SHARED");
  const std::filesystem::path path =
      std::filesystem::path(env ? env : "../shared") / "tokenizers" / file;
  if (!std::filesystem::exists(path)) return nullptr;
  return rwkv::Tokenizer::load(path.string());
}

const rwkv::Tokenizer* world() {
  static auto t = load_shared("rwkv_vocab_v20230424.txt");
  return t.get();
}
const rwkv::Tokenizer* neox() {
  static auto t = load_shared("20B_tokenizer.json");
  return t.get();
}

void check(bool ok) {
  if (!ok) __builtin_trap();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const std::string_view in(reinterpret_cast<const char*>(data) + 1, size - 1);
  switch (data[0] % 7) {
    case 0:
      if (const auto* t = world()) check(t->decode(t->encode(in)) == in);
      break;
    case 1:
      if (const auto* t = neox()) {
        const auto ids = t->encode(in);
        const std::string text = t->decode(ids);
        check(rwkv::unicode::is_valid_utf8(text));
        check(t->encode(text) == ids);  // decoded text is NFC already: it encodes the same
      }
      break;
    case 2: {
      auto t = rwkv::Tokenizer::byte_level();
      check(t->decode(t->encode(in)) == in);
      break;
    }
    case 3: {
      rwkv::Utf8Stream whole, chunked;
      std::string want = whole.push(in);
      want += whole.flush();
      std::string got;
      for (size_t pos = 0; pos < in.size(); pos += 3) {
        const std::string piece = chunked.push(in.substr(pos, 3));
        check(rwkv::unicode::is_valid_utf8(piece));
        got += piece;
      }
      got += chunked.flush();
      check(got == want);
      break;
    }
    case 4:
    case 5:
      try {
        auto t = data[0] % 7 == 4 ? rwkv::tokenizer::make_world(in, "fuzz.txt")
                                  : rwkv::tokenizer::make_neox(in, "fuzz.json");
        const auto ids = t->encode("Hello, world! <|endoftext|>  \xE4\xB8\xAD\xFF");
        for (int id : ids) check(id >= 0 && id < t->vocab_size());
        (void)t->decode(ids);
      } catch (const rwkv::Error&) {
      }
      break;
    case 6:
      for (const auto* t : {world(), neox()}) {
        if (!t) continue;
        std::vector<int> ids;
        for (size_t i = 0; i + 1 < in.size(); i += 2)
          ids.push_back(int(uint16_t(uint8_t(in[i]) | (uint8_t(in[i + 1]) << 8))) - 8);
        try {
          (void)t->decode(ids);
        } catch (const rwkv::Error&) {
        }
      }
      break;
  }
  return 0;
}
