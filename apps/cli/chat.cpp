// `rwkv chat MODEL`: an interactive chat in the RWKV World format
//
//   [System: <system prompt>\n\n]User: <message>\n\nAssistant: <answer>\n\nUser: ...
//
// The conversation lives in the RNN state: each turn feeds only its own message, never the
// history. Between turns the state always ends right after "User:" (the model writes it when it
// ends its answer; otherwise we feed it), so a state saved with /save continues the same way in
// another process. Lines of stdin are messages or /commands; it works on a terminal and in a pipe.
#include <fmt/format.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <sstream>

#include "cli.h"
#include "engine/chat_template.h"

namespace rwkv::cli {

namespace {

std::atomic<bool> g_interrupted{false};
extern "C" void on_sigint(int) { g_interrupted = true; }

// Ctrl-C sets a flag (the answer being generated stops) and interrupts a blocking read; it
// never ends the program. No SA_RESTART, so read() returns EINTR.
void install_sigint_handler() {
  struct sigaction sa{};
  sa.sa_handler = on_sigint;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, nullptr);
}

// Reads stdin line by line with read(2), so that Ctrl-C at the prompt can be told apart from
// the end of input (std::getline cannot).
class LineReader {
 public:
  enum class Result { kLine, kEnd, kInterrupted };
  Result next(std::string& line) {
    for (;;) {
      const size_t nl = buffer_.find('\n');
      if (nl != std::string::npos || (eof_ && !buffer_.empty())) {
        const size_t end = nl == std::string::npos ? buffer_.size() : nl;
        line = buffer_.substr(0, end);
        buffer_.erase(0, std::min(buffer_.size(), end + 1));
        if (!line.empty() && line.back() == '\r') line.pop_back();
        return Result::kLine;
      }
      if (eof_) return Result::kEnd;
      char chunk[4096];
      const ssize_t n = ::read(STDIN_FILENO, chunk, sizeof chunk);
      if (n < 0 && errno == EINTR) {
        if (!g_interrupted.exchange(false)) continue;
        buffer_.clear();
        return Result::kInterrupted;
      }
      if (n < 0) throw Error("stdin: read failed");
      if (n == 0) eof_ = true;
      buffer_.append(chunk, size_t(n));
    }
  }

 private:
  std::string buffer_;
  bool eof_ = false;
};

struct ChatOptions {
  ModelOptions model;
  SamplingOptions sampling;
  std::string tokenizer;
  std::string system;
  std::string state_in;
  std::string user = "User";
  std::string assistant = "Assistant";
  bool verbose = false;
  int64_t chunk = 64;
};

std::string trim(std::string_view s) {
  const size_t b = s.find_first_not_of(" \t\r\n");
  if (b == std::string_view::npos) return "";
  const size_t e = s.find_last_not_of(" \t\r\n");
  return std::string(s.substr(b, e - b + 1));
}

// A blank line separates turns in the format, so a message never contains one (as ChatRWKV):
// the server's template cleans messages the same way.
std::string clean_message(std::string_view text) { return ChatTemplate{}.normalize(text); }

class Chat {
 public:
  Chat(const ChatOptions& o, const Model& model, const Tokenizer& tokenizer, ThreadPool* pool)
      : o_(o),
        session_(model, tokenizer, {.chunk = o.chunk, .pool = pool}),
        sampler_(o.sampling.sampler_params(), model.info().n_vocab),
        max_tokens_(o.sampling.max_tokens) {
    if (!o.state_in.empty()) initial_ = State::load(model, o.state_in);
  }

  // The initial state (or --state-in), then the system prompt and the first "User:".
  void begin() {
    if (initial_) session_.set_state(*initial_);
    else session_.reset();
    std::string preamble;
    const std::string system = clean_message(o_.system);
    if (!system.empty()) preamble = "System: " + system + "\n\n";
    preamble += o_.user + ":";
    session_.feed_text(preamble);
    carry_.clear();
    last_answer_.reset();
    turn_ = 0;
  }

  void say(const std::string& message) {
    const std::string text = clean_message(message);
    if (text.empty()) return;
    std::string input = " " + text + "\n\n" + o_.assistant + ":";
    // What the model already wrote after its "User:" (e.g. a space token) is not fed twice.
    if (!carry_.empty() && input.starts_with(carry_)) input.erase(0, carry_.size());
    carry_.clear();
    const double feed_before = session_.feed_seconds();
    const int fed = session_.feed_text(input);
    ++turn_;
    last_answer_ = Pending{session_.snapshot(), fed, session_.feed_seconds() - feed_before};
    answer();
  }

  // Answers the last message again, from the state before the answer.
  void regen() {
    if (!last_answer_) {
      fmt::print(stderr, "[nothing to regenerate yet]\n");
      return;
    }
    session_.restore(last_answer_->before);
    answer();
  }

  void save(const std::string& path) {
    session_.state().save(path);
    fmt::print(stderr, "[state saved to {}]\n", path);
  }

  void load(const std::string& path) {
    session_.set_state(State::load(session_.model(), path));
    carry_.clear();
    last_answer_.reset();
    fmt::print(stderr, "[state loaded from {}]\n", path);
  }

  // `/params` alone shows the sampling parameters; `/params key=value ...` changes them.
  void params(const std::string& args) {
    SamplerParams p = sampler_.params();
    std::istringstream in(args);
    for (std::string item; in >> item;) {
      const size_t eq = item.find('=');
      const std::string key = item.substr(0, eq);
      float value = 0;
      try {
        if (eq == std::string::npos) throw std::invalid_argument("no value");
        size_t used = 0;
        const std::string text = item.substr(eq + 1);
        value = std::stof(text, &used);
        if (used != text.size()) throw std::invalid_argument("trailing");
      } catch (const std::exception&) {
        fmt::print(stderr, "[/params: '{}' is not key=number]\n", item);
        return;
      }
      if (key == "temperature" && value >= 0) p.temperature = value;
      else if (key == "top_p" && value >= 0 && value <= 1) p.top_p = value;
      else if (key == "top_k" && value >= 0) p.top_k = int(value);
      else if (key == "min_p" && value >= 0 && value <= 1) p.min_p = value;
      else if (key == "presence_penalty") p.presence_penalty = value;
      else if (key == "frequency_penalty") p.frequency_penalty = value;
      else if (key == "penalty_decay" && value >= 0 && value <= 1) p.penalty_decay = value;
      else if (key == "repetition_penalty" && value > 0) p.repetition_penalty = value;
      else if (key == "max_tokens" && value >= 0) max_tokens_ = int(value);
      else {
        fmt::print(stderr, "[/params: unknown key or value out of range: {}]\n", item);
        return;
      }
    }
    sampler_.set_params(p);
    fmt::print(stderr,
               "[temperature={} top_p={} top_k={} min_p={} presence_penalty={} "
               "frequency_penalty={} penalty_decay={} repetition_penalty={} max_tokens={}]\n",
               p.temperature, p.top_p, p.top_k, p.min_p, p.presence_penalty, p.frequency_penalty,
               p.penalty_decay, p.repetition_penalty, max_tokens_);
  }

 private:
  struct Pending {
    Session::Snapshot before;  // after the message, before the answer
    int message_tokens = 0;
    double message_seconds = 0;
  };

  void answer() {
    const Tokenizer& tok = session_.tokenizer();
    const std::string stop = "\n\n" + o_.user + ":";
    GenerateOptions options;
    options.max_tokens = max_tokens_;
    options.stop_tokens = o_.sampling.stop_tokens;
    options.stop_strings = o_.sampling.params_stop;
    options.stop_strings.push_back(stop);
    sampler_.reset();  // penalties count within one answer, as ChatRWKV
    std::string raw;   // every byte the model wrote, stop string included
    fmt::print("{}:", o_.assistant);
    std::fflush(stdout);
    const GenerateResult r = session_.generate(sampler_, options, [&](int id, std::string_view text) {
      if (id >= 0) raw += tok.token_bytes(id);
      std::fwrite(text.data(), 1, text.size(), stdout);
      std::fflush(stdout);
      return !g_interrupted.load();
    });
    fmt::print("\n\n");
    std::fflush(stdout);
    if (r.finish_reason == "cancelled") fmt::print(stderr, "[stopped]\n");
    // Bring the state to the turn boundary: right after "User:".
    const size_t at = raw.find(stop);
    int closing = 0;
    if (at != std::string::npos) {
      carry_ = raw.substr(at + stop.size());
    } else {
      std::string tail = stop;
      if (raw.ends_with("\n\n")) tail.erase(0, 2);
      else if (raw.ends_with("\n")) tail.erase(0, 1);
      closing = session_.feed_text(tail);
    }
    if (o_.verbose) {
      const Pending& p = *last_answer_;
      fmt::print(stderr,
                 "[turn {}: {} new tokens processed ({:.1f} tok/s), {} generated ({:.1f} tok/s), "
                 "{} closing; {}; the state has seen {} tokens]\n",
                 turn_, p.message_tokens, p.message_seconds > 0 ? p.message_tokens / p.message_seconds : 0,
                 r.tokens, r.seconds > 0 ? r.tokens / r.seconds : 0, closing, r.finish_reason,
                 session_.tokens_fed());
    }
  }

  const ChatOptions& o_;
  Session session_;
  Sampler sampler_;
  int max_tokens_;
  std::optional<State> initial_;
  std::optional<Pending> last_answer_;
  std::string carry_;
  int turn_ = 0;
};

constexpr const char* kHelp =
    "Type a message and press Enter. Commands:\n"
    "  /reset            start over (system prompt and --state-in kept)\n"
    "  /save FILE        save the conversation's state\n"
    "  /load FILE        continue from a saved state\n"
    "  /regen            answer the last message again\n"
    "  /params [k=v ..]  show or change sampling: temperature top_p top_k min_p\n"
    "                    presence_penalty frequency_penalty penalty_decay\n"
    "                    repetition_penalty max_tokens\n"
    "  /quit             leave (so do Ctrl-D and the end of piped input)\n"
    "Ctrl-C stops an answer.\n";

void run(const ChatOptions& o) {
  auto model = o.model.load();
  auto tokenizer = Tokenizer::for_model(o.model.path, model->info().n_vocab, o.tokenizer);
  auto pool = o.model.make_pool();
  Chat chat(o, *model, *tokenizer, pool.get());
  chat.begin();
  install_sigint_handler();
  const bool interactive = isatty(STDIN_FILENO) != 0;
  if (interactive) fmt::print(stderr, "{}", kHelp);
  LineReader reader;
  for (;;) {
    if (interactive) {
      fmt::print("{}: ", o.user);
      std::fflush(stdout);
    }
    std::string line;
    const LineReader::Result got = reader.next(line);
    if (got == LineReader::Result::kEnd) break;
    if (got == LineReader::Result::kInterrupted) {
      fmt::print("\n");
      continue;
    }
    g_interrupted = false;
    const std::string text = trim(line);
    if (text.empty()) continue;
    if (text[0] != '/') {
      chat.say(text);
      continue;
    }
    const size_t space = text.find(' ');
    const std::string command = text.substr(0, space);
    const std::string arg = space == std::string::npos ? "" : trim(text.substr(space));
    try {
      if (command == "/quit" || command == "/exit") break;
      if (command == "/reset") {
        chat.begin();
        fmt::print(stderr, "[conversation reset]\n");
      } else if (command == "/regen") {
        chat.regen();
      } else if (command == "/params") {
        chat.params(arg);
      } else if ((command == "/save" || command == "/load") && arg.empty()) {
        fmt::print(stderr, "[{} needs a file name]\n", command);
      } else if (command == "/save") {
        chat.save(arg);
      } else if (command == "/load") {
        chat.load(arg);
      } else if (command == "/help") {
        fmt::print(stderr, "{}", kHelp);
      } else {
        fmt::print(stderr, "[unknown command {}; /help lists them]\n", command);
      }
    } catch (const Error& e) {
      // A bad file name or state file must not end the conversation.
      fmt::print(stderr, "[error: {}]\n", e.what());
    }
  }
  if (interactive) fmt::print("\n");
}

}  // namespace

void add_chat_command(CLI::App& app) {
  auto* cmd = app.add_subcommand("chat", "Chat with a model (RWKV World User:/Assistant: format)");
  auto o = std::make_shared<ChatOptions>();
  // ChatRWKV's chat defaults.
  o->sampling.params.top_p = 0.3f;
  o->sampling.params.presence_penalty = 0.0f;
  o->sampling.params.frequency_penalty = 1.0f;
  o->sampling.max_tokens = 500;
  o->model.allow_default = true;
  o->model.add_to(*cmd);
  cmd->add_option("--system", o->system, "System prompt, fed once at the start");
  cmd->add_option("--tokenizer", o->tokenizer,
                  "Vocab file (rwkv_vocab_v20230424.txt, 20B_tokenizer.json) or 'byte'");
  cmd->add_option("--state-in", o->state_in, "Start from this state (e.g. a state-tuned one)")
      ->check(CLI::ExistingFile);
  cmd->add_option("--user", o->user, "The user's role name (default User)");
  cmd->add_option("--assistant", o->assistant, "The model's role name (default Assistant)");
  o->sampling.add_to(*cmd);
  cmd->add_flag("-v,--verbose", o->verbose, "After each answer, tokens processed and speeds");
  cmd->add_option("--chunk", o->chunk, "Tokens per step when processing a message (default 64)")
      ->check(kPositive);
  cmd->callback([o] { run(*o); });
}

}  // namespace rwkv::cli
