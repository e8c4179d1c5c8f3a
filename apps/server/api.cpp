#include "api.h"

#include <fmt/format.h>

#include <chrono>
#include <cstdlib>
#include <set>

namespace rwkv::server {

using nlohmann::json;

namespace {

int64_t unix_now() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

void send_error(httplib::Response& res, const ApiError& e) {
  res.status = e.status;
  // Messages may quote the request (a path): never throw on invalid UTF-8 there.
  res.set_content(e.to_json().dump(-1, ' ', false, json::error_handler_t::replace), "application/json");
}

// The error for a job that ended without a reply, or nothing if it ended normally.
std::optional<ApiError> job_error(const std::string& finish_reason) {
  if (finish_reason == "timeout")
    return ApiError{504, "the request took longer than the server's --timeout", "timeout_error", "", "timeout"};
  if (finish_reason == "shutdown")
    return ApiError{503, "the server is shutting down", "server_error", "", "shutting_down"};
  if (finish_reason == "error" || finish_reason == "cancelled")
    return ApiError{500, "the model failed on this request", "server_error", "", finish_reason};
  return std::nullopt;
}

json usage_json(const JobEvent& done) {
  return {{"prompt_tokens", done.prompt_tokens},
          {"completion_tokens", done.completion_tokens},
          {"total_tokens", done.prompt_tokens + done.completion_tokens},
          {"prompt_tokens_details", {{"cached_tokens", done.cached_tokens}}}};
}

// The ids and names one response's objects share, and how they look for chat or completions.
struct ResponseShape {
  std::string id;
  int64_t created = 0;
  std::string model;
  bool chat = false;

  json base(bool chunk) const {
    return {{"id", id},
            {"object", chat ? (chunk ? "chat.completion.chunk" : "chat.completion") : "text_completion"},
            {"created", created},
            {"model", model}};
  }
  json choice_delta(const std::string& text, const json& finish_reason) const {
    json choice = {{"index", 0}, {"finish_reason", finish_reason}, {"logprobs", nullptr}};
    if (chat) choice["delta"] = text.empty() && !finish_reason.is_null() ? json::object() : json{{"content", text}};
    else choice["text"] = text;
    json j = base(true);
    j["choices"] = json::array({choice});
    return j;
  }
};

// A chat reply starts after "Assistant:" with the model's own space; clients expect it trimmed
// (the chat template puts it back when the reply returns as history).
struct LeadingTrim {
  bool active = false;
  std::string operator()(std::string text) {
    if (!active) return text;
    const size_t start = text.find_first_not_of(" \t\r\n");
    if (start == std::string::npos) return "";
    active = false;
    return text.substr(start);
  }
};

}  // namespace

// Counts a completion request as in flight for as long as it lives (for a stream, until the
// response is written or abandoned).
class InFlight {
 public:
  InFlight(std::atomic<int>& count, std::mutex& mutex, std::condition_variable& idle)
      : count_(count), mutex_(mutex), idle_(idle) {
    ++count_;
  }
  ~InFlight() {
    std::lock_guard lock(mutex_);
    if (--count_ == 0) idle_.notify_all();
  }
  InFlight(const InFlight&) = delete;
  InFlight& operator=(const InFlight&) = delete;

 private:
  std::atomic<int>& count_;
  std::mutex& mutex_;
  std::condition_variable& idle_;
};

namespace {

// Generated text is valid UTF-8 (Utf8Stream); replacing invalid bytes is a safety net only.
std::string dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

std::string sse(const json& j) { return "data: " + dump(j) + "\n\n"; }

const std::set<std::string> kRoutes = {"/v1/chat/completions", "/v1/completions", "/v1/models",
                                       "/v1/states", "/health", "/metrics"};

}  // namespace

Api::Api(const Model& model, const Tokenizer& tokenizer, Scheduler& scheduler,
         const ChatTemplate& chat_template, const std::vector<NamedState>& states, ApiConfig config)
    : model_(model), tokenizer_(tokenizer), scheduler_(scheduler), chat_template_(chat_template),
      states_(states), config_(std::move(config)), started_(unix_now()) {}

void Api::install(httplib::Server& server) {
  server.set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
    // Refused before the body is read: httplib 0.11's own 413 path can break other connections.
    if (std::strtoull(req.get_header_value("Content-Length").c_str(), nullptr, 10) > config_.max_body) {
      res.set_header("Connection", "close");
      send_error(res, {413, "the request body is larger than " + std::to_string(config_.max_body) +
                                " bytes (see --max-body)", "invalid_request_error", "", "body_too_large"});
      return httplib::Server::HandlerResponse::Handled;
    }
    const bool protected_path = req.path.rfind("/v1/", 0) == 0 || req.path == "/metrics";
    if (config_.api_key.empty() || !protected_path) return httplib::Server::HandlerResponse::Unhandled;
    if (req.get_header_value("Authorization") == "Bearer " + config_.api_key)
      return httplib::Server::HandlerResponse::Unhandled;
    send_error(res, {401, "missing or wrong API key (send 'Authorization: Bearer KEY')",
                     "invalid_request_error", "", "invalid_api_key"});
    return httplib::Server::HandlerResponse::Handled;
  });
  // httplib's own errors (unknown path, body too large, unparsable request) get a JSON body too.
  server.set_error_handler([](const httplib::Request& req, httplib::Response& res) {
    if (!res.body.empty()) return;
    ApiError e{res.status, "HTTP error " + std::to_string(res.status), "invalid_request_error", "", ""};
    if (res.status == 404) {
      e.message = "no route for " + req.method + " " + req.path;
      e.code = "not_found";
    } else if (res.status == 413) {
      e.message = "the request body is too large (see --max-body)";
      e.code = "body_too_large";
    } else if (res.status >= 500) {
      e.type = "server_error";
    }
    send_error(res, e);
  });
  server.set_exception_handler([](const httplib::Request&, httplib::Response& res, std::exception_ptr ep) {
    std::string what = "internal error";
    try {
      std::rethrow_exception(ep);
    } catch (const std::exception& e) {
      what = e.what();
    } catch (...) {
    }
    send_error(res, {500, what, "server_error", "", "internal_error"});
  });
  server.set_logger([this](const httplib::Request& req, const httplib::Response& res) {
    count_request(kRoutes.count(req.path) ? req.path : "other", res.status);
  });

  server.Post("/v1/chat/completions", [this](const httplib::Request& req, httplib::Response& res) {
    completions(req, res, true);
  });
  server.Post("/v1/completions", [this](const httplib::Request& req, httplib::Response& res) {
    completions(req, res, false);
  });
  server.Get("/v1/models", [this](const httplib::Request&, httplib::Response& res) {
    const json model = {{"id", config_.model_name},
                        {"object", "model"},
                        {"created", started_},
                        {"owned_by", "rwkv"},
                        {"rwkv", {{"version", model_.info().version},
                                  {"n_layer", model_.info().n_layer},
                                  {"n_embd", model_.info().n_embd},
                                  {"n_vocab", model_.info().n_vocab},
                                  {"tokenizer", std::string(tokenizer_.name())}}}};
    res.set_content(json{{"object", "list"}, {"data", json::array({model})}}.dump(), "application/json");
  });
  server.Get("/v1/states", [this](const httplib::Request&, httplib::Response& res) {
    json data = json::array();
    for (const NamedState& s : states_)
      data.push_back({{"id", s.name}, {"object", "state"}, {"file", s.path}});
    res.set_content(json{{"object", "list"}, {"data", data}}.dump(), "application/json");
  });
  server.Get("/health", [this](const httplib::Request&, httplib::Response& res) {
    const bool up = scheduler_.accepting();
    res.status = up ? 200 : 503;
    res.set_content(json{{"status", up ? "ok" : "shutting_down"}}.dump(), "application/json");
  });
  server.Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
    res.set_content(metrics_text(), "text/plain; version=0.0.4");
  });
}

void Api::wait_idle(std::chrono::milliseconds timeout) {
  std::unique_lock lock(idle_mutex_);
  idle_.wait_for(lock, timeout, [&] { return in_flight_ == 0; });
}

void Api::count_request(const std::string& path, int status) {
  std::lock_guard lock(counts_mutex_);
  ++request_counts_[{path, status}];
}

void Api::completions(const httplib::Request& req, httplib::Response& res, bool chat) {
  auto in_flight = std::make_shared<InFlight>(in_flight_, idle_mutex_, idle_);
  CompletionRequest request;
  try {
    const RequestContext ctx{tokenizer_, model_.info().n_vocab, chat_template_, states_, config_.limits};
    request = parse_completion_request(req.body, chat, ctx);
  } catch (const ApiError& e) {
    return send_error(res, e);
  }
  std::shared_ptr<JobHandle> handle;
  switch (scheduler_.submit(std::move(request.job), handle)) {
    case Scheduler::Admission::accepted:
      break;
    case Scheduler::Admission::queue_full:
      return send_error(res, {429, "the server is busy: too many requests waiting, retry later",
                              "rate_limit_error", "", "queue_full"});
    case Scheduler::Admission::shutting_down:
      return send_error(res, {503, "the server is shutting down", "server_error", "", "shutting_down"});
  }
  if (request.stream) {
    respond_stream(res, request, std::move(handle), std::move(in_flight));
  } else {
    respond_whole(res, request, *handle);
  }
}

void Api::respond_whole(httplib::Response& res, const CompletionRequest& request, JobHandle& handle) {
  const ResponseShape shape{(request.chat ? "chatcmpl-" : "cmpl-") + std::to_string(next_id_++),
                            unix_now(), config_.model_name, request.chat};
  LeadingTrim trim{request.chat};
  std::string text;
  for (;;) {
    std::optional<JobEvent> e = handle.next(std::chrono::milliseconds(1000));
    if (!e) continue;  // the job's deadline bounds the wait
    if (!e->done) {
      text += trim(std::move(e->text));
      continue;
    }
    if (auto error = job_error(e->finish_reason)) return send_error(res, *error);
    json choice = {{"index", 0}, {"finish_reason", e->finish_reason}, {"logprobs", nullptr}};
    if (request.chat) choice["message"] = {{"role", "assistant"}, {"content", text}};
    else choice["text"] = text;
    json body = shape.base(false);
    body["choices"] = json::array({choice});
    body["usage"] = usage_json(*e);
    res.set_content(dump(body), "application/json");
    return;
  }
}

void Api::respond_stream(httplib::Response& res, const CompletionRequest& request,
                         std::shared_ptr<JobHandle> handle, std::shared_ptr<InFlight> in_flight) {
  // Outlives this handler: httplib calls the provider after it returns.
  struct Stream {
    std::shared_ptr<JobHandle> handle;
    std::shared_ptr<InFlight> in_flight;
    ResponseShape shape;
    bool include_usage = false;
    LeadingTrim trim;
    bool started = false;
    bool finished = false;
    ~Stream() { handle->cancel(); }  // harmless when the job is over; frees the slot if not
  };
  auto stream = std::make_shared<Stream>();
  stream->handle = std::move(handle);
  stream->in_flight = std::move(in_flight);
  stream->shape = {(request.chat ? "chatcmpl-" : "cmpl-") + std::to_string(next_id_++), unix_now(),
                   config_.model_name, request.chat};
  stream->include_usage = request.include_usage;
  stream->trim.active = request.chat;
  res.set_header("Cache-Control", "no-cache");
  res.set_chunked_content_provider(
      "text/event-stream",
      [stream](size_t, httplib::DataSink& sink) {
        if (stream->finished) {
          sink.done();
          return true;
        }
        std::string out;
        if (!stream->started && stream->shape.chat) {
          json first = stream->shape.choice_delta("", nullptr);
          first["choices"][0]["delta"] = {{"role", "assistant"}, {"content", ""}};
          out += sse(first);
        }
        stream->started = true;
        // Waits briefly for an event, then takes whatever else is ready, in one write.
        for (auto e = stream->handle->next(std::chrono::milliseconds(200)); e;
             e = stream->handle->next(std::chrono::milliseconds(0))) {
          if (!e->done) {
            const std::string text = stream->trim(std::move(e->text));
            if (!text.empty()) out += sse(stream->shape.choice_delta(text, nullptr));
            continue;
          }
          if (auto error = job_error(e->finish_reason)) {
            out += sse(error->to_json());
          } else {
            out += sse(stream->shape.choice_delta("", e->finish_reason));
            if (stream->include_usage) {
              json last = stream->shape.base(true);
              last["choices"] = json::array();
              last["usage"] = usage_json(*e);
              out += sse(last);
            }
          }
          out += "data: [DONE]\n\n";
          stream->finished = true;
          break;
        }
        if (!out.empty() && !sink.write(out.data(), out.size())) {
          stream->handle->cancel();  // the client went away
          return false;
        }
        if (stream->finished) sink.done();
        return true;
      },
      [stream](bool ok) {
        if (!ok) stream->handle->cancel();
      });
}

std::string Api::metrics_text() const {
  const SchedulerStats s = scheduler_.stats();
  std::string out;
  const auto metric = [&](const char* name, const char* type, const char* help, double value) {
    out += fmt::format("# HELP {0} {1}\n# TYPE {0} {2}\n{0} {3}\n", name, help, type, value);
  };
  out += "# HELP rwkv_requests_total HTTP requests answered, by path and status.\n"
         "# TYPE rwkv_requests_total counter\n";
  {
    std::lock_guard lock(counts_mutex_);
    for (const auto& [key, count] : request_counts_)
      out += fmt::format("rwkv_requests_total{{path=\"{}\",status=\"{}\"}} {}\n", key.first, key.second, count);
  }
  metric("rwkv_requests_in_flight", "gauge", "Completion requests being answered.", in_flight_);
  metric("rwkv_queue_depth", "gauge", "Jobs waiting for a batch slot.", s.queued);
  metric("rwkv_active_sequences", "gauge", "Jobs in batch slots.", s.active);
  metric("rwkv_batch_size", "gauge", "Sequences in the latest step.", s.last_batch);
  metric("rwkv_batch_size_mean", "gauge", "Mean sequences per step.",
         s.steps ? double(s.batched_sequences) / double(s.steps) : 0.0);
  metric("rwkv_steps_total", "counter", "Batched forward steps.", double(s.steps));
  metric("rwkv_jobs_finished_total", "counter", "Generations finished.", double(s.jobs_finished));
  metric("rwkv_prompt_tokens_total", "counter", "Prompt tokens of all jobs.", double(s.prompt_tokens));
  metric("rwkv_prompt_tokens_cached_total", "counter", "Prompt tokens served from the prefix cache.",
         double(s.cached_tokens));
  metric("rwkv_processed_tokens_total", "counter", "Tokens fed to the model.", double(s.processed_tokens));
  metric("rwkv_generated_tokens_total", "counter", "Tokens generated.", double(s.generated_tokens));
  metric("rwkv_busy_seconds_total", "counter", "Seconds spent in forward steps.", s.busy_seconds);
  metric("rwkv_generated_tokens_per_second", "gauge", "Generated tokens per second of forward steps.",
         s.busy_seconds > 0 ? double(s.generated_tokens) / s.busy_seconds : 0.0);
  metric("rwkv_processed_tokens_per_second", "gauge", "Fed tokens per second of forward steps.",
         s.busy_seconds > 0 ? double(s.processed_tokens) / s.busy_seconds : 0.0);
  metric("rwkv_cache_hits_total", "counter", "Prompts that started from a cached prefix.", double(s.cache.hits));
  metric("rwkv_cache_misses_total", "counter", "Prompts with no cached prefix.", double(s.cache.misses));
  metric("rwkv_cache_evictions_total", "counter", "Cache entries evicted.", double(s.cache.evictions));
  metric("rwkv_cache_entries", "gauge", "Cached prefix states.", double(s.cache.entries));
  metric("rwkv_cache_bytes", "gauge", "Bytes held by the prefix cache.", double(s.cache.bytes));
  return out;
}

}  // namespace rwkv::server
