#include "engine/scheduler.h"

#include <algorithm>

namespace rwkv {

std::optional<JobEvent> JobHandle::next(std::chrono::milliseconds timeout) {
  std::unique_lock lock(mutex_);
  if (!ready_.wait_for(lock, timeout, [&] { return !events_.empty(); })) return std::nullopt;
  JobEvent e = std::move(events_.front());
  events_.pop_front();
  return e;
}

void JobHandle::push(JobEvent event) {
  {
    std::lock_guard lock(mutex_);
    events_.push_back(std::move(event));
  }
  ready_.notify_one();
}

namespace {
JobEvent text_event(std::string text) {
  JobEvent e;
  e.text = std::move(text);
  return e;
}
}  // namespace

// A job being run: its tokens so far (prompt, then sampled ones) and how many of them the state
// has seen. Logits are current when fed == tokens.size().
struct Scheduler::Slot {
  GenerationJob job;
  std::shared_ptr<JobHandle> handle;
  std::vector<int> tokens;
  size_t fed = 0;
  int cached = 0;
  int generated = 0;
  // The reply was sent; the last sampled token is still fed so the cache holds the state after
  // the whole reply (the next chat turn starts with it).
  bool draining = false;
  bool done = false;
  std::vector<float> state, logits;
  Sampler sampler;
  Utf8Stream utf8;
  StopMatcher stops;

  Slot(GenerationJob j, std::shared_ptr<JobHandle> h, int n_vocab)
      : job(std::move(j)), handle(std::move(h)), tokens(job.prompt),
        sampler(job.sampler, n_vocab), stops(job.stop) {}
  bool in_prompt() const { return fed < job.prompt.size(); }
};

Scheduler::Scheduler(const Model& model, const Tokenizer& tokenizer, SchedulerOptions options)
    : model_(model), tokenizer_(tokenizer), options_(options), cache_(options.cache_bytes) {
  options_.max_batch = std::max(1, options_.max_batch);
  options_.step_tokens = std::max(1, options_.step_tokens);
  options_.chunk = std::max(1, options_.chunk);
  thread_ = std::thread([this] { run(); });
}

Scheduler::~Scheduler() { shutdown(std::chrono::milliseconds(0)); }

Scheduler::Admission Scheduler::submit(GenerationJob job, std::shared_ptr<JobHandle>& handle) {
  {
    std::lock_guard lock(mutex_);
    if (!accepting_) return Admission::shutting_down;
    if (int(queue_.size()) >= options_.max_queue) return Admission::queue_full;
    handle = std::make_shared<JobHandle>();
    queue_.emplace_back(std::move(job), handle);
  }
  wake_.notify_one();
  return Admission::accepted;
}

void Scheduler::shutdown(std::chrono::milliseconds grace) {
  {
    std::unique_lock lock(mutex_);
    accepting_ = false;
    idle_.wait_for(lock, grace, [&] { return queue_.empty() && active_count_ == 0; });
    abort_ = true;
    stop_ = true;
  }
  wake_.notify_one();
  if (thread_.joinable()) thread_.join();
}

SchedulerStats Scheduler::stats() const {
  SchedulerStats s;
  s.jobs_finished = jobs_finished_;
  s.prompt_tokens = prompt_tokens_;
  s.cached_tokens = cached_tokens_;
  s.processed_tokens = processed_tokens_;
  s.generated_tokens = generated_tokens_;
  s.steps = steps_;
  s.batched_sequences = batched_sequences_;
  s.last_batch = last_batch_;
  s.busy_seconds = busy_seconds_;
  s.cache = cache_.stats();
  std::lock_guard lock(mutex_);
  s.active = active_count_;
  s.queued = int(queue_.size());
  return s;
}

std::unique_ptr<Scheduler::Slot> Scheduler::admit(GenerationJob job,
                                                  std::shared_ptr<JobHandle> handle) {
  const int n_vocab = model_.info().n_vocab;
  auto slot = std::make_unique<Slot>(std::move(job), std::move(handle), n_vocab);
  slot->logits.resize(size_t(n_vocab));
  if (auto hit = cache_.lookup(slot->job.state_key, slot->job.prompt)) {
    slot->state = std::move(hit->state);
    slot->logits = std::move(hit->logits);
    slot->fed = hit->length;
    slot->cached = int(hit->length);
  } else if (slot->job.initial_state) {
    const auto s = slot->job.initial_state->data();
    slot->state.assign(s.begin(), s.end());
  } else {
    slot->state.resize(model_.state_size());
    model_.init_state(slot->state);
  }
  prompt_tokens_ += slot->job.prompt.size();
  cached_tokens_ += uint64_t(slot->cached);
  return slot;
}

void Scheduler::finish(Slot& slot, const std::string& reason) {
  JobEvent e;
  e.done = true;
  e.finish_reason = reason;
  e.prompt_tokens = int(slot.job.prompt.size());
  e.cached_tokens = slot.cached;
  e.completion_tokens = slot.generated;
  slot.handle->push(std::move(e));
  ++jobs_finished_;
  // Only a reply that ended normally and still has its last token to feed drains.
  slot.draining = (reason == "stop" || reason == "length") && options_.cache_bytes > 0 &&
                  slot.fed + 1 == slot.tokens.size();
  slot.done = !slot.draining;
}

void Scheduler::cache_state(const Slot& slot) {
  if (options_.cache_bytes == 0) return;
  cache_.insert(slot.job.state_key, std::span<const int>(slot.tokens).first(slot.fed), slot.state,
                slot.logits);
}

bool Scheduler::sample(Slot& slot) {
  const int id = slot.sampler.sample_valid(slot.logits, tokenizer_.vocab_size());
  if (tokenizer_.is_special(id)) {  // end of text
    const std::string rest = slot.stops.push(slot.utf8.flush()) + slot.stops.flush();
    if (!rest.empty()) slot.handle->push(text_event(rest));
    cache_state(slot);
    finish(slot, "stop");
    return false;
  }
  slot.tokens.push_back(id);
  ++slot.generated;
  ++generated_tokens_;
  std::string text = slot.stops.push(slot.utf8.push(tokenizer_.token_bytes(id)));
  if (slot.stops.stopped()) {
    if (!text.empty()) slot.handle->push(text_event(std::move(text)));
    finish(slot, "stop");
    return false;
  }
  if (slot.generated >= slot.job.max_tokens) {
    text += slot.stops.push(slot.utf8.flush()) + slot.stops.flush();
    if (!text.empty()) slot.handle->push(text_event(std::move(text)));
    finish(slot, "length");
    return false;
  }
  if (!text.empty()) slot.handle->push(text_event(std::move(text)));
  return true;
}

void Scheduler::run() {
  std::vector<std::unique_ptr<Slot>> slots;
  std::vector<Sequence> batch;
  std::vector<Slot*> batch_slots;
  std::vector<size_t> batch_sizes;
  Scratch scratch;
  const EvalOptions eval{.chunk = options_.chunk, .pool = options_.pool};
  for (;;) {
    std::deque<std::pair<GenerationJob, std::shared_ptr<JobHandle>>> arrivals;
    bool abort = false;
    {
      std::unique_lock lock(mutex_);
      active_count_ = int(slots.size());
      if (slots.empty() && queue_.empty()) {
        idle_.notify_all();
        wake_.wait(lock, [&] { return stop_ || !queue_.empty(); });
        if (stop_ && queue_.empty()) return;
      }
      abort = abort_;
      while (!queue_.empty() && (abort || int(slots.size() + arrivals.size()) < options_.max_batch)) {
        arrivals.push_back(std::move(queue_.front()));
        queue_.pop_front();
      }
      active_count_ = int(slots.size() + arrivals.size());
    }
    for (auto& [job, handle] : arrivals) slots.push_back(admit(std::move(job), std::move(handle)));

    // Jobs that are over: shutdown, a client that went away, a deadline passed.
    const auto now = SteadyClock::now();
    for (auto& slot : slots) {
      if (slot->draining) {
        slot->done = abort;
        continue;
      }
      if (abort) finish(*slot, "shutdown");
      else if (slot->handle->cancelled()) finish(*slot, "cancelled");
      else if (now >= slot->job.deadline) finish(*slot, "timeout");
    }
    // Jobs whose logits are current pick their next token.
    for (auto& slot : slots)
      if (!slot->done && !slot->draining && slot->fed == slot->tokens.size()) sample(*slot);
    std::erase_if(slots, [](const auto& s) { return s->done; });

    // One batch: every sampled token (decode), then prompt chunks within the step's budget.
    batch.clear();
    batch_slots.clear();
    batch_sizes.clear();
    int budget = options_.step_tokens;
    const auto add = [&](Slot& slot, size_t n) {
      batch.push_back({std::span<const int>(slot.tokens).subspan(slot.fed, n), slot.state,
                       slot.logits, false});
      batch_slots.push_back(&slot);
      batch_sizes.push_back(n);
      budget -= int(n);
    };
    for (auto& slot : slots)
      if (!slot->in_prompt() && slot->fed < slot->tokens.size()) add(*slot, slot->tokens.size() - slot->fed);
    for (auto& slot : slots) {
      if (!slot->in_prompt() || (budget <= 0 && !batch.empty())) continue;
      size_t end = slot->job.prompt.size();
      for (size_t c : slot->job.checkpoints)  // stop at the next checkpoint to cache it
        if (c > slot->fed && c < end) end = c;
      const size_t n = std::min({end - slot->fed, size_t(options_.chunk), size_t(std::max(budget, 1))});
      add(*slot, n);
    }
    if (batch.empty()) continue;

    const auto start = SteadyClock::now();
    try {
      model_.forward_batch(batch, scratch, eval);
    } catch (const std::exception&) {
      // Jobs are validated before they are queued; a failure here ends the jobs of the batch.
      for (Slot* slot : batch_slots) {
        if (!slot->draining) finish(*slot, "error");
        slot->done = true;
      }
      std::erase_if(slots, [](const auto& s) { return s->done; });
      continue;
    }
    busy_seconds_ = busy_seconds_ + std::chrono::duration<double>(SteadyClock::now() - start).count();
    ++steps_;
    batched_sequences_ += batch.size();
    last_batch_ = int(batch.size());
    for (size_t i = 0; i < batch_slots.size(); ++i) {
      Slot& slot = *batch_slots[i];
      slot.fed += batch_sizes[i];
      processed_tokens_ += batch_sizes[i];
      const bool checkpoint =
          slot.fed == slot.job.prompt.size() ||
          std::find(slot.job.checkpoints.begin(), slot.job.checkpoints.end(), slot.fed) !=
              slot.job.checkpoints.end();
      if (checkpoint || slot.draining) cache_state(slot);
      if (slot.draining) slot.done = true;
    }
    std::erase_if(slots, [](const auto& s) { return s->done; });
  }
}

}  // namespace rwkv
