// `rwkv serve` end to end on loopback: the OpenAI API with curl, httplib and the official
// `openai` JavaScript client; errors in OpenAI's shape; the prefix cache across chat turns;
// state-tuned states; a bounded load test with clients that disconnect or send bad bodies; a
// clean exit on SIGTERM (under ASan/LSan, a leak would make that exit code non-zero).
#include <gtest/gtest.h>
#include <httplib.h>
#include <signal.h>
#include <sys/wait.h>

#include <atomic>
#include <chrono>
#include <nlohmann/json.hpp>
#include <regex>
#include <thread>

#include "test_util.h"

namespace rwkv::test {
namespace {

using nlohmann::json;
using namespace std::chrono_literals;

std::string tiny_model() {
  return (shared_dir() / "testdata/tiny-rwkv/tiny-rwkv-7v0-834K-FP32.bin").string();
}

// `j` with the fields of `extra` added or replaced.
json with(json j, const json& extra) {
  j.update(extra);
  return j;
}

// A `rwkv serve` child process on a free loopback port.
class ServerProcess {
 public:
  ServerProcess(const std::filesystem::path& dir, const std::vector<std::string>& extra)
      : log_(dir / ("server-" + std::to_string(next_log_++) + ".log")) {
    std::vector<std::string> args = {cli_path(), "serve", tiny_model(), "--port", "0", "--threads", "1"};
    args.insert(args.end(), extra.begin(), extra.end());
    pid_ = fork();
    if (pid_ == 0) {
      const int fd = ::open(log_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      dup2(fd, 2);
      std::vector<char*> argv;
      for (auto& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      execv(argv[0], argv.data());
      _exit(127);
    }
    const std::regex listening("listening on http://127\\.0\\.0\\.1:([0-9]+)");
    for (int i = 0; i < 600 && port_ == 0; ++i) {  // ASan builds start slowly
      std::smatch m;
      const std::string log = read_text(log_);
      if (std::regex_search(log, m, listening)) port_ = std::stoi(m[1]);
      else std::this_thread::sleep_for(50ms);
    }
  }
  ~ServerProcess() {
    if (pid_ > 0 && !stopped_) stop();
  }
  int port() const { return port_; }
  std::string url() const { return "http://127.0.0.1:" + std::to_string(port_); }
  httplib::Client client() const {
    httplib::Client c("127.0.0.1", port_);
    c.set_read_timeout(60, 0);
    return c;
  }
  // SIGTERM, then the exit code (-1 if killed by a signal or not gone within 60 s).
  int stop() {
    stopped_ = true;
    kill(pid_, SIGTERM);
    for (int i = 0; i < 600; ++i) {
      int status = 0;
      if (waitpid(pid_, &status, WNOHANG) == pid_) return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
      std::this_thread::sleep_for(100ms);
    }
    kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
    return -1;
  }
  std::string log() const { return read_text(log_); }

 private:
  static inline int next_log_ = 0;
  std::filesystem::path log_;
  pid_t pid_ = -1;
  int port_ = 0;
  bool stopped_ = false;
};

// The text, finish reason and usage of an SSE stream of chunks.
struct StreamResult {
  std::string text;
  std::string finish_reason;
  json usage;
  bool done = false;  // saw data: [DONE]
  std::string error;  // the code of an error event
};

StreamResult parse_sse(const std::string& body) {
  StreamResult r;
  size_t pos = 0;
  while ((pos = body.find("data: ", pos)) != std::string::npos) {
    const size_t end = body.find("\n\n", pos);
    const std::string data = body.substr(pos + 6, end - pos - 6);
    pos = end;
    if (data == "[DONE]") {
      r.done = true;
      continue;
    }
    const json j = json::parse(data);
    if (j.contains("error")) {
      r.error = j["error"]["code"];
      continue;
    }
    if (j.contains("usage") && !j["usage"].is_null()) r.usage = j["usage"];
    for (const json& c : j["choices"]) {
      if (c.contains("delta")) r.text += c["delta"].value("content", "");
      else r.text += c["text"].get<std::string>();
      if (!c["finish_reason"].is_null()) r.finish_reason = c["finish_reason"];
    }
  }
  return r;
}

class Server : public ::testing::Test {
 protected:
  void SetUp() override {
    RWKV_REQUIRE_SHARED();
    dir_ = temp_dir();
  }
  void start(const std::vector<std::string>& extra = {}) {
    server_ = std::make_unique<ServerProcess>(dir_, extra);
    ASSERT_GT(server_->port(), 0) << server_->log();
  }
  json post(const std::string& path, const json& body, int expect_status = 200) {
    auto c = server_->client();
    auto res = c.Post(path.c_str(), body.dump(), "application/json");
    EXPECT_TRUE(res) << "no response";
    if (!res) return {};
    EXPECT_EQ(res->status, expect_status) << res->body;
    return json::parse(res->body);
  }
  // Runs a shell command that must succeed; returns its stdout.
  std::string shell(const std::string& cmd) {
    const CommandResult r = run_shell(cmd, dir_);
    EXPECT_EQ(r.exit_code, 0) << cmd << "\n" << r.out << r.err;
    return r.out;
  }
  double metric(const std::string& name) {
    auto res = server_->client().Get("/metrics");
    EXPECT_TRUE(res && res->status == 200);
    const std::regex line("(^|\n)" + name + " ([0-9.e+-]+)");
    std::smatch m;
    if (!res || !std::regex_search(res->body, m, line)) return -1;
    return std::stod(m[2]);
  }
  // The server exits 0 on SIGTERM (under LSan, leaks would make it non-zero) and ASan found nothing.
  void expect_clean_exit() {
    const int code = server_->stop();
    const std::string log = server_->log();
    EXPECT_EQ(code, 0) << log;
    EXPECT_EQ(log.find("Sanitizer"), std::string::npos) << log;
    EXPECT_NE(log.find("stopped"), std::string::npos) << log;
  }
  std::filesystem::path dir_;
  std::unique_ptr<ServerProcess> server_;
};

TEST_F(Server, CurlChatAndCompletionsStreamingAndNot) {
  start();
  const std::string base = "curl -sS --fail-with-body " + server_->url();
  // Non-streaming chat.
  const json chat = json::parse(shell(
      base + "/v1/chat/completions -H 'Content-Type: application/json' -d '{\"messages\": "
             "[{\"role\": \"system\", \"content\": \"Be brief.\"}, {\"role\": \"user\", \"content\": "
             "\"Hi\"}], \"max_tokens\": 12, \"seed\": 9}'"));
  EXPECT_EQ(chat["object"], "chat.completion");
  EXPECT_EQ(chat["choices"][0]["message"]["role"], "assistant");
  EXPECT_EQ(chat["usage"]["prompt_tokens"], std::string("System: Be brief.\n\nUser: Hi\n\nAssistant:").size());
  EXPECT_LE(chat["usage"]["completion_tokens"].get<int>(), 12);
  EXPECT_EQ(chat["usage"]["total_tokens"], chat["usage"]["prompt_tokens"].get<int>() + chat["usage"]["completion_tokens"].get<int>());
  // Streaming completion with usage, against the same request not streamed.
  const std::string body = R"({"prompt": "Once upon a time", "max_tokens": 20, "seed": 5, "temperature": 1)";
  const json whole = json::parse(shell(base + "/v1/completions -d '" + body + "}'"));
  const std::string sse = shell(base + "/v1/completions -N -d '" + body +
                                R"(, "stream": true, "stream_options": {"include_usage": true}}')");
  const StreamResult s = parse_sse(sse);
  EXPECT_TRUE(s.done) << sse;
  EXPECT_EQ(s.text, whole["choices"][0]["text"]);
  EXPECT_EQ(s.finish_reason, "length");
  EXPECT_EQ(s.usage["completion_tokens"], 20);
  EXPECT_EQ(s.usage["prompt_tokens"], 16);
  EXPECT_EQ(whole["usage"]["completion_tokens"], 20);
  // Models, health, states.
  const json models = json::parse(shell(base + "/v1/models"));
  EXPECT_EQ(models["data"][0]["id"], "tiny-rwkv-7v0-834K-FP32");
  EXPECT_EQ(json::parse(shell(base + "/health"))["status"], "ok");
  EXPECT_EQ(json::parse(shell(base + "/v1/states"))["data"], json::array());
  expect_clean_exit();
}

TEST_F(Server, OpenAiJavaScriptClient) {
  const auto script = std::filesystem::path(__FILE__).parent_path().parent_path() / "server";
  if (std::system("node --version >/dev/null 2>&1") != 0)
    GTEST_SKIP() << "SKIPPED: node is not installed (scripts/test.sh installs the test deps)";
  if (!std::filesystem::exists(script / "node_modules/openai/package.json"))
    GTEST_SKIP() << "SKIPPED: the openai npm package is missing: run `npm ci` in " << script.string();
  start({"--api-key", "sk-test"});
  const std::string out = shell("node " + (script / "openai_client_test.mjs").string() + " " + server_->url() + " sk-test");
  EXPECT_NE(out.find("all checks passed"), std::string::npos) << out;
  expect_clean_exit();
}

TEST_F(Server, BadRequestsGetOpenAiErrors) {
  start({"--max-body", "4096", "--max-prompt-tokens", "100", "--max-tokens-limit", "50"});
  const json chat = {{"messages", {{{"role", "user"}, {"content", "Hi"}}}}};
  struct Case {
    std::string body;
    int status;
    std::string param;
  };
  const std::vector<Case> cases = {
      {"{not json", 400, ""},
      {"[1, 2]", 400, ""},
      {"{}", 400, "messages"},
      {json{{"messages", "Hi"}}.dump(), 400, "messages"},
      {json{{"messages", {{{"role", "robot"}, {"content", "x"}}}}}.dump(), 400, "messages"},
      {json{{"messages", {{{"content", "x"}}}}}.dump(), 400, "messages[0]"},
      {with(chat, {{"temperature", "hot"}}).dump(), 400, "temperature"},
      {with(chat, {{"temperature", 7}}).dump(), 400, "temperature"},
      {with(chat, {{"max_tokens", 51}}).dump(), 400, "max_tokens"},
      {with(chat, {{"max_tokens", 0}}).dump(), 400, "max_tokens"},
      {with(chat, {{"n", 2}}).dump(), 400, "n"},
      {with(chat, {{"stop", {1, 2}}}).dump(), 400, "stop"},
      {with(chat, {{"logit_bias", {{"99999", 1}}}}).dump(), 400, "logit_bias"},
      {with(chat, {{"state", "nope"}}).dump(), 400, "state"},
      {with(chat, {{"seed", 1.5}}).dump(), 400, "seed"},
      {json{{"messages", {{{"role", "user"}, {"content", std::string(150, 'a')}}}}}.dump(), 400, "messages"},
      {std::string(5000, ' '), 413, ""},
  };
  for (const Case& c : cases) {
    auto res = server_->client().Post("/v1/chat/completions", c.body, "application/json");
    ASSERT_TRUE(res) << c.body.substr(0, 80);
    EXPECT_EQ(res->status, c.status) << c.body.substr(0, 80) << " -> " << res->body;
    const json e = json::parse(res->body, nullptr, false);
    ASSERT_TRUE(e.contains("error")) << res->body;
    EXPECT_TRUE(e["error"]["message"].is_string() && !e["error"]["message"].get<std::string>().empty());
    EXPECT_TRUE(e["error"]["type"].is_string());
    if (!c.param.empty()) {
      EXPECT_EQ(e["error"]["param"], c.param) << res->body;
    }
  }
  // Completions: bad prompts; unknown routes.
  EXPECT_EQ(post("/v1/completions", {{"prompt", ""}}, 400)["error"]["param"], "prompt");
  EXPECT_EQ(post("/v1/completions", {{"prompt", {-1}}}, 400)["error"]["param"], "prompt");
  EXPECT_EQ(post("/v1/completions", {{"prompt", {{"a", 1}}}}, 400)["error"]["param"], "prompt");
  auto res = server_->client().Get("/v1/nothing");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 404);
  EXPECT_EQ(json::parse(res->body)["error"]["code"], "not_found");
  // Still serving after all that.
  EXPECT_EQ(post("/v1/completions", {{"prompt", "Hi"}, {"max_tokens", 3}})["usage"]["completion_tokens"], 3);
  expect_clean_exit();
}

TEST_F(Server, ApiKeyIsRequiredWhenSet) {
  start({"--api-key", "secret"});
  auto c = server_->client();
  auto res = c.Get("/v1/models");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 401);
  EXPECT_EQ(json::parse(res->body)["error"]["code"], "invalid_api_key");
  res = c.Get("/v1/models", {{"Authorization", "Bearer wrong"}});
  EXPECT_EQ(res->status, 401);
  res = c.Get("/v1/models", {{"Authorization", "Bearer secret"}});
  EXPECT_EQ(res->status, 200);
  EXPECT_EQ(c.Get("/health")->status, 200);  // for load balancers
  expect_clean_exit();
}

TEST_F(Server, SecondChatTurnProcessesOnlyTheNewTokens) {
  start();
  json messages = {{{"role", "user"}, {"content", "Tell me a story."}}};
  const json first = post("/v1/chat/completions", {{"messages", messages}, {"max_tokens", 16}, {"temperature", 0}});
  const std::string reply = first["choices"][0]["message"]["content"];
  ASSERT_FALSE(reply.empty());
  EXPECT_EQ(first["usage"]["prompt_tokens_details"]["cached_tokens"], 0);
  messages.push_back({{"role", "assistant"}, {"content", reply}});
  messages.push_back({{"role", "user"}, {"content", "And then?"}});
  const json second = post("/v1/chat/completions", {{"messages", messages}, {"max_tokens", 4}, {"temperature", 0}});
  // Byte tokens: the model wrote " " + reply after "Assistant:", and its state covers all of it.
  const std::string new_text = "\n\nUser: And then?\n\nAssistant:";
  const int prompt_tokens = second["usage"]["prompt_tokens"];
  EXPECT_EQ(prompt_tokens, first["usage"]["prompt_tokens"].get<int>() + 1 + int(reply.size()) + int(new_text.size()));
  EXPECT_EQ(prompt_tokens - second["usage"]["prompt_tokens_details"]["cached_tokens"].get<int>(), int(new_text.size()))
      << "'" << reply << "'";
  EXPECT_GE(metric("rwkv_cache_hits_total"), 1);
  EXPECT_GE(metric("rwkv_prompt_tokens_cached_total"), prompt_tokens - int(new_text.size()));
  expect_clean_exit();
}

TEST_F(Server, StateTunedStatesAreListedAndUsed) {
  // A state: the one after a text, saved by `rwkv generate`.
  const auto state = dir_ / "story.state";
  const std::string greedy = " --temperature 0 --presence-penalty 0 --frequency-penalty 0";
  shell(cli_path() + " generate " + tiny_model() + " 'Once upon a time there was a dog.' -n 1 --state-out " + state.string() + greedy);
  const std::string expected = shell(cli_path() + " generate " + tiny_model() + " ' The' -n 20 --state-in " + state.string() + greedy);
  start({"--state", "story=" + state.string()});
  const json states = json::parse(server_->client().Get("/v1/states")->body);
  ASSERT_EQ(states["data"].size(), 1u);
  EXPECT_EQ(states["data"][0]["id"], "story");
  const json body = {{"prompt", " The"}, {"max_tokens", 20}, {"temperature", 0}, {"presence_penalty", 0}, {"frequency_penalty", 0}};
  EXPECT_EQ(post("/v1/completions", with(body, {{"state", "story"}}))["choices"][0]["text"], expected);
  // Sampled, the state shows too (greedy, this model says " the the" whatever the state).
  const json sampled = with(body, {{"temperature", 1}, {"seed", 2}});
  EXPECT_NE(post("/v1/completions", with(sampled, {{"state", "story"}}))["choices"][0]["text"],
            post("/v1/completions", sampled)["choices"][0]["text"]);
  expect_clean_exit();
}

TEST_F(Server, GreedyOutputIsTheSameAloneAndAmongSixteen) {
  start({"--parallel", "16"});
  // Greedy, and (odd i) seeded sampling too: neither may depend on the batch.
  const auto body = [](int i) {
    return json{{"prompt", "Story " + std::to_string(i) + ": once"}, {"max_tokens", 24},
                {"temperature", i % 2 ? 0.8 : 0.0}, {"seed", i}};
  };
  std::vector<std::string> alone(16), together(16);
  for (int i = 0; i < 16; ++i) alone[i] = post("/v1/completions", body(i))["choices"][0]["text"];
  // The cache would now serve every prompt: a fresh server computes them all, batched.
  ASSERT_EQ(server_->stop(), 0);
  start({"--parallel", "16"});
  std::vector<std::thread> threads;
  for (int i = 0; i < 16; ++i)
    threads.emplace_back([&, i] {
      auto res = server_->client().Post("/v1/completions", body(i).dump(), "application/json");
      if (res && res->status == 200) together[i] = json::parse(res->body)["choices"][0]["text"];
      else together[i] = res ? res->body : "error " + httplib::to_string(res.error());
    });
  for (auto& t : threads) t.join();
  for (int i = 0; i < 16; ++i) EXPECT_EQ(together[i], alone[i]) << "request " << i;
  EXPECT_GT(metric("rwkv_batch_size_mean"), 1.5) << "the requests never ran batched";
  expect_clean_exit();
}

// 32 streaming clients at once (a quarter hang up mid-stream), plus malformed and oversized
// bodies: the server stays up, every well-formed request completes, no slot stays taken.
TEST_F(Server, LoadWithDisconnectsAndBadBodies) {
  start({"--parallel", "16", "--queue", "64", "--max-body", "65536"});
  const auto deadline = std::chrono::steady_clock::now() + 90s;
  std::atomic<int> completed{0}, hung_up{0}, rejected{0}, failures{0};
  std::mutex mutex;
  std::vector<std::string> problems;
  std::vector<std::thread> threads;
  for (int i = 0; i < 32; ++i)
    threads.emplace_back([&, i] {
      const bool hang_up = i % 4 == 3;
      httplib::Client c = server_->client();
      httplib::Request req;
      req.method = "POST";
      req.path = i % 2 ? "/v1/chat/completions" : "/v1/completions";
      json body = {{"max_tokens", hang_up ? 2000 : 48}, {"stream", true}, {"seed", i},
                   {"stream_options", {{"include_usage", true}}}};
      if (i % 2) body["messages"] = {{{"role", "user"}, {"content", "Client " + std::to_string(i)}}};
      else body["prompt"] = "Client " + std::to_string(i) + " says";
      req.body = body.dump();
      req.set_header("Content-Type", "application/json");
      std::string received;
      int chunks = 0;
      req.content_receiver = [&](const char* data, size_t n, uint64_t, uint64_t) {
        received.append(data, n);
        return !(hang_up && ++chunks >= 5);
      };
      const auto res = c.send(req);
      if (hang_up) {
        ++hung_up;
        return;
      }
      const StreamResult s = res && res->status == 200 ? parse_sse(received) : StreamResult{};
      if (s.done && s.usage.contains("completion_tokens") && !s.finish_reason.empty()) {
        ++completed;
      } else {
        ++failures;
        std::lock_guard lock(mutex);
        problems.push_back(res ? std::to_string(res->status) + " " + received.substr(0, 300)
                               : "error " + httplib::to_string(res.error()));
      }
    });
  // Bad bodies: cut-off JSON and wrong types from httplib clients, oversized ones from curl.
  const auto big = dir_ / "big.json";
  write_bytes(big, std::vector<uint8_t>(100000, 'x'));
  for (int i = 0; i < 12; ++i)
    threads.emplace_back([&, i] {
      std::string status, body;
      if (i % 3 == 0) {
        const auto out = dir_ / ("big-" + std::to_string(i) + ".out");
        const std::string cmd = "curl -s -o " + out.string() + " -w '%{http_code}' --data-binary @" +
                                big.string() + " " + server_->url() + "/v1/chat/completions";
        std::FILE* p = popen(cmd.c_str(), "r");
        char buf[16] = {};
        status = p && std::fgets(buf, sizeof buf, p) ? buf : "";
        if (p) pclose(p);
        body = read_text(out);
      } else {
        httplib::Client c = server_->client();
        const auto res = c.Post("/v1/chat/completions",
                                i % 3 == 1 ? "{\"messages\": [{\"role\": " : "{\"prompt\": 12}",
                                "application/json");
        status = res ? std::to_string(res->status) : "error " + httplib::to_string(res.error());
        body = res ? res->body : "";
      }
      if ((status == "400" || status == "413") && body.find("\"error\"") != std::string::npos) {
        ++rejected;
      } else {
        ++failures;
        std::lock_guard lock(mutex);
        problems.push_back(status + " " + body.substr(0, 300));
      }
    });
  for (auto& t : threads) t.join();
  EXPECT_LT(std::chrono::steady_clock::now(), deadline);
  EXPECT_EQ(completed, 24);
  EXPECT_EQ(hung_up, 8);
  EXPECT_EQ(rejected, 12);
  EXPECT_EQ(failures, 0) << ::testing::PrintToString(problems);
  // The hung-up streams give their slots back.
  double active = -1, in_flight = -1;
  for (int i = 0; i < 100; ++i) {
    active = metric("rwkv_active_sequences");
    in_flight = metric("rwkv_requests_in_flight");
    if (active == 0 && in_flight == 0) break;
    std::this_thread::sleep_for(100ms);
  }
  EXPECT_EQ(active, 0);
  EXPECT_EQ(in_flight, 0);
  EXPECT_LT(metric("rwkv_generated_tokens_total"), 24 * 48 + 8 * 2000) << "cancelled streams kept generating";
  expect_clean_exit();
}

TEST_F(Server, SigtermEndsRunningStreamsCleanly) {
  // The stream must still be running when SIGTERM comes: the tiny model generates about 14000
  // tokens a second, so 4000 could end within the grace period.
  start({"--shutdown-grace", "0.3", "--max-tokens-limit", "1000000"});
  httplib::Client c = server_->client();
  httplib::Request req;
  req.method = "POST";
  req.path = "/v1/completions";
  req.body = json{{"prompt", "Once"}, {"max_tokens", 1000000}, {"stream", true}}.dump();
  std::string received;
  std::atomic<bool> streaming{false};
  req.content_receiver = [&](const char* data, size_t n, uint64_t, uint64_t) {
    received.append(data, n);
    streaming = true;
    return true;
  };
  std::thread client([&] { c.send(req); });
  for (int i = 0; i < 200 && !streaming; ++i) std::this_thread::sleep_for(20ms);
  expect_clean_exit();
  client.join();
  const StreamResult s = parse_sse(received);
  EXPECT_TRUE(s.done) << received.substr(received.size() > 500 ? received.size() - 500 : 0);
  EXPECT_EQ(s.error, "shutting_down");
}

}  // namespace
}  // namespace rwkv::test
