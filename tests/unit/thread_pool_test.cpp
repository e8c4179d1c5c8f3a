// The thread pool. This file is also built alone under ThreadSanitizer (CMakeLists.txt,
// ThreadPool.UnderThreadSanitizer), so it includes nothing but the pool.
#include "rwkv/thread_pool.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <thread>
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

// parallel_ranges: every item runs exactly once, in pieces that start on a multiple of the grain
// and hold at most `take` items (a stolen piece at most one grain).
TEST(ThreadPool, RangesCoverEveryItemOnceInGrainAlignedPieces) {
  for (int threads : {1, 2, 3}) {
    ThreadPool pool(threads);
    for (int call = 0; call < 3000; ++call) {
      const int64_t n = 1 + call % 97, grain = 1 + call % 5, take = grain * (1 + call % 3);
      std::vector<std::atomic<int>> hits(static_cast<size_t>(n));
      std::vector<int> runs(static_cast<size_t>(n));
      std::atomic<bool> bad_piece{false};
      pool.parallel_ranges(n, grain, take, [&](int64_t i0, int64_t i1) {
        // Alone (n <= grain or one thread), the whole range is one piece.
        if (i0 % grain != 0 || i1 <= i0 || i1 > n || (i1 - i0 > take && i1 - i0 < n))
          bad_piece = true;
        for (int64_t i = i0; i < i1; ++i) {
          hits[size_t(i)].fetch_add(1);
          runs[size_t(i)] += 1;
        }
      });
      ASSERT_FALSE(bad_piece) << threads << " threads, call " << call;
      for (int64_t i = 0; i < n; ++i) {
        ASSERT_EQ(hits[size_t(i)].load(), 1) << call;
        ASSERT_EQ(runs[size_t(i)], 1) << call;
      }
    }
  }
}

// A thread slowed down (here the caller, as if its core were busy with another process) ends up
// with fewer items: the other takes what is left of the slow one's share from the back.
TEST(ThreadPool, RangesMoveWorkAwayFromASlowThread) {
  ThreadPool pool(2);
  const std::thread::id caller = std::this_thread::get_id();
  std::atomic<int64_t> by_caller{0};
  pool.parallel_ranges(64, 1, 2, [&](int64_t i0, int64_t i1) {
    if (std::this_thread::get_id() != caller) return;
    by_caller += i1 - i0;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  });
  // Its own share is 32 items, 16 pieces of 2 ms: the worker finishes its share at once and
  // takes most of the caller's.
  EXPECT_LE(by_caller.load(), 16);
}

// Given costs, the shares are equal in cost: items 0-9 cost 100 each and 10-99 one each (1090
// in all), so with two threads the second share begins at item 6 (600 before it) and no piece
// crosses that boundary, whoever runs what.
TEST(ThreadPool, RangesSplitSharesByCost) {
  ThreadPool pool(2);
  const auto cost_before = [](int64_t i) {
    return 100 * std::min<int64_t>(i, 10) + std::max<int64_t>(i - 10, 0);
  };
  for (int call = 0; call < 200; ++call) {
    std::atomic<bool> starts_at_6{false}, crosses_6{false};
    pool.parallel_ranges(
        100, 1, 4,
        [&](int64_t i0, int64_t i1) {
          if (i0 == 6) starts_at_6 = true;
          if (i0 < 6 && i1 > 6) crosses_6 = true;
        },
        cost_before);
    ASSERT_TRUE(starts_at_6) << call;
    ASSERT_FALSE(crosses_6) << call;
  }
}

}  // namespace
}  // namespace rwkv
