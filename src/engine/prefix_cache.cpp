#include "engine/prefix_cache.h"

#include <algorithm>

namespace rwkv {

namespace {

// Hashes of every prefix of `tokens`: out[i] covers tokens[0, i). A 64-bit mix per token; equal
// hashes are confirmed by comparing the tokens.
std::vector<uint64_t> prefix_hashes(uint64_t base, std::span<const int> tokens) {
  std::vector<uint64_t> out(tokens.size() + 1);
  uint64_t h = 0x9e3779b97f4a7c15ull ^ (base * 0xff51afd7ed558ccdull);
  out[0] = h;
  for (size_t i = 0; i < tokens.size(); ++i) {
    h ^= uint64_t(uint32_t(tokens[i])) + 0x9e3779b97f4a7c15ull + (h << 6) + (h >> 2);
    h *= 0xc4ceb9fe1a85ec53ull;
    out[i + 1] = h;
  }
  return out;
}

}  // namespace

std::optional<PrefixCache::Hit> PrefixCache::lookup(uint64_t base, std::span<const int> tokens) {
  const std::vector<uint64_t> hashes = prefix_hashes(base, tokens);
  std::lock_guard lock(mutex_);
  std::vector<size_t> lengths;
  for (const auto& [length, count] : lengths_)
    if (length >= 1 && length <= tokens.size()) lengths.push_back(length);
  std::sort(lengths.rbegin(), lengths.rend());
  for (size_t length : lengths) {
    auto [first, last] = by_hash_.equal_range(hashes[length]);
    for (auto it = first; it != last; ++it) {
      Entry& e = *it->second;
      if (e.base != base || e.tokens.size() != length ||
          !std::equal(e.tokens.begin(), e.tokens.end(), tokens.begin()))
        continue;
      lru_.splice(lru_.begin(), lru_, it->second);
      ++stats_.hits;
      return Hit{length, e.state, e.logits};
    }
  }
  ++stats_.misses;
  return std::nullopt;
}

void PrefixCache::insert(uint64_t base, std::span<const int> tokens, std::span<const float> state,
                         std::span<const float> logits) {
  if (tokens.empty()) return;
  const uint64_t hash = prefix_hashes(base, tokens).back();
  Entry entry{base, hash, {tokens.begin(), tokens.end()}, {state.begin(), state.end()},
              {logits.begin(), logits.end()}};
  const size_t bytes = entry.bytes();
  std::lock_guard lock(mutex_);
  auto [first, last] = by_hash_.equal_range(hash);
  for (auto it = first; it != last; ++it) {
    Entry& e = *it->second;
    if (e.base == base && std::equal(e.tokens.begin(), e.tokens.end(), tokens.begin(), tokens.end())) {
      // The same prefix gives the same state (the forward pass is deterministic): just refresh.
      lru_.splice(lru_.begin(), lru_, it->second);
      return;
    }
  }
  if (bytes > max_bytes_) return;
  evict_to(max_bytes_ - bytes);
  lru_.push_front(std::move(entry));
  by_hash_.emplace(hash, lru_.begin());
  ++lengths_[tokens.size()];
  stats_.bytes += bytes;
  ++stats_.entries;
}

void PrefixCache::evict_to(size_t budget) {
  while (stats_.bytes > budget && !lru_.empty()) {
    auto victim = std::prev(lru_.end());
    auto [first, last] = by_hash_.equal_range(victim->hash);
    for (auto it = first; it != last; ++it)
      if (it->second == victim) {
        by_hash_.erase(it);
        break;
      }
    if (--lengths_[victim->tokens.size()] == 0) lengths_.erase(victim->tokens.size());
    stats_.bytes -= victim->bytes();
    --stats_.entries;
    ++stats_.evictions;
    lru_.erase(victim);
  }
}

PrefixCache::Stats PrefixCache::stats() const {
  std::lock_guard lock(mutex_);
  return stats_;
}

}  // namespace rwkv
