#include <sstream>

#include "cli.h"

namespace rwkv::cli {

std::vector<int> parse_token_ids(std::string_view text, std::string_view source) {
  std::string cleaned(text);
  for (char& c : cleaned)
    if (c == ',') c = ' ';
  std::istringstream in(cleaned);
  std::vector<int> ids;
  for (std::string word; in >> word;) {
    size_t used = 0;
    long value = -1;
    try {
      value = std::stol(word, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used != word.size() || value < 0 || value > INT32_MAX)
      throw Error(std::string(source) + ": '" + word +
                  "' is not a token id (a non-negative integer)");
    ids.push_back(int(value));
  }
  return ids;
}

}  // namespace rwkv::cli
