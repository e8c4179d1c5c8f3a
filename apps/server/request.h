// Reading OpenAI-style completion requests into scheduler jobs, with every check a request
// needs before it reaches the model: bad input becomes an ApiError (a 4xx in OpenAI's error
// shape), never a crash.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "engine/chat_template.h"
#include "engine/scheduler.h"
#include "rwkv/state.h"
#include "rwkv/tokenizer.h"

namespace rwkv::server {

// An error response: HTTP status and OpenAI's {"error": {message, type, param, code}}.
struct ApiError {
  int status = 400;
  std::string message;
  std::string type = "invalid_request_error";
  std::string param;  // the offending field, or empty
  std::string code;   // machine-readable reason, or empty
  nlohmann::json to_json() const;
};

struct NamedState {
  std::string name;
  std::string path;
  State state;
};

struct Limits {
  int max_prompt_tokens = 8192;
  int max_tokens = 4096;          // largest max_tokens a request may ask for
  int default_max_tokens = 512;   // when the request gives none
  double timeout_s = 600;         // per request, from arrival to the last token
};

// What a request parse needs to know about the server.
struct RequestContext {
  const Tokenizer& tokenizer;
  int n_vocab;
  const ChatTemplate& chat_template;
  const std::vector<NamedState>& states;
  Limits limits;
};

struct CompletionRequest {
  bool chat = false;
  bool stream = false;
  bool include_usage = false;  // stream_options.include_usage
  std::string model;           // as the client named it (echoed back)
  GenerationJob job;
};

// Parses a /v1/chat/completions (chat = true) or /v1/completions body. Throws ApiError.
CompletionRequest parse_completion_request(const std::string& body, bool chat,
                                           const RequestContext& context);

}  // namespace rwkv::server
