// The chat template: the RWKV World format ChatRWKV uses, newline normalisation, overrides.
#include "engine/chat_template.h"

#include <gtest/gtest.h>

#include "rwkv/error.h"

namespace rwkv {
namespace {

std::string joined(const std::vector<std::string>& pieces) {
  std::string out;
  for (const auto& p : pieces) out += p;
  return out;
}

TEST(ChatTemplate, RendersRwkvWorldTurns) {
  const ChatTemplate t;
  const std::vector<ChatMessage> messages = {
      {"system", "You are helpful."}, {"user", "Hi"}, {"assistant", "Hello!"}, {"user", "Bye"}};
  const auto pieces = t.render(messages);
  ASSERT_EQ(pieces.size(), 5u);
  EXPECT_EQ(pieces[0], "System: You are helpful.\n\n");
  EXPECT_EQ(pieces[4], "Assistant:");
  EXPECT_EQ(joined(pieces),
            "System: You are helpful.\n\nUser: Hi\n\nAssistant: Hello!\n\nUser: Bye\n\nAssistant:");
  EXPECT_EQ(t.stop, std::vector<std::string>{"\n\nUser:"});
}

TEST(ChatTemplate, CollapsesBlankLinesAndTrimsLikeChatRwkv) {
  const ChatTemplate t;
  EXPECT_EQ(t.normalize("  a\r\n\r\n\n b\n\nc \n"), "a\n b\nc");
  const std::vector<ChatMessage> messages = {{"user", "one\n\n\ntwo"}};
  EXPECT_EQ(joined(t.render(messages)), "User: one\ntwo\n\nAssistant:");
}

TEST(ChatTemplate, DeveloperIsSystemAndUnknownRolesAreErrors) {
  const ChatTemplate t;
  EXPECT_EQ(t.render(std::vector<ChatMessage>{{"developer", "x"}})[0], "System: x\n\n");
  EXPECT_THROW(t.render(std::vector<ChatMessage>{{"tool", "x"}}), Error);
}

TEST(ChatTemplate, OverridesFromJson) {
  const ChatTemplate t = ChatTemplate::from_json(
      R"({"user": "Q: ", "assistant": "A: ", "separator": "\n", "generation_prefix": "A:",
          "stop": ["\nQ:"], "collapse_newlines": false})");
  const std::vector<ChatMessage> messages = {{"user", "a\n\nb"}, {"assistant", "c"}, {"user", "d"}};
  EXPECT_EQ(joined(t.render(messages)), "Q: a\n\nb\nA: c\nQ: d\nA:");
  EXPECT_EQ(t.stop, std::vector<std::string>{"\nQ:"});
  EXPECT_EQ(t.role_prefix.at("system"), "System: ");  // untouched keys keep the default
}

TEST(ChatTemplate, BadOverridesAreErrors) {
  EXPECT_THROW(ChatTemplate::from_json(R"({"usr": "Q: "})"), Error);
  EXPECT_THROW(ChatTemplate::from_json(R"({"user": 3})"), Error);
  EXPECT_THROW(ChatTemplate::from_json("[1]"), Error);
  EXPECT_THROW(ChatTemplate::from_json("{"), Error);
}

}  // namespace
}  // namespace rwkv
