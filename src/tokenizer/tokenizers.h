// Constructors of the concrete tokenizers, from a vocab file's content already in memory (the
// fuzz target feeds them arbitrary bytes). `name` is the file name used in error messages.
#pragma once

#include <memory>
#include <string>
#include <string_view>

#include "rwkv/tokenizer.h"

namespace rwkv::tokenizer {

std::unique_ptr<Tokenizer> make_world(std::string_view content, const std::string& name);
std::unique_ptr<Tokenizer> make_neox(std::string_view content, const std::string& name);
std::unique_ptr<Tokenizer> make_byte();

}  // namespace rwkv::tokenizer
