// Continuous batching for a server: one thread runs every active generation as one batch per
// step. A step feeds, in one Model::forward_batch call, the last sampled token of each running
// sequence and a chunk of the prompt of each new one, so new requests join without pausing the
// others. Batching changes only speed: forward_batch gives bit-identical results whatever the
// batch composition or chunking.
//
// Prompts start from the longest prefix found in the PrefixCache; the state after the prompt,
// at the job's checkpoints and at the end of the generation is cached for later requests.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "engine/prefix_cache.h"
#include "rwkv/model.h"
#include "rwkv/sampler.h"
#include "rwkv/state.h"
#include "rwkv/tokenizer.h"

namespace rwkv {

using SteadyClock = std::chrono::steady_clock;

struct GenerationJob {
  std::vector<int> prompt;  // at least one token, all below the tokenizer's vocab_size()
  // Prompt lengths after which the state is cached besides the full prompt (e.g. the end of a
  // shared system prompt).
  std::vector<size_t> checkpoints;
  const State* initial_state = nullptr;  // a state-tuned state; nullptr = the model's own
  uint64_t state_key = 0;                // names initial_state in the cache (0 = the model's)
  SamplerParams sampler;
  int max_tokens = 16;
  std::vector<std::string> stop;  // strings that end the generation (never emitted)
  SteadyClock::time_point deadline = SteadyClock::time_point::max();
};

// What a job produces: pieces of text (never half a UTF-8 character), then one final event.
struct JobEvent {
  bool done = false;
  std::string text;
  // When done: "stop" (stop string or end-of-text token), "length", "timeout", "cancelled",
  // "shutdown" or "error".
  std::string finish_reason;
  int prompt_tokens = 0;
  int cached_tokens = 0;  // prompt tokens taken from the prefix cache instead of processed
  int completion_tokens = 0;
};

// The consumer's side of a submitted job, shared with the scheduler.
class JobHandle {
 public:
  // The next event, or nothing if none arrives within `timeout`.
  std::optional<JobEvent> next(std::chrono::milliseconds timeout);
  // Drops the job (its client went away): the scheduler frees its slot at the next step.
  void cancel() { cancelled_ = true; }
  bool cancelled() const { return cancelled_; }

 private:
  friend class Scheduler;
  void push(JobEvent event);

  std::mutex mutex_;
  std::condition_variable ready_;
  std::deque<JobEvent> events_;
  std::atomic<bool> cancelled_{false};
};

struct SchedulerOptions {
  int max_batch = 16;     // sequences generating at once (slots)
  int max_queue = 64;     // jobs waiting for a slot; submit refuses more
  int step_tokens = 256;  // tokens fed per step at most: decode tokens first, then prompt chunks
  int chunk = 64;         // prompt tokens of one sequence per step at most
  size_t cache_bytes = size_t(256) << 20;
  ThreadPool* pool = nullptr;
};

struct SchedulerStats {
  uint64_t jobs_finished = 0;
  uint64_t prompt_tokens = 0;     // of finished and running jobs
  uint64_t cached_tokens = 0;     // prompt tokens served from the cache
  uint64_t processed_tokens = 0;  // tokens fed to the model (prompts and generated)
  uint64_t generated_tokens = 0;
  uint64_t steps = 0;
  uint64_t batched_sequences = 0;  // sum over steps of the batch size
  int active = 0;                  // jobs in slots
  int queued = 0;                  // jobs waiting for a slot
  int last_batch = 0;              // sequences in the latest step
  double busy_seconds = 0;         // time spent in steps
  PrefixCache::Stats cache;
};

class Scheduler {
 public:
  // The model and tokenizer must outlive the scheduler.
  Scheduler(const Model& model, const Tokenizer& tokenizer, SchedulerOptions options);
  ~Scheduler();
  Scheduler(const Scheduler&) = delete;
  Scheduler& operator=(const Scheduler&) = delete;

  enum class Admission { accepted, queue_full, shutting_down };
  // Queues a job; on `accepted`, `handle` receives its events.
  Admission submit(GenerationJob job, std::shared_ptr<JobHandle>& handle);
  // Takes no more jobs, lets the running and queued ones finish for up to `grace`, ends the
  // rest with finish_reason "shutdown", and stops the thread. Idempotent.
  void shutdown(std::chrono::milliseconds grace);
  bool accepting() const { return accepting_; }
  SchedulerStats stats() const;

 private:
  struct Slot;
  void run();
  std::unique_ptr<Slot> admit(GenerationJob job, std::shared_ptr<JobHandle> handle);
  // Samples the next token of a slot whose logits are current; false when the job is over.
  bool sample(Slot& slot);
  void finish(Slot& slot, const std::string& reason);
  void cache_state(const Slot& slot);

  const Model& model_;
  const Tokenizer& tokenizer_;
  SchedulerOptions options_;
  PrefixCache cache_;

  mutable std::mutex mutex_;
  std::condition_variable wake_;  // a job arrived or shutdown began
  std::condition_variable idle_;  // the scheduler ran out of work
  std::deque<std::pair<GenerationJob, std::shared_ptr<JobHandle>>> queue_;
  std::atomic<bool> accepting_{true};
  bool abort_ = false;  // end every job now
  bool stop_ = false;   // leave the loop once idle
  int active_count_ = 0;

  std::atomic<uint64_t> jobs_finished_{0}, prompt_tokens_{0}, cached_tokens_{0},
      processed_tokens_{0}, generated_tokens_{0}, steps_{0}, batched_sequences_{0};
  std::atomic<int> last_batch_{0};
  std::atomic<double> busy_seconds_{0};

  std::thread thread_;
};

}  // namespace rwkv
