// Prefix state cache for a server: the recurrent state (and the logits of the last token) after
// a token prefix, so a request that starts with a cached prefix (the previous turn of a chat, a
// shared system prompt) only processes the rest. RWKV's state has a fixed size whatever the
// prefix length, so an entry costs the same for 10 tokens or 10 000.
//
// Entries are keyed by (base, tokens), where `base` names the state the prefix started from (0 =
// the model's initial state, others for state-tuned states). Lookups return copies, so a cached
// state is never shared mutably. Least recently used entries are evicted to stay within a byte
// budget. Thread-safe.
#pragma once

#include <cstddef>
#include <cstdint>
#include <list>
#include <mutex>
#include <optional>
#include <span>
#include <unordered_map>
#include <vector>

namespace rwkv {

class PrefixCache {
 public:
  explicit PrefixCache(size_t max_bytes) : max_bytes_(max_bytes) {}

  struct Hit {
    size_t length = 0;  // tokens of the prefix
    std::vector<float> state;
    std::vector<float> logits;  // after the prefix's last token
  };
  // The longest cached prefix of `tokens` (at least one token) started from `base`, copied out.
  std::optional<Hit> lookup(uint64_t base, std::span<const int> tokens);
  // Stores (copies) the state and logits after `tokens`; refreshes an existing entry. An entry
  // larger than the whole budget is not stored.
  void insert(uint64_t base, std::span<const int> tokens, std::span<const float> state,
              std::span<const float> logits);

  struct Stats {
    uint64_t hits = 0, misses = 0, evictions = 0;
    size_t entries = 0, bytes = 0;
  };
  Stats stats() const;

 private:
  struct Entry {
    uint64_t base;
    uint64_t hash;
    std::vector<int> tokens;
    std::vector<float> state, logits;
    size_t bytes() const {
      return sizeof(Entry) + tokens.size() * sizeof(int) + (state.size() + logits.size()) * sizeof(float);
    }
  };
  using Lru = std::list<Entry>;  // most recently used first

  void evict_to(size_t budget);

  size_t max_bytes_;
  mutable std::mutex mutex_;
  Lru lru_;
  std::unordered_multimap<uint64_t, Lru::iterator> by_hash_;
  // How many entries have each prefix length: lookups only hash the prompt at these lengths.
  std::unordered_map<size_t, size_t> lengths_;
  Stats stats_;
};

}  // namespace rwkv
