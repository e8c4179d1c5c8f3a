#include "rwkv/thread_pool.h"

#include <immintrin.h>

#include <algorithm>

namespace rwkv {

namespace {
// Spin this many rounds before sleeping: covers the gap between back-to-back parallel_for calls
// of one forward pass without burning a core when nothing comes.
constexpr int kSpinRounds = 4000;
// A task index no call reaches: the counter's value while a call is being set up.
constexpr uint64_t kClosed = 0xffffffffu;
}  // namespace

ThreadPool::ThreadPool(int n_threads) {
  for (int i = 1; i < n_threads; ++i) workers_.emplace_back([this] { worker_loop(); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_.store(true, std::memory_order_release);
    generation_.fetch_add(1, std::memory_order_acq_rel);
  }
  wake_.notify_all();
  for (std::thread& t : workers_) t.join();
}

void ThreadPool::run_tasks(uint32_t generation) {
  uint64_t v = next_task_.load(std::memory_order_acquire);
  for (;;) {
    if (uint32_t(v >> 32) != generation ||
        int64_t(v & 0xffffffffu) >= n_tasks_.load(std::memory_order_acquire))
      return;
    if (!next_task_.compare_exchange_weak(v, v + 1, std::memory_order_acq_rel)) continue;
    (*fn_)(int64_t(v & 0xffffffffu));
    done_tasks_.fetch_add(1, std::memory_order_release);
    v = next_task_.load(std::memory_order_acquire);
  }
}

void ThreadPool::worker_loop() {
  // Generation 0 is the pool's start: a worker that starts late (even after the destructor)
  // sees every later change.
  uint32_t seen = 0;
  for (;;) {
    // Wait for a new call: spin briefly, then sleep.
    for (int i = 0; i < kSpinRounds && generation_.load(std::memory_order_acquire) == seen; ++i)
      _mm_pause();
    if (generation_.load(std::memory_order_acquire) == seen) {
      std::unique_lock<std::mutex> lock(mutex_);
      wake_.wait(lock, [&] { return generation_.load(std::memory_order_acquire) != seen; });
    }
    seen = generation_.load(std::memory_order_acquire);
    if (stop_.load(std::memory_order_acquire)) return;
    run_tasks(seen);
  }
}

void ThreadPool::parallel_for(int64_t n, const std::function<void(int64_t)>& fn) {
  if (n <= 0) return;
  if (workers_.empty() || n == 1) {
    for (int64_t i = 0; i < n; ++i) fn(i);
    return;
  }
  const uint32_t generation = generation_.load(std::memory_order_relaxed) + 1;
  // Close the counter before anything else changes: a worker still holding an exhausted index
  // of the previous call (it read the counter, not yet n_tasks_) would otherwise see the larger
  // n of this call, claim that index with the old generation and run a task of this call twice.
  next_task_.store(uint64_t(generation) << 32 | kClosed, std::memory_order_seq_cst);
  fn_ = &fn;
  n_tasks_.store(n, std::memory_order_release);
  done_tasks_.store(0, std::memory_order_relaxed);
  next_task_.store(uint64_t(generation) << 32, std::memory_order_release);
  {
    // Under the mutex, so a worker between its check and its wait cannot miss the change.
    std::lock_guard<std::mutex> lock(mutex_);
    generation_.store(generation, std::memory_order_release);
  }
  wake_.notify_all();
  run_tasks(generation);
  // The caller has run out of tasks to claim; wait for those still running elsewhere.
  for (int spin = 0; done_tasks_.load(std::memory_order_acquire) < n; ++spin) {
    if (spin < kSpinRounds) {
      _mm_pause();
    } else {
      std::this_thread::yield();
    }
  }
}

void ThreadPool::parallel_ranges(int64_t n, int64_t grain, int64_t take,
                                 const std::function<void(int64_t, int64_t)>& fn,
                                 const std::function<int64_t(int64_t)>& cost_before) {
  if (n <= 0) return;
  const int threads = size();
  if (threads == 1 || n <= grain) {
    fn(0, n);
    return;
  }
  constexpr int kMaxShares = 64;
  const int shares = std::min(threads, kMaxShares);
  // (begin << 32 | end) of each share, each on its own cache line: an owner taking from its
  // share must not take the line from the other cores (with two shares on one line, that
  // transfer was 4% of a token's cycles).
  struct alignas(64) Range {
    std::atomic<uint64_t> v;
  };
  Range range[kMaxShares];
  // Share i begins at the first grain whose cost before it reaches i / shares of the total,
  // found by bisection: this runs for every product of every token.
  const int64_t grains = (n + grain - 1) / grain;
  int64_t begin[kMaxShares + 1];
  begin[0] = 0;
  begin[shares] = n;
  if (cost_before) {
    const int64_t total = cost_before(n);
    int64_t lo = 0;
    for (int i = 1; i < shares; ++i) {
      int64_t hi = grains;  // the first grain reaching the target lies in [lo, hi]
      while (lo < hi) {
        const int64_t mid = (lo + hi) / 2;
        if (cost_before(mid * grain) * shares < total * i)
          lo = mid + 1;
        else
          hi = mid;
      }
      begin[i] = std::min(n, lo * grain);
    }
  } else {
    for (int i = 1; i < shares; ++i) begin[i] = std::min(n, grains * i / shares * grain);
  }
  for (int i = 0; i < shares; ++i)
    range[i].v.store(uint64_t(begin[i]) << 32 | uint64_t(begin[i + 1]), std::memory_order_relaxed);
  // Takes up to `count` items from the front (or the back) of share i; false when it is empty.
  const auto claim = [&](int i, int64_t count, bool front, int64_t& i0, int64_t& i1) {
    uint64_t v = range[i].v.load(std::memory_order_acquire);
    for (;;) {
      const int64_t b = int64_t(v >> 32), e = int64_t(v & 0xffffffffu);
      if (b >= e) return false;
      // From the back, whole grains: every share starts on a multiple of grain.
      i0 = front ? b : std::max(b, (e - 1) / grain * grain);
      i1 = front ? std::min(e, b + count) : e;
      const uint64_t next =
          front ? uint64_t(i1) << 32 | uint64_t(e) : uint64_t(b) << 32 | uint64_t(i0);
      if (range[i].v.compare_exchange_weak(v, next, std::memory_order_acq_rel)) return true;
    }
  };
  parallel_for(shares, [&](int64_t own) {
    int64_t i0, i1;
    while (claim(int(own), take, true, i0, i1)) fn(i0, i1);
    for (int k = 1; k < shares; ++k) {
      const int other = int((own + k) % shares);
      while (claim(other, grain, false, i0, i1)) fn(i0, i1);
    }
  });
}

}  // namespace rwkv
