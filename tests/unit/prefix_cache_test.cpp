// The prefix state cache: longest-prefix lookup, copies that never alias, LRU eviction within
// the byte budget, separate namespaces per starting state.
#include "engine/prefix_cache.h"

#include <gtest/gtest.h>

namespace rwkv {
namespace {

std::vector<float> filled(size_t n, float v) { return std::vector<float>(n, v); }

TEST(PrefixCache, FindsTheLongestCachedPrefix) {
  PrefixCache cache(1 << 20);
  cache.insert(0, std::vector<int>{1, 2}, filled(4, 2), filled(3, 20));
  cache.insert(0, std::vector<int>{1, 2, 3, 4}, filled(4, 4), filled(3, 40));
  cache.insert(0, std::vector<int>{1, 9, 9}, filled(4, 9), filled(3, 90));

  auto hit = cache.lookup(0, std::vector<int>{1, 2, 3, 4, 5, 6});
  ASSERT_TRUE(hit);
  EXPECT_EQ(hit->length, 4u);
  EXPECT_EQ(hit->state, filled(4, 4));
  EXPECT_EQ(hit->logits, filled(3, 40));

  hit = cache.lookup(0, std::vector<int>{1, 2, 3});  // {1,2,3,4} is longer than the prompt
  ASSERT_TRUE(hit);
  EXPECT_EQ(hit->length, 2u);
  EXPECT_EQ(hit->state, filled(4, 2));

  hit = cache.lookup(0, std::vector<int>{1, 2, 3, 4});  // the whole prompt
  ASSERT_TRUE(hit);
  EXPECT_EQ(hit->length, 4u);

  EXPECT_FALSE(cache.lookup(0, std::vector<int>{2, 1}));
  EXPECT_FALSE(cache.lookup(0, std::vector<int>{1}));
  EXPECT_EQ(cache.stats().hits, 3u);
  EXPECT_EQ(cache.stats().misses, 2u);
  EXPECT_EQ(cache.stats().entries, 3u);
}

TEST(PrefixCache, LookupsReturnIndependentCopies) {
  PrefixCache cache(1 << 20);
  cache.insert(0, std::vector<int>{5, 6}, filled(4, 1), filled(2, 1));
  auto a = cache.lookup(0, std::vector<int>{5, 6, 7});
  ASSERT_TRUE(a);
  a->state[0] = 123;  // a request running from the cached state
  a->logits[0] = 123;
  auto b = cache.lookup(0, std::vector<int>{5, 6, 7});
  ASSERT_TRUE(b);
  EXPECT_EQ(b->state, filled(4, 1));
  EXPECT_EQ(b->logits, filled(2, 1));
}

TEST(PrefixCache, StartingStatesAreSeparateNamespaces) {
  PrefixCache cache(1 << 20);
  cache.insert(1, std::vector<int>{1, 2, 3}, filled(4, 1), filled(2, 1));
  EXPECT_FALSE(cache.lookup(0, std::vector<int>{1, 2, 3}));
  EXPECT_FALSE(cache.lookup(2, std::vector<int>{1, 2, 3}));
  ASSERT_TRUE(cache.lookup(1, std::vector<int>{1, 2, 3}));
}

TEST(PrefixCache, EvictsTheLeastRecentlyUsedWithinTheBudget) {
  const size_t floats = 1000;  // ~8 KB per entry with the logits
  PrefixCache probe(1 << 20);
  probe.insert(0, std::vector<int>{1}, filled(floats, 0), filled(floats, 0));
  const size_t entry_bytes = probe.stats().bytes;
  ASSERT_GT(entry_bytes, 2 * floats * sizeof(float));

  PrefixCache cache(3 * entry_bytes + entry_bytes / 2);  // room for three
  cache.insert(0, std::vector<int>{1}, filled(floats, 1), filled(floats, 1));
  cache.insert(0, std::vector<int>{2}, filled(floats, 2), filled(floats, 2));
  cache.insert(0, std::vector<int>{3}, filled(floats, 3), filled(floats, 3));
  ASSERT_TRUE(cache.lookup(0, std::vector<int>{1}));  // 1 is now the most recent; 2 the least
  cache.insert(0, std::vector<int>{4}, filled(floats, 4), filled(floats, 4));

  EXPECT_EQ(cache.stats().entries, 3u);
  EXPECT_EQ(cache.stats().evictions, 1u);
  EXPECT_LE(cache.stats().bytes, 3 * entry_bytes + entry_bytes / 2);
  EXPECT_FALSE(cache.lookup(0, std::vector<int>{2}));
  EXPECT_TRUE(cache.lookup(0, std::vector<int>{1}));
  EXPECT_TRUE(cache.lookup(0, std::vector<int>{3}));
  EXPECT_TRUE(cache.lookup(0, std::vector<int>{4}));
}

TEST(PrefixCache, ReinsertingRefreshesWithoutDuplicating) {
  PrefixCache cache(1 << 20);
  cache.insert(0, std::vector<int>{1, 2}, filled(4, 1), filled(2, 1));
  const size_t bytes = cache.stats().bytes;
  cache.insert(0, std::vector<int>{1, 2}, filled(4, 1), filled(2, 1));
  EXPECT_EQ(cache.stats().entries, 1u);
  EXPECT_EQ(cache.stats().bytes, bytes);
}

TEST(PrefixCache, EntriesLargerThanTheBudgetAreNotStored) {
  PrefixCache cache(100);
  cache.insert(0, std::vector<int>{1}, filled(1000, 1), filled(10, 1));
  EXPECT_EQ(cache.stats().entries, 0u);
  EXPECT_EQ(cache.stats().bytes, 0u);
  EXPECT_FALSE(cache.lookup(0, std::vector<int>{1}));
}

}  // namespace
}  // namespace rwkv
