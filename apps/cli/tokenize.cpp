// `rwkv tokenize` and `rwkv detokenize`: text bytes <-> token ids, for pipes and scripts. This
// interface stays stable: tokenize prints the ids on one line separated by single spaces (and
// nothing for empty input, so its output equals the .ids files of the test vectors);
// detokenize writes the decoded bytes to stdout unchanged.
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <iterator>
#include <sstream>

#include "cli.h"
#include "rwkv/tokenizer.h"

namespace rwkv::cli {

namespace {

struct TokenizeOptions {
  std::string tokenizer;  // a vocab file, or "byte"
  std::string model;
  std::string input;  // TEXT or IDS given on the command line
  std::string file;   // or read from this file ("-" = stdin)
};

std::string read_input(const TokenizeOptions& o, CLI::App& cmd) {
  const bool has_text = cmd.get_option("input")->count() > 0;
  if (has_text == !o.file.empty())
    throw Error(std::string(cmd.get_name() == "tokenize" ? "give the TEXT" : "give the IDS") +
                " as an argument or with --file FILE (one of the two)");
  if (has_text) return o.input;
  if (o.file == "-") {
    std::string data{std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>()};
    if (std::cin.bad()) throw Error("stdin: read error");
    return data;
  }
  std::ifstream in(o.file, std::ios::binary);
  if (!in) throw Error(o.file + ": cannot open: " + std::strerror(errno));
  std::ostringstream buffer;
  buffer << in.rdbuf();
  if (in.bad()) throw Error(o.file + ": read error");
  return std::move(buffer).str();
}

std::unique_ptr<Tokenizer> pick_tokenizer(const TokenizeOptions& o) {
  if (o.model.empty()) {
    if (o.tokenizer.empty())
      throw Error("no tokenizer: pass --tokenizer FILE (or 'byte') or --model MODEL");
    return o.tokenizer == "byte" ? Tokenizer::byte_level() : Tokenizer::load(o.tokenizer);
  }
  auto model = Model::load(o.model);
  return Tokenizer::for_model(o.model, model->info().n_vocab, o.tokenizer);
}

void write_stdout(std::string_view bytes) {
  if (std::fwrite(bytes.data(), 1, bytes.size(), stdout) != bytes.size() || std::fflush(stdout))
    throw Error(std::string("writing to stdout failed: ") + std::strerror(errno));
}

void add_common(CLI::App* cmd, TokenizeOptions& o, const char* input_help) {
  cmd->add_option("--tokenizer,-t", o.tokenizer,
                  "Vocab file: RWKV World .txt or Hugging Face tokenizer.json; 'byte' for "
                  "byte-level ids");
  cmd->add_option("--model,-m", o.model,
                  "Pick the tokenizer for this model: byte-level for 256 tokens, else the known "
                  "vocab file next to it")
      ->check(CLI::ExistingFile);
  auto* input = cmd->add_option("input", o.input, input_help);
  cmd->add_option("--file,-f", o.file, "Read the input from this file ('-' = stdin)")
      ->excludes(input);
}

}  // namespace

void add_tokenize_command(CLI::App& app) {
  auto* tok = app.add_subcommand("tokenize", "Print the token ids of a text (raw bytes)");
  auto to = std::make_shared<TokenizeOptions>();
  add_common(tok, *to, "The text to tokenize");
  tok->callback([tok, to] {
    const std::string text = read_input(*to, *tok);
    const auto ids = pick_tokenizer(*to)->encode(text);
    std::string line;
    for (size_t i = 0; i < ids.size(); ++i) {
      if (i) line += ' ';
      line += std::to_string(ids[i]);
    }
    if (!ids.empty()) line += '\n';
    write_stdout(line);
  });
}

void add_detokenize_command(CLI::App& app) {
  auto* detok = app.add_subcommand("detokenize", "Write the bytes that token ids stand for");
  auto dto = std::make_shared<TokenizeOptions>();
  auto skip_special = std::make_shared<bool>(false);
  add_common(detok, *dto, "Token ids separated by spaces, commas or newlines");
  detok->add_flag("--skip-special", *skip_special,
                  "Leave out special tokens (<|endoftext|>, <|padding|>, World's 0)");
  detok->callback([detok, dto, skip_special] {
    std::vector<int> ids = parse_token_ids(read_input(*dto, *detok), "detokenize");
    const auto tokenizer = pick_tokenizer(*dto);
    if (*skip_special) std::erase_if(ids, [&](int id) { return tokenizer->is_special(id); });
    write_stdout(tokenizer->decode(ids));
  });
}

}  // namespace rwkv::cli
