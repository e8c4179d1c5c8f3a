#include "engine/chat_template.h"

#include <nlohmann/json.hpp>

#include "rwkv/error.h"

namespace rwkv {

ChatTemplate ChatTemplate::from_json(const std::string& json_text) {
  ChatTemplate t;
  try {
    const nlohmann::json j = nlohmann::json::parse(json_text);
    if (!j.is_object()) throw Error("chat template: expected a JSON object");
    for (const auto& [key, value] : j.items()) {
      if (key == "system" || key == "user" || key == "assistant")
        t.role_prefix[key] = value.get<std::string>();
      else if (key == "separator")
        t.separator = value.get<std::string>();
      else if (key == "generation_prefix")
        t.generation_prefix = value.get<std::string>();
      else if (key == "stop")
        t.stop = value.get<std::vector<std::string>>();
      else if (key == "collapse_newlines")
        t.collapse_newlines = value.get<bool>();
      else
        throw Error("chat template: unknown key '" + key + "'");
    }
  } catch (const nlohmann::json::exception& e) {
    throw Error(std::string("chat template: ") + e.what());
  }
  return t;
}

std::string ChatTemplate::normalize(std::string_view content) const {
  const auto space = [](char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; };
  while (!content.empty() && space(content.front())) content.remove_prefix(1);
  while (!content.empty() && space(content.back())) content.remove_suffix(1);
  std::string out;
  out.reserve(content.size());
  for (size_t i = 0; i < content.size(); ++i) {
    const char c = content[i];
    if (c == '\r' && i + 1 < content.size() && content[i + 1] == '\n') continue;
    if (collapse_newlines && c == '\n' && !out.empty() && out.back() == '\n') continue;
    out += c;
  }
  return out;
}

std::vector<std::string> ChatTemplate::render(std::span<const ChatMessage> messages) const {
  std::vector<std::string> pieces;
  for (const ChatMessage& m : messages) {
    const std::string role = m.role == "developer" ? "system" : m.role;
    const auto prefix = role_prefix.find(role);
    if (prefix == role_prefix.end()) throw Error("unsupported message role '" + m.role + "'");
    pieces.push_back(prefix->second + normalize(m.content) + separator);
  }
  pieces.push_back(generation_prefix);
  return pieces;
}

}  // namespace rwkv
