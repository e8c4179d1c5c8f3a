// Turns chat messages into a prompt. The default is the RWKV World format that ChatRWKV uses:
//
//   System: You are helpful.\n\nUser: Hi\n\nAssistant: Hello!\n\nUser: Bye\n\nAssistant:
//
// and the reply ends where the model starts the next turn ("\n\nUser:"). Blank lines inside a
// message would read as a turn boundary, so, like ChatRWKV, runs of newlines collapse to one.
#pragma once

#include <map>
#include <span>
#include <string>
#include <vector>

namespace rwkv {

struct ChatMessage {
  std::string role;  // "system", "user", "assistant" (and "developer", read as "system")
  std::string content;
};

struct ChatTemplate {
  std::map<std::string, std::string> role_prefix = {
      {"system", "System: "}, {"user", "User: "}, {"assistant", "Assistant: "}};
  std::string separator = "\n\n";              // after every message
  std::string generation_prefix = "Assistant:";  // ends the prompt; the model continues it
  std::vector<std::string> stop = {"\n\nUser:"};  // where the reply ends
  bool collapse_newlines = true;

  // Reads overrides from JSON text: any of {"system", "user", "assistant", "separator",
  // "generation_prefix", "stop", "collapse_newlines"}. Throws rwkv::Error on unknown keys or
  // wrong types.
  static ChatTemplate from_json(const std::string& json_text);

  // The prompt in pieces: one per message (prefix, content, separator), then the generation
  // prefix. Tokenizing the pieces separately keeps a turn's tokens independent of what follows,
  // so the next turn's prompt starts with exactly the tokens the cache saw. Throws rwkv::Error
  // on a role the template has no prefix for.
  std::vector<std::string> render(std::span<const ChatMessage> messages) const;
  // The message content as it goes into the prompt: trimmed, CRLF -> LF, newline runs collapsed.
  std::string normalize(std::string_view content) const;
};

}  // namespace rwkv
