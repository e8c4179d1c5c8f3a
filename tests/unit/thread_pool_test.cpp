// The thread pool. This file is also built alone under ThreadSanitizer (CMakeLists.txt,
// ThreadPool.UnderThreadSanitizer), so it includes nothing but the pool.
#include "rwkv/thread_pool.h"

#include <gtest/gtest.h>

#include <atomic>
#include <vector>

namespace rwkv {
namespace {

// Many back-to-back calls of varying size: every task runs exactly once. Each task also bumps a
// plain int, which TSan reports if a task ran twice at once or without a happens-before edge to
// the caller.
TEST(ThreadPool, RunsEveryTaskOnceAcrossManyCalls) {
  for (int threads : {1, 2, 4}) {
    ThreadPool pool(threads);
    EXPECT_EQ(pool.size(), threads);
    for (int call = 0; call < 20000; ++call) {
      const int64_t n = 1 + call % 37;
      std::vector<std::atomic<int>> hits(static_cast<size_t>(n));
      std::vector<int> runs(static_cast<size_t>(n));
      pool.parallel_for(n, [&](int64_t i) {
        hits[size_t(i)].fetch_add(1);
        runs[size_t(i)] += 1;
      });
      for (int64_t i = 0; i < n; ++i) {
        ASSERT_EQ(hits[size_t(i)].load(), 1) << call;
        ASSERT_EQ(runs[size_t(i)], 1) << call;
      }
    }
  }
}

}  // namespace
}  // namespace rwkv
