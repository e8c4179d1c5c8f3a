// The OpenAI-compatible HTTP API over a Scheduler: routes, authentication, streaming (SSE),
// error bodies in OpenAI's shape for every 4xx/5xx, and Prometheus metrics.
#pragma once

#include <httplib.h>

#include <atomic>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "request.h"

namespace rwkv::server {

struct ApiConfig {
  std::string model_name;
  std::string api_key;  // empty = no authentication
  size_t max_body = size_t(1) << 20;
  Limits limits;
};

class InFlight;

class Api {
 public:
  Api(const Model& model, const Tokenizer& tokenizer, Scheduler& scheduler,
      const ChatTemplate& chat_template, const std::vector<NamedState>& states, ApiConfig config);

  // Installs the routes and the error, auth and logging hooks.
  void install(httplib::Server& server);
  // Waits up to `timeout` until no completion request is being answered (streams are written
  // to the end before the server stops).
  void wait_idle(std::chrono::milliseconds timeout);

 private:
  void completions(const httplib::Request& req, httplib::Response& res, bool chat);
  void respond_stream(httplib::Response& res, const CompletionRequest& request,
                      std::shared_ptr<JobHandle> handle, std::shared_ptr<InFlight> in_flight);
  void respond_whole(httplib::Response& res, const CompletionRequest& request,
                     JobHandle& handle);
  std::string metrics_text() const;
  void count_request(const std::string& path, int status);

  const Model& model_;
  const Tokenizer& tokenizer_;
  Scheduler& scheduler_;
  const ChatTemplate& chat_template_;
  const std::vector<NamedState>& states_;
  ApiConfig config_;
  const int64_t started_;  // unix seconds, for "created"

  std::atomic<uint64_t> next_id_{1};
  std::atomic<int> in_flight_{0};  // completion requests being answered
  mutable std::mutex counts_mutex_;
  std::map<std::pair<std::string, int>, uint64_t> request_counts_;  // (path, status) -> count
  std::mutex idle_mutex_;
  std::condition_variable idle_;
};

}  // namespace rwkv::server
