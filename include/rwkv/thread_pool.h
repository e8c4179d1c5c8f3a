// A pool of worker threads that the caller owns and passes to the forward pass (never a global).
// The calling thread takes part in the work. Idle workers sleep (a short spin, then a futex
// wait on a condition variable), and work is handed out in small pieces on demand, so a core that
// is busy with another process slows the pool down only by its share instead of stalling everyone
// at a barrier.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace rwkv {

class ThreadPool {
 public:
  // `n_threads` in total, counting the caller; 1 runs everything on the caller.
  explicit ThreadPool(int n_threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return int(workers_.size()) + 1; }
  // Calls fn(i) for every i in [0, n), spread over the threads; returns when all are done.
  // Not reentrant: fn must not call parallel_for on the same pool.
  void parallel_for(int64_t n, const std::function<void(int64_t)>& fn);
  // Calls fn(begin, end) on pieces that cover [0, n) once, spread over the threads. Each thread
  // owns a contiguous share and takes it from the front, `take` items at a time, so its items
  // run in order (one stream through memory); a thread done with its own share takes `grain`
  // items at a time from the back of the others'. A thread slowed by a busy core so ends up
  // with fewer items, and the threads finish within about one grain of each other. Shares and
  // pieces start at multiples of `grain`; `take` is a multiple of it. Few cache lines change
  // hands (one counter per share, touched by others only at the end), which matters where the
  // two cores sit far apart (a fork/join there costs twice as much). The shares are equal in
  // items, or, given `cost_before(i)` (the cost of items [0, i), called at multiples of grain
  // and at n), as equal in cost as whole grains allow.
  void parallel_ranges(int64_t n, int64_t grain, int64_t take,
                       const std::function<void(int64_t, int64_t)>& fn,
                       const std::function<int64_t(int64_t)>& cost_before = {});

 private:
  void worker_loop();
  // Claims and runs tasks of call `generation` until none are left.
  void run_tasks(uint32_t generation);

  std::vector<std::thread> workers_;
  // What a call publishes, what its tasks are claimed from, and what the caller waits on each
  // sit on their own cache line: sharing one, a worker's claim or a finished task took the line
  // from the caller polling it (and back), each a transfer that costs about twice as much where
  // the two cores sit far apart.
  //
  // Set by parallel_for before it publishes `next_task_`; read only by holders of a task.
  alignas(64) const std::function<void(int64_t)>* fn_ = nullptr;
  // Atomic because a worker late for the previous call may still compare against it.
  std::atomic<int64_t> n_tasks_{0};
  std::atomic<uint32_t> generation_{0};
  std::atomic<bool> stop_{false};
  // (generation << 32) | next task index: a worker that wakes late for an old call cannot claim
  // a task of the next one.
  alignas(64) std::atomic<uint64_t> next_task_{0};
  alignas(64) std::atomic<int64_t> done_tasks_{0};
  // Sleeping workers wait here (GCC 12's std::atomic::wait can lose wake-ups).
  alignas(64) std::mutex mutex_;
  std::condition_variable wake_;
};

}  // namespace rwkv
