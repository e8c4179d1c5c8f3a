#include "request.h"

#include <cmath>
#include <optional>

namespace rwkv::server {

using nlohmann::json;

json ApiError::to_json() const {
  return {{"error",
           {{"message", message},
            {"type", type},
            {"param", param.empty() ? json(nullptr) : json(param)},
            {"code", code.empty() ? json(nullptr) : json(code)}}}};
}

namespace {

[[noreturn]] void bad(const std::string& param, const std::string& message,
                      const std::string& code = "invalid_value") {
  throw ApiError{400, message, "invalid_request_error", param, code};
}

// The field, or nothing when it is absent or null (clients send null for "default").
const json* field(const json& body, const char* key) {
  const auto it = body.find(key);
  return it == body.end() || it->is_null() ? nullptr : &*it;
}

std::optional<double> number(const json& body, const char* key, double lo, double hi) {
  const json* v = field(body, key);
  if (!v) return std::nullopt;
  if (!v->is_number()) bad(key, std::string("'") + key + "' must be a number", "invalid_type");
  const double x = v->get<double>();
  if (!std::isfinite(x) || x < lo || x > hi)
    bad(key, std::string("'") + key + "' must be between " + json(lo).dump() + " and " +
                 json(hi).dump());
  return x;
}

std::optional<int64_t> integer(const json& body, const char* key, int64_t lo, int64_t hi) {
  const json* v = field(body, key);
  if (!v) return std::nullopt;
  if (!v->is_number_integer())
    bad(key, std::string("'") + key + "' must be an integer", "invalid_type");
  if (v->is_number_unsigned() && v->get<uint64_t>() > uint64_t(hi))
    bad(key, std::string("'") + key + "' must be at most " + std::to_string(hi));
  const int64_t x = v->get<int64_t>();
  if (x < lo || x > hi)
    bad(key, std::string("'") + key + "' must be between " + std::to_string(lo) + " and " +
                 std::to_string(hi));
  return x;
}

std::optional<bool> boolean(const json& body, const char* key) {
  const json* v = field(body, key);
  if (!v) return std::nullopt;
  if (!v->is_boolean()) bad(key, std::string("'") + key + "' must be true or false", "invalid_type");
  return v->get<bool>();
}

// Message content: a string, or an array of {"type": "text", "text": ...} parts.
std::string content_text(const json& content, const std::string& param) {
  if (content.is_null()) return "";
  if (content.is_string()) return content.get<std::string>();
  if (!content.is_array()) bad(param, "message content must be a string or an array of parts", "invalid_type");
  std::string text;
  for (const json& part : content) {
    if (!part.is_object() || part.value("type", "") != "text" || !part.contains("text") ||
        !part["text"].is_string())
      bad(param, "only text content parts are supported");
    text += part["text"].get<std::string>();
  }
  return text;
}

std::vector<int> chat_prompt(const json& body, const RequestContext& ctx,
                             std::vector<size_t>& checkpoints) {
  const json* messages = field(body, "messages");
  if (!messages) bad("messages", "'messages' is required", "missing_required_parameter");
  if (!messages->is_array() || messages->empty())
    bad("messages", "'messages' must be a non-empty array");
  std::vector<ChatMessage> chat;
  for (size_t i = 0; i < messages->size(); ++i) {
    const json& m = (*messages)[i];
    const std::string param = "messages[" + std::to_string(i) + "]";
    if (!m.is_object() || !m.contains("role") || !m["role"].is_string())
      bad(param, param + " must be an object with a string 'role'");
    chat.push_back({m["role"].get<std::string>(), content_text(m.value("content", json()), param + ".content")});
  }
  std::vector<std::string> pieces;
  try {
    pieces = ctx.chat_template.render(chat);
  } catch (const Error& e) {
    bad("messages", e.what());
  }
  std::vector<int> tokens;
  for (size_t i = 0; i < pieces.size(); ++i) {
    const std::vector<int> ids = ctx.tokenizer.encode(pieces[i]);
    tokens.insert(tokens.end(), ids.begin(), ids.end());
    // A leading system prompt is often shared by many conversations: cache the state after it.
    if (i == 0 && pieces.size() > 2 && chat[0].role == "system" && !tokens.empty())
      checkpoints.push_back(tokens.size());
  }
  return tokens;
}

std::vector<int> completion_prompt(const json& body, const RequestContext& ctx) {
  const json* prompt = field(body, "prompt");
  if (!prompt) bad("prompt", "'prompt' is required", "missing_required_parameter");
  if (prompt->is_string()) return ctx.tokenizer.encode(prompt->get<std::string>());
  if (prompt->is_array() && prompt->size() == 1 && (*prompt)[0].is_string())
    return ctx.tokenizer.encode((*prompt)[0].get<std::string>());
  if (prompt->is_array() && !prompt->empty() && (*prompt)[0].is_number_integer()) {
    std::vector<int> tokens;
    for (const json& t : *prompt) {
      if (!t.is_number_integer() || t.get<int64_t>() < 0 ||
          t.get<int64_t>() >= ctx.tokenizer.vocab_size())
        bad("prompt", "token ids must be integers in [0, " +
                          std::to_string(ctx.tokenizer.vocab_size()) + ")");
      tokens.push_back(t.get<int>());
    }
    return tokens;
  }
  bad("prompt", "'prompt' must be a string, an array of one string, or an array of token ids");
}

std::vector<std::string> stop_strings(const json& body) {
  const json* stop = field(body, "stop");
  if (!stop) return {};
  std::vector<std::string> out;
  if (stop->is_string()) out.push_back(stop->get<std::string>());
  else if (stop->is_array() && stop->size() <= 16)
    for (const json& s : *stop) {
      if (!s.is_string()) bad("stop", "'stop' must be a string or an array of strings", "invalid_type");
      out.push_back(s.get<std::string>());
    }
  else
    bad("stop", "'stop' must be a string or an array of at most 16 strings", "invalid_type");
  for (const std::string& s : out)
    if (s.empty() || s.size() > 256) bad("stop", "stop strings must have 1 to 256 bytes");
  return out;
}

SamplerParams sampler_params(const json& body, const RequestContext& ctx) {
  SamplerParams p;  // ChatRWKV's defaults where the request says nothing
  if (auto v = number(body, "temperature", 0, 2)) p.temperature = float(*v);
  if (auto v = number(body, "top_p", 0, 1)) p.top_p = float(*v);
  if (auto v = integer(body, "top_k", 0, ctx.n_vocab)) p.top_k = int(*v);
  if (auto v = number(body, "min_p", 0, 1)) p.min_p = float(*v);
  if (auto v = number(body, "presence_penalty", -2, 2)) p.presence_penalty = float(*v);
  if (auto v = number(body, "frequency_penalty", -2, 2)) p.frequency_penalty = float(*v);
  if (auto v = number(body, "penalty_decay", 0, 1)) p.penalty_decay = float(*v);
  if (auto v = number(body, "repetition_penalty", 0.01, 10)) p.repetition_penalty = float(*v);
  if (const json* seed = field(body, "seed")) {
    if (!seed->is_number_integer()) bad("seed", "'seed' must be an integer", "invalid_type");
    p.seed = seed->is_number_unsigned() ? seed->get<uint64_t>() : uint64_t(seed->get<int64_t>());
  }
  if (const json* bias = field(body, "logit_bias")) {
    if (!bias->is_object()) bad("logit_bias", "'logit_bias' must be an object of token id: bias", "invalid_type");
    for (const auto& [key, value] : bias->items()) {
      size_t used = 0;
      int id = -1;
      try {
        id = std::stoi(key, &used);
      } catch (const std::exception&) {
        used = 0;
      }
      if (used != key.size() || id < 0 || id >= ctx.n_vocab)
        bad("logit_bias", "logit_bias key '" + key + "' is not a token id below " + std::to_string(ctx.n_vocab));
      if (!value.is_number() || !std::isfinite(value.get<double>()) ||
          std::abs(value.get<double>()) > 100)
        bad("logit_bias", "logit_bias values must be numbers between -100 and 100");
      p.logit_bias[id] = value.get<float>();
    }
  }
  return p;
}

}  // namespace

CompletionRequest parse_completion_request(const std::string& body_text, bool chat,
                                           const RequestContext& ctx) {
  json body;
  try {
    body = json::parse(body_text);
  } catch (const json::exception& e) {
    throw ApiError{400, std::string("the body is not valid JSON: ") + e.what(),
                   "invalid_request_error", "", "invalid_json"};
  }
  if (!body.is_object()) bad("", "the body must be a JSON object", "invalid_type");

  CompletionRequest r;
  r.chat = chat;
  if (const json* model = field(body, "model")) {
    if (!model->is_string()) bad("model", "'model' must be a string", "invalid_type");
    r.model = model->get<std::string>();
  }
  if (auto n = integer(body, "n", 1, 1000); n && *n != 1) bad("n", "only n = 1 is supported");
  if (auto n = integer(body, "best_of", 1, 1000); n && *n != 1) bad("best_of", "only best_of = 1 is supported");
  if (boolean(body, "echo").value_or(false)) bad("echo", "echo is not supported");
  if (const json* lp = field(body, "logprobs"); lp && !(lp->is_boolean() && !lp->get<bool>()))
    bad("logprobs", "logprobs are not supported");
  r.stream = boolean(body, "stream").value_or(false);
  if (const json* so = field(body, "stream_options")) {
    if (!so->is_object()) bad("stream_options", "'stream_options' must be an object", "invalid_type");
    r.include_usage = boolean(*so, "include_usage").value_or(false);
  }

  GenerationJob& job = r.job;
  job.sampler = sampler_params(body, ctx);
  std::optional<int64_t> max_tokens = integer(body, "max_completion_tokens", 1, ctx.limits.max_tokens);
  if (!max_tokens) max_tokens = integer(body, "max_tokens", 1, ctx.limits.max_tokens);
  job.max_tokens = int(max_tokens.value_or(ctx.limits.default_max_tokens));
  job.stop = stop_strings(body);
  if (const json* state = field(body, "state")) {
    if (!state->is_string()) bad("state", "'state' must be the name of a state", "invalid_type");
    for (size_t i = 0; i < ctx.states.size(); ++i)
      if (ctx.states[i].name == state->get<std::string>()) {
        job.initial_state = &ctx.states[i].state;
        job.state_key = i + 1;
      }
    if (!job.initial_state) bad("state", "no state named '" + state->get<std::string>() + "' (see /v1/states)", "state_not_found");
  }

  job.prompt = chat ? chat_prompt(body, ctx, job.checkpoints) : completion_prompt(body, ctx);
  if (chat) job.stop.insert(job.stop.end(), ctx.chat_template.stop.begin(), ctx.chat_template.stop.end());
  if (job.prompt.empty()) bad(chat ? "messages" : "prompt", "the prompt is empty");
  if (int64_t(job.prompt.size()) > ctx.limits.max_prompt_tokens)
    bad(chat ? "messages" : "prompt",
        "the prompt has " + std::to_string(job.prompt.size()) + " tokens, more than the limit of " +
            std::to_string(ctx.limits.max_prompt_tokens),
        "context_length_exceeded");
  job.deadline = SteadyClock::now() + std::chrono::milliseconds(int64_t(ctx.limits.timeout_s * 1000));
  return r;
}

}  // namespace rwkv::server
