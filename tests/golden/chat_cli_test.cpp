// `rwkv chat` end to end, through a pipe and through a pseudo-terminal: each turn processes only
// its own message, the state carries the conversation exactly (a turn's answer equals
// `rwkv generate` on the whole transcript), /save + /load in a new process continue identically,
// /regen and /reset return to the right states, and Ctrl-C stops an answer but not the program.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <pty.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <regex>

#include "test_util.h"

namespace rwkv::test {
namespace {

// Greedy, no penalties: answers are a function of the state alone.
const std::string kGreedy = " --temperature 0 --presence-penalty 0 --frequency-penalty 0 -n 24";

class ChatCli : public ::testing::Test {
 protected:
  void SetUp() override {
    if (shared_dir().empty()) GTEST_SKIP() << "SKIPPED: ../shared/testdata not found";
    dir_ = temp_dir();
    model_ = (shared_dir() / "testdata/tiny-rwkv/tiny-rwkv-7v0-834K-FP32.bin").string();
  }
  using Output = CommandResult;
  Output run(const std::string& args, const std::string& input) {
    return run_shell(cli_path() + " " + args, dir_, input);
  }
  // The answers in chat's stdout: "Assistant:<answer>\n\n" per turn.
  static std::vector<std::string> answers(const std::string& out) {
    std::vector<std::string> result;
    const std::string tag = "Assistant:";
    for (size_t at = out.find(tag); at != std::string::npos;) {
      const size_t start = at + tag.size();
      const size_t next = out.find(tag, start);
      std::string a = out.substr(start, (next == std::string::npos ? out.size() : next) - start);
      EXPECT_TRUE(a.ends_with("\n\n"));
      result.push_back(a.substr(0, a.size() - 2));
      at = next;
    }
    return result;
  }
  // Tokens processed per turn, from --verbose.
  static std::vector<int> processed(const std::string& err) {
    std::vector<int> result;
    const std::regex re(R"(\[turn (\d+): (\d+) new tokens processed)");
    for (auto it = std::sregex_iterator(err.begin(), err.end(), re); it != std::sregex_iterator();
         ++it)
      result.push_back(std::stoi((*it)[2]));
    return result;
  }
  std::filesystem::path dir_;
  std::string model_;
};

TEST_F(ChatCli, ThreeTurnsThroughAPipeProcessOnlyTheirOwnTokens) {
  const Output o = run("chat " + model_ + kGreedy + " -v",
                       "Hello there\nWhat is the time?\nTell me about the sea.\n");
  ASSERT_EQ(o.exit_code, 0) << o.err;
  const auto a = answers(o.out);
  ASSERT_EQ(a.size(), 3u) << o.out;
  // Byte-level model: a turn feeds " <message>\n\nAssistant:", one token per byte, however
  // long the history is.
  EXPECT_EQ(processed(o.err), (std::vector<int>{24, 30, 35})) << o.err;
  EXPECT_NE(o.err.find("[turn 3: 35 new tokens processed"), std::string::npos);

  // The state after two turns is exactly the transcript: `rwkv generate` on the whole text
  // gives turn 3's answer.
  const std::string transcript = "User: Hello there\n\nAssistant:" + a[0] +
                                 "\n\nUser: What is the time?\n\nAssistant:" + a[1] +
                                 "\n\nUser: Tell me about the sea.\n\nAssistant:";
  const auto prompt = dir_ / "prompt";
  write_bytes(prompt, std::vector<uint8_t>(transcript.begin(), transcript.end()));
  const Output g = run("generate " + model_ + kGreedy + " --file " + prompt.string(), "");
  ASSERT_EQ(g.exit_code, 0) << g.err;
  EXPECT_EQ(g.out, a[2]);
}

TEST_F(ChatCli, SaveThenLoadInANewProcessContinuesIdentically) {
  const std::string saved = (dir_ / "turn2.state").string();
  const std::string end_a = (dir_ / "a.state").string(), end_b = (dir_ / "b.state").string();
  const Output first = run("chat " + model_ + kGreedy, "Hi\nHow are you?\n/save " + saved +
                                                           "\nWhat did I say?\nAnd then?\n/save " +
                                                           end_a + "\n");
  ASSERT_EQ(first.exit_code, 0) << first.err;
  const auto a = answers(first.out);
  ASSERT_EQ(a.size(), 4u);
  EXPECT_NE(first.err.find("[state saved to"), std::string::npos);

  const Output second = run("chat " + model_ + kGreedy, "/load " + saved +
                                                            "\nWhat did I say?\nAnd then?\n/save " +
                                                            end_b + "\n");
  ASSERT_EQ(second.exit_code, 0) << second.err;
  const auto b = answers(second.out);
  ASSERT_EQ(b.size(), 2u);
  EXPECT_EQ(b[0], a[2]);
  EXPECT_EQ(b[1], a[3]);
  // The two conversations end in the same state, bit for bit ...
  EXPECT_EQ(read_bytes(end_a), read_bytes(end_b));
  // ... which a conversation without the saved turns does not reach.
  const std::string end_c = (dir_ / "c.state").string();
  run("chat " + model_ + kGreedy, "What did I say?\nAnd then?\n/save " + end_c + "\n");
  EXPECT_NE(read_bytes(end_a), read_bytes(end_c));
}

TEST_F(ChatCli, RegenAndResetReturnToTheRightStates) {
  const Output plain = run("chat " + model_ + kGreedy, "Hi\nWho are you?\n");
  const Output with = run("chat " + model_ + kGreedy, "Hi\n/regen\nWho are you?\n/reset\nHi\n");
  ASSERT_EQ(with.exit_code, 0) << with.err;
  const auto p = answers(plain.out), w = answers(with.out);
  ASSERT_EQ(p.size(), 2u);
  ASSERT_EQ(w.size(), 4u);
  EXPECT_EQ(w[0], p[0]);  // greedy: the same answer again
  EXPECT_EQ(w[1], p[0]);
  EXPECT_EQ(w[2], p[1]);  // the regenerated answer replaced the first in the state
  EXPECT_EQ(w[3], p[0]);  // after /reset, as new
}

TEST_F(ChatCli, SystemPromptAndParamsTakeEffect) {
  // The system prompt is fed once, before the first "User:": 25 more tokens in the state, and
  // another state after the same turn.
  const std::string a = (dir_ / "a").string(), b = (dir_ / "b").string();
  const Output once = run("chat " + model_ + kGreedy + " -v", "Hi\n/save " + a + "\n");
  const Output system =
      run("chat " + model_ + kGreedy + " -v --system 'You are a poet.'", "Hi\n/save " + b + "\n");
  EXPECT_NE(once.err.find("the state has seen 51 tokens"), std::string::npos) << once.err;
  EXPECT_NE(system.err.find("the state has seen 76 tokens"), std::string::npos) << system.err;
  EXPECT_NE(read_bytes(a), read_bytes(b));
  const Output plain = run("chat " + model_ + kGreedy, "Hi\n");
  const Output params = run("chat " + model_ + kGreedy, "/params max_tokens=5\nHi\n/params top_p=2\n");
  ASSERT_EQ(params.exit_code, 0);
  EXPECT_EQ(answers(params.out).at(0), answers(plain.out).at(0).substr(0, 5));
  EXPECT_NE(params.err.find("max_tokens=5"), std::string::npos);
  EXPECT_NE(params.err.find("out of range: top_p=2"), std::string::npos);
}

TEST_F(ChatCli, BadInputIsReportedAndTheChatGoesOn) {
  const Output o = run("chat " + model_ + kGreedy,
                       "/load " + (dir_ / "missing.state").string() + "\n/load " + model_ +
                           "\n/frobnicate\n/save\nHi\n");
  ASSERT_EQ(o.exit_code, 0);
  EXPECT_NE(o.err.find("missing.state"), std::string::npos) << o.err;
  EXPECT_NE(o.err.find("unknown command /frobnicate"), std::string::npos);
  EXPECT_NE(o.err.find("/save needs a file name"), std::string::npos);
  EXPECT_EQ(answers(o.out).size(), 1u);
  const Output missing = run("chat " + (dir_ / "nope.bin").string(), "");
  EXPECT_NE(missing.exit_code, 0);
  EXPECT_NE(missing.err.find("nope.bin"), std::string::npos);
  const Output flag = run("chat " + model_ + " --temperature -1", "");
  EXPECT_NE(flag.exit_code, 0);
}

// Drives `rwkv chat` on a pseudo-terminal, as a person would.
class Terminal {
 public:
  explicit Terminal(const std::vector<std::string>& args) {
    pid_ = forkpty(&fd_, nullptr, nullptr, nullptr);
    if (pid_ == 0) {
      std::vector<char*> argv;
      for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
      argv.push_back(nullptr);
      execv(argv[0], argv.data());
      _exit(127);
    }
  }
  ~Terminal() {
    if (pid_ > 0 && !exited_) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
    if (fd_ >= 0) close(fd_);
  }
  void type(const std::string& s) { ASSERT_EQ(write(fd_, s.data(), s.size()), ssize_t(s.size())); }
  // Reads until `text` appears after `from` in everything read so far; returns its position.
  size_t wait_for(const std::string& text, size_t from = 0, int timeout_s = 60) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(timeout_s);
    for (;;) {
      const size_t at = seen_.find(text, from);
      if (at != std::string::npos) return at;
      if (std::chrono::steady_clock::now() > deadline) return std::string::npos;
      pollfd p{fd_, POLLIN, 0};
      if (poll(&p, 1, 200) > 0) {
        char buf[4096];
        const ssize_t n = read(fd_, buf, sizeof buf);
        if (n <= 0) return std::string::npos;
        seen_.append(buf, size_t(n));
      }
    }
  }
  int wait_exit() {
    int status = 0;
    for (int i = 0; i < 300; ++i) {
      wait_for("\x01", seen_.size(), 0);  // drain output so the child never blocks
      if (waitpid(pid_, &status, WNOHANG) == pid_) {
        exited_ = true;
        return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
      }
      usleep(100000);
    }
    return -2;
  }
  const std::string& seen() const { return seen_; }

 private:
  int fd_ = -1;
  pid_t pid_ = -1;
  bool exited_ = false;
  std::string seen_;
};

TEST_F(ChatCli, ThreeTurnsOnATerminalAndCtrlCStopsOnlyTheAnswer) {
  Terminal t({cli_path(), "chat", model_, "--temperature", "0", "--presence-penalty", "0",
              "--frequency-penalty", "0", "-n", "24", "-v"});
  size_t at = t.wait_for("User: ");
  ASSERT_NE(at, std::string::npos) << t.seen();
  const char* messages[] = {"Hello there", "What is the time?", "Tell me about the sea."};
  for (const char* m : messages) {
    t.type(std::string(m) + "\n");
    at = t.wait_for("]\r\nUser: ", at);  // ...the verbose line, then the next prompt
    ASSERT_NE(at, std::string::npos) << t.seen();
    at += 1;
  }
  EXPECT_NE(t.seen().find("[turn 3: 35 new tokens processed"), std::string::npos) << t.seen();

  // A long answer, interrupted: the program stays and answers the next message.
  t.type("/params max_tokens=100000 temperature=1\n");
  ASSERT_NE(at = t.wait_for("User: ", t.wait_for("max_tokens=100000", at)), std::string::npos);
  t.type("Write a long story.\n");
  ASSERT_NE(at = t.wait_for("Assistant:", at), std::string::npos);
  usleep(300000);
  t.type("\x03");
  ASSERT_NE(at = t.wait_for("[stopped]", at), std::string::npos) << t.seen();
  ASSERT_NE(at = t.wait_for("User: ", at), std::string::npos);
  t.type("/quit\n");
  EXPECT_EQ(t.wait_exit(), 0) << t.seen();
}

}  // namespace
}  // namespace rwkv::test
