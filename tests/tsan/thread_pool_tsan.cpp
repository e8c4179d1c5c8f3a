// The thread pool under ThreadSanitizer: many back-to-back calls of varying size, each task
// recording itself in an atomic and in a plain int. TSan reports (exit code 66) any task that
// runs twice concurrently or without a happens-before edge to the caller, or any use of a call's
// state after it returned; the counts catch a task run twice or never.
#include <atomic>
#include <cstdio>
#include <vector>

#include "rwkv/thread_pool.h"

int main() {
  int wrong = 0;
  for (int threads : {2, 4}) {
    rwkv::ThreadPool pool(threads);
    for (int call = 0; call < 50000; ++call) {
      const int64_t n = 1 + call % 37;
      std::vector<std::atomic<int>> hits(static_cast<size_t>(n));
      std::vector<int> runs(static_cast<size_t>(n));
      pool.parallel_for(n, [&](int64_t i) {
        hits[size_t(i)].fetch_add(1);
        runs[size_t(i)] += 1;
      });
      for (int64_t i = 0; i < n; ++i) wrong += hits[size_t(i)].load() != 1 || runs[size_t(i)] != 1;
    }
  }
  std::printf("%d tasks ran other than once\n", wrong);
  return wrong == 0 ? 0 : 1;
}
