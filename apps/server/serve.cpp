// `rwkv serve MODEL`: the OpenAI-compatible HTTP server (docs in README.md, "Server"). Loads the
// model, state-tuned states and chat template, runs the batching scheduler and the HTTP API, and
// shuts down gracefully on SIGTERM/SIGINT: no new requests, running ones finish (up to
// --shutdown-grace seconds, then they are ended), streams are written to the end, then exit.
#include <httplib.h>
#include <signal.h>
#include <sys/socket.h>

#include <atomic>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <thread>

#include "../cli/cli.h"
#include "api.h"

namespace rwkv::cli {

namespace {

volatile std::sig_atomic_t g_stop_requested = 0;

struct ServeOptions {
  ModelOptions model;
  std::string tokenizer;
  std::string host = "127.0.0.1";
  int port = 8080;
  std::string model_name;
  std::string api_key;
  std::vector<std::string> states;  // NAME=FILE
  std::string chat_template;        // JSON text or a file holding it
  SchedulerOptions scheduler;
  size_t cache_mb = 256;
  size_t max_body = 1 << 20;
  int max_connections = 64;
  server::Limits limits;
  double shutdown_grace_s = 10;
};

ChatTemplate load_template(const std::string& spec) {
  if (spec.empty()) return {};
  if (spec.find('{') != std::string::npos) return ChatTemplate::from_json(spec);
  std::ifstream f(spec, std::ios::binary);
  if (!f) throw Error(spec + ": cannot open the chat template file");
  return ChatTemplate::from_json(std::string(std::istreambuf_iterator<char>(f), {}));
}

std::vector<server::NamedState> load_states(const Model& model, const std::vector<std::string>& specs) {
  std::vector<server::NamedState> states;
  for (const std::string& spec : specs) {
    const size_t eq = spec.find('=');
    if (eq == std::string::npos || eq == 0 || eq + 1 == spec.size())
      throw Error("--state: '" + spec + "' is not NAME=FILE");
    const std::string name = spec.substr(0, eq), path = spec.substr(eq + 1);
    for (const auto& s : states)
      if (s.name == name) throw Error("--state: the name '" + name + "' is given twice");
    states.push_back({name, path, State::load(model, path)});
  }
  return states;
}

void run(const ServeOptions& o) {
  // SIGTERM/SIGINT only raise a flag (libraries may have started threads of their own, so any
  // thread can receive them); a watcher thread does the shutdown. A dead client must not kill
  // the server with SIGPIPE.
  struct sigaction on_stop {};
  on_stop.sa_handler = [](int) { g_stop_requested = 1; };
  sigemptyset(&on_stop.sa_mask);
  sigaction(SIGTERM, &on_stop, nullptr);
  sigaction(SIGINT, &on_stop, nullptr);
  signal(SIGPIPE, SIG_IGN);

  auto model = o.model.load();
  auto tokenizer = Tokenizer::for_model(o.model.path, model->info().n_vocab, o.tokenizer);
  const std::vector<server::NamedState> states = load_states(*model, o.states);
  const ChatTemplate chat_template = load_template(o.chat_template);
  auto pool = o.model.make_pool();

  SchedulerOptions sched_options = o.scheduler;
  sched_options.cache_bytes = o.cache_mb << 20;
  sched_options.pool = pool.get();
  Scheduler scheduler(*model, *tokenizer, sched_options);

  server::ApiConfig config;
  config.model_name = !o.model_name.empty() ? o.model_name
                                           : std::filesystem::path(o.model.path).stem().string();
  config.api_key = o.api_key;
  config.max_body = o.max_body;
  config.limits = o.limits;
  server::Api api(*model, *tokenizer, scheduler, chat_template, states, config);

  httplib::Server http;
  const size_t threads = size_t(o.max_connections);
  http.new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
  http.set_payload_max_length(o.max_body);
  http.set_read_timeout(30);
  http.set_write_timeout(30);
  http.set_keep_alive_timeout(2);
  api.install(http);

  // httplib 0.11 listens with a backlog of 5, too few for a burst of clients: listen() again on
  // the bound socket (Linux takes the new backlog) with the system's maximum.
  int listen_fd = -1;
  http.set_socket_options([&listen_fd](int fd) {
    httplib::default_socket_options(fd);
    listen_fd = fd;
  });
  int port = o.port;
  if (port == 0) port = http.bind_to_any_port(o.host);
  else if (!http.bind_to_port(o.host, port)) port = -1;
  if (port < 0) throw Error("cannot listen on " + o.host + ":" + std::to_string(o.port));
  if (listen_fd >= 0) ::listen(listen_fd, SOMAXCONN);
  std::fprintf(stderr, "listening on http://%s:%d (model %s, %d slots, cache %zu MiB)\n",
               o.host.c_str(), port, config.model_name.c_str(), sched_options.max_batch, o.cache_mb);
  std::fflush(stderr);

  std::atomic<bool> stopped{false};
  std::thread signal_thread([&] {
    while (!stopped && !g_stop_requested) std::this_thread::sleep_for(std::chrono::milliseconds(100));
    if (stopped) return;
    std::fprintf(stderr, "shutting down: finishing requests in flight\n");
    std::fflush(stderr);
    scheduler.shutdown(std::chrono::milliseconds(int64_t(o.shutdown_grace_s * 1000)));
    api.wait_idle(std::chrono::seconds(5));  // streams write their last events
    http.stop();
  });
  const bool served = http.listen_after_bind();
  stopped = true;
  signal_thread.join();
  scheduler.shutdown(std::chrono::milliseconds(0));
  if (!served) throw Error("the HTTP server failed");
  std::fprintf(stderr, "stopped\n");
}

}  // namespace

void add_serve_command(CLI::App& app) {
  auto* cmd = app.add_subcommand("serve", "OpenAI-compatible HTTP server with continuous batching");
  auto o = std::make_shared<ServeOptions>();
  o->model.add_to(*cmd);
  cmd->add_option("--tokenizer", o->tokenizer,
                  "Vocab file (rwkv_vocab_v20230424.txt, 20B_tokenizer.json) or 'byte'");
  cmd->add_option("--host", o->host, "Address to listen on (default 127.0.0.1)");
  cmd->add_option("--port", o->port, "Port (default 8080; 0 = any free port, printed)")
      ->check(CLI::Range(0, 65535));
  cmd->add_option("--model-name", o->model_name, "Model id in the API (default: the file name)");
  cmd->add_option("--api-key", o->api_key, "Require 'Authorization: Bearer KEY' on /v1/* and /metrics")
      ->envname("RWKV_API_KEY");
  cmd->add_option("--state", o->states, "NAME=FILE: a state-tuned state requests can pick (repeatable)");
  cmd->add_option("--chat-template", o->chat_template,
                  "JSON (or a file of it) overriding the RWKV World template: keys system, user, "
                  "assistant, separator, generation_prefix, stop, collapse_newlines");
  cmd->add_option("--parallel", o->scheduler.max_batch, "Sequences generated at once (default 16)")
      ->check(CLI::Range(1, 1024));
  cmd->add_option("--queue", o->scheduler.max_queue, "Requests waiting for a slot before 429 (default 64)")
      ->check(CLI::Range(0, 100000));
  cmd->add_option("--step-tokens", o->scheduler.step_tokens, "Tokens per batched step at most (default 256)")
      ->check(CLI::Range(1, 1 << 20));
  cmd->add_option("--chunk", o->scheduler.chunk, "Prompt tokens of one request per step (default 64)")
      ->check(CLI::Range(1, 1 << 20));
  cmd->add_option("--cache-mb", o->cache_mb, "Prefix state cache size in MiB (default 256, 0 = off)");
  cmd->add_option("--max-body", o->max_body, "Largest request body in bytes (default 1 MiB)")
      ->check(kPositive);
  cmd->add_option("--max-prompt-tokens", o->limits.max_prompt_tokens,
                  "Longest prompt (default 8192)")
      ->check(kPositive);
  cmd->add_option("--max-tokens-limit", o->limits.max_tokens,
                  "Largest max_tokens a request may ask (default 4096)")
      ->check(kPositive);
  cmd->add_option("--default-max-tokens", o->limits.default_max_tokens,
                  "max_tokens when a request gives none (default 512)")
      ->check(kPositive);
  cmd->add_option("--max-connections", o->max_connections,
                  "Connections served at once; more wait to be accepted (default 64)")
      ->check(CLI::Range(1, 4096));
  cmd->add_option("--timeout", o->limits.timeout_s, "Seconds a request may take (default 600)")
      ->check(kPositive);
  cmd->add_option("--shutdown-grace", o->shutdown_grace_s,
                  "Seconds running requests get to finish on SIGTERM (default 10)")
      ->check(kNonNegative);
  cmd->callback([o] { run(*o); });
}

}  // namespace rwkv::cli
