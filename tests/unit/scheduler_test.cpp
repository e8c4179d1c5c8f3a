// The batching scheduler on a real (tiny, trained) model: batching and the prefix cache change
// nothing but speed, cancelled jobs free their slots, a full queue refuses jobs.
#include "engine/scheduler.h"

#include <gtest/gtest.h>

#include "test_util.h"

namespace rwkv {
namespace {

using namespace std::chrono_literals;

struct Reply {
  std::string text;
  JobEvent done;
};

Reply collect(JobHandle& handle) {
  Reply r;
  for (;;) {
    auto e = handle.next(30s);
    if (!e) throw std::runtime_error("no event within 30 s");
    if (e->done) {
      r.done = *e;
      return r;
    }
    r.text += e->text;
  }
}

class SchedulerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    RWKV_REQUIRE_SHARED();
    model_ = Model::load((test::shared_dir() / "testdata/tiny-rwkv/tiny-rwkv-7v0-834K-FP32.bin").string());
    tokenizer_ = Tokenizer::for_model("", model_->info().n_vocab);
  }
  GenerationJob job(const std::string& prompt, int max_tokens, float temperature = 0) {
    GenerationJob j;
    j.prompt = tokenizer_->encode(prompt);
    j.max_tokens = max_tokens;
    j.sampler.temperature = temperature;
    j.sampler.seed = 1;
    return j;
  }
  Reply run_one(Scheduler& s, GenerationJob j) {
    std::shared_ptr<JobHandle> h;
    EXPECT_EQ(s.submit(std::move(j), h), Scheduler::Admission::accepted);
    return collect(*h);
  }
  std::unique_ptr<Model> model_;
  std::unique_ptr<Tokenizer> tokenizer_;
};

TEST_F(SchedulerTest, GreedyOutputIsTheSameAloneAndAmongSixteen) {
  const std::vector<std::string> prompts = {"Once upon a time", "The cat", "In the morning, ",
                                            "She said", "A long time ago there was a little girl"};
  std::vector<std::string> alone;
  {
    Scheduler s(*model_, *tokenizer_, {.max_batch = 16, .cache_bytes = 0});
    for (const auto& p : prompts) {
      const Reply r = run_one(s, job(p, 24));
      EXPECT_EQ(r.done.finish_reason, "length");
      EXPECT_EQ(r.done.completion_tokens, 24);
      EXPECT_EQ(r.done.prompt_tokens, int(p.size()));
      alone.push_back(r.text);
    }
  }
  // 16 at once, with different lengths, and prompts cut in small chunks so prefill and decode
  // steps mix in one batch.
  Scheduler s(*model_, *tokenizer_, {.max_batch = 16, .step_tokens = 7, .chunk = 3, .cache_bytes = 0});
  std::vector<std::shared_ptr<JobHandle>> handles(16);
  for (size_t i = 0; i < handles.size(); ++i)
    ASSERT_EQ(s.submit(job(prompts[i % prompts.size()], 24), handles[i]), Scheduler::Admission::accepted);
  for (size_t i = 0; i < handles.size(); ++i)
    EXPECT_EQ(collect(*handles[i]).text, alone[i % prompts.size()]) << "request " << i;
  EXPECT_GT(s.stats().batched_sequences, s.stats().steps) << "requests never shared a step";
}

TEST_F(SchedulerTest, CachedPrefixGivesTheSameTokensAndSkipsTheirWork) {
  Scheduler s(*model_, *tokenizer_, {.cache_bytes = 64 << 20});
  const Reply first = run_one(s, job("Once upon a time", 20, 1.0f));
  EXPECT_EQ(first.done.cached_tokens, 0);
  // The same prompt and seed: served from the cache, same text.
  const Reply again = run_one(s, job("Once upon a time", 20, 1.0f));
  EXPECT_EQ(again.done.cached_tokens, 16);
  EXPECT_EQ(again.text, first.text);
  // The conversation continued: the prompt, the reply and its last token all come from the
  // cache; only the new text is processed. (Greedy, for a reply that is plain ASCII text.)
  const Reply greedy = run_one(s, job("Once upon a time", 20));
  const std::string next = "Once upon a time" + greedy.text + " more";
  const Reply turn = run_one(s, job(next, 5));
  EXPECT_EQ(turn.done.prompt_tokens, int(next.size()));
  EXPECT_EQ(turn.done.cached_tokens, int(next.size() - 5)) << "'" << greedy.text << "'";
  // And it equals running the whole prompt without any cache.
  Scheduler fresh(*model_, *tokenizer_, {.cache_bytes = 0});
  EXPECT_EQ(run_one(fresh, job(next, 5)).text, turn.text);
  EXPECT_EQ(s.stats().cache.hits, 3u);
}

TEST_F(SchedulerTest, StopStringsEndTheReplyAndAreNotEmitted) {
  Scheduler s(*model_, *tokenizer_, {});
  const Reply all = run_one(s, job("The ", 40));
  const size_t at = all.text.find("the");
  ASSERT_NE(at, std::string::npos) << all.text;
  GenerationJob j = job("The ", 40);
  j.stop = {"the"};
  const Reply stopped = run_one(s, std::move(j));
  EXPECT_EQ(stopped.text, all.text.substr(0, at));
  EXPECT_EQ(stopped.done.finish_reason, "stop");
}

TEST_F(SchedulerTest, CancelledJobsFreeTheirSlots) {
  Scheduler s(*model_, *tokenizer_, {.max_batch = 2});
  std::vector<std::shared_ptr<JobHandle>> long_jobs(2);
  for (auto& h : long_jobs) ASSERT_EQ(s.submit(job("Once", 100000), h), Scheduler::Admission::accepted);
  ASSERT_TRUE(long_jobs[0]->next(10s));  // running
  for (auto& h : long_jobs) h->cancel();
  // Both slots come back: a new job completes.
  const Reply r = run_one(s, job("Hi", 3));
  EXPECT_EQ(r.done.finish_reason, "length");
  for (auto& h : long_jobs) {
    JobEvent last;
    while (auto e = h->next(10s)) {
      last = *e;
      if (e->done) break;
    }
    EXPECT_EQ(last.finish_reason, "cancelled");
  }
  for (int i = 0; i < 100 && s.stats().active > 0; ++i) std::this_thread::sleep_for(10ms);
  EXPECT_EQ(s.stats().active, 0);
}

TEST_F(SchedulerTest, FullQueueRefusesAndShutdownEndsJobs) {
  Scheduler s(*model_, *tokenizer_, {.max_batch = 1, .max_queue = 1});
  std::shared_ptr<JobHandle> running, waiting, refused;
  ASSERT_EQ(s.submit(job("Once", 100000), running), Scheduler::Admission::accepted);
  ASSERT_TRUE(running->next(10s));  // it holds the only slot
  ASSERT_EQ(s.submit(job("Once", 10), waiting), Scheduler::Admission::accepted);
  EXPECT_EQ(s.submit(job("Once", 10), refused), Scheduler::Admission::queue_full);
  s.shutdown(100ms);
  EXPECT_EQ(s.submit(job("Once", 10), refused), Scheduler::Admission::shutting_down);
  for (auto* h : {&running, &waiting}) {
    JobEvent last;
    while (auto e = (*h)->next(1s)) {
      last = *e;
      if (e->done) break;
    }
    EXPECT_EQ(last.finish_reason, "shutdown");
  }
}

TEST_F(SchedulerTest, DeadlinesEndJobs) {
  Scheduler s(*model_, *tokenizer_, {});
  GenerationJob j = job("Once", 100000);
  j.deadline = SteadyClock::now() + 50ms;
  const Reply r = run_one(s, std::move(j));
  EXPECT_EQ(r.done.finish_reason, "timeout");
  EXPECT_LT(r.done.completion_tokens, 100000);
}

}  // namespace
}  // namespace rwkv
