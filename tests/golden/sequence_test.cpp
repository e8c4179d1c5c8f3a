// Sequence mode, chunking and batches against RNN mode, for every real model we have: logits at
// every position and the final state must agree for T = 1, 2, 63, 64, 65 (max |diff| <= 1e-4)
// and T = 1000 (<= 1e-3), for chunk sizes 1, 16 and larger than T.
#include <gtest/gtest.h>

#include <random>

#include "test_util.h"

namespace rwkv::test {
namespace {

std::vector<std::string> all_models() {
  std::vector<std::string> out;
  const auto root = shared_dir();
  if (root.empty()) return {"(no shared test data)"};
  for (const auto& dir : {root / "testdata/tiny-rwkv", root / "testdata/reference/models"})
    for (const auto& e : std::filesystem::directory_iterator(dir)) {
      const std::string name = e.path().filename().string();
      if (name.rfind("tiny-rwkv-", 0) == 0 || e.path().extension() == ".pth")
        out.push_back(std::filesystem::relative(e.path(), root).string());
    }
  std::sort(out.begin(), out.end());
  return out;
}

std::vector<int> random_tokens(int n, int vocab, unsigned seed) {
  std::mt19937 rng(seed);
  std::vector<int> t(static_cast<size_t>(n));
  for (int& x : t) x = int(rng() % unsigned(vocab));
  return t;
}

class SequenceMode : public ::testing::TestWithParam<std::string> {};

TEST_P(SequenceMode, EqualsRnnModeForEveryLengthAndChunk) {
  RWKV_REQUIRE_SHARED();
  auto model = Model::load((shared_dir() / GetParam()).string());
  const size_t V = size_t(model->info().n_vocab);
  const std::vector<int> tokens = random_tokens(1000, int(V), 7);
  // RNN mode once over 1000 tokens, keeping the state after each length under test.
  const std::vector<int> lengths = {1, 2, 63, 64, 65, 1000};
  std::vector<float> rnn_logits;
  std::map<int, std::vector<float>> rnn_states;
  {
    std::vector<float> state(model->state_size()), logits(V);
    model->init_state(state);
    Scratch scratch;
    for (size_t i = 0; i < tokens.size(); ++i) {
      model->forward(tokens[i], state, logits, scratch);
      rnn_logits.insert(rnn_logits.end(), logits.begin(), logits.end());
      if (std::count(lengths.begin(), lengths.end(), int(i + 1))) rnn_states[int(i + 1)] = state;
    }
  }
  Scratch scratch;
  for (int T : lengths) {
    const double tol = T == 1000 ? 1e-3 : 1e-4;
    for (int64_t chunk : {int64_t(1), int64_t(16), int64_t(T + 1)}) {
      std::vector<float> state(model->state_size()), logits(V * size_t(T));
      model->init_state(state);
      model->forward_seq(std::span(tokens).first(size_t(T)), state, logits, true, scratch,
                         {.chunk = chunk});
      EXPECT_LE(diff(logits.data(), rnn_logits.data(), logits.size()).max_abs, tol)
          << "T=" << T << " chunk=" << chunk;
      EXPECT_LE(diff(state.data(), rnn_states[T].data(), state.size()).max_abs, tol)
          << "T=" << T << " chunk=" << chunk;
      // Asking only for the last logits gives that row.
      std::vector<float> last(V);
      model->init_state(state);
      model->forward_seq(std::span(tokens).first(size_t(T)), state, last, false, scratch,
                         {.chunk = chunk});
      EXPECT_LE(diff(last.data(), logits.data() + (size_t(T) - 1) * V, V).max_abs, 0.0);
    }
  }
}

// Feeding 0..n in one call equals 0..k then k+1..n with the state carried in between.
TEST_P(SequenceMode, SplitCallsCarryTheState) {
  RWKV_REQUIRE_SHARED();
  auto model = Model::load((shared_dir() / GetParam()).string());
  const size_t V = size_t(model->info().n_vocab);
  const std::vector<int> tokens = random_tokens(100, int(V), 11);
  Scratch scratch;
  std::vector<float> whole(model->state_size()), whole_logits(V);
  model->init_state(whole);
  model->forward_seq(tokens, whole, whole_logits, false, scratch);
  for (size_t k : {size_t(1), size_t(37), size_t(99)}) {
    std::vector<float> state(model->state_size()), logits(V);
    model->init_state(state);
    model->forward_seq(std::span(tokens).first(k), state, logits, false, scratch, {.chunk = 16});
    model->forward_seq(std::span(tokens).subspan(k), state, logits, false, scratch);
    EXPECT_LE(diff(logits.data(), whole_logits.data(), V).max_abs, 1e-4) << "k=" << k;
    EXPECT_LE(diff(state.data(), whole.data(), state.size()).max_abs, 1e-4) << "k=" << k;
  }
}

// A batch of sequences of different lengths gives each what it gives alone.
TEST_P(SequenceMode, BatchEqualsEachSequenceAlone) {
  RWKV_REQUIRE_SHARED();
  auto model = Model::load((shared_dir() / GetParam()).string());
  const size_t V = size_t(model->info().n_vocab);
  const std::vector<int> lengths = {1, 7, 64, 130};
  std::vector<std::vector<int>> tokens;
  std::vector<std::vector<float>> states, logits;
  for (size_t b = 0; b < lengths.size(); ++b) {
    tokens.push_back(random_tokens(lengths[b], int(V), unsigned(20 + b)));
    states.emplace_back(model->state_size());
    model->init_state(states.back());
    // Even-numbered sequences ask for every position's logits, odd ones for the last only.
    logits.emplace_back(b % 2 == 0 ? V * size_t(lengths[b]) : V);
  }
  // Sequence 2 starts from a non-initial state, as a server's would.
  Scratch scratch;
  std::vector<float> warm(V);
  model->forward_seq(random_tokens(5, int(V), 99), states[2], warm, false, scratch);
  const std::vector<std::vector<float>> initial = states;
  std::vector<Sequence> batch;
  for (size_t b = 0; b < lengths.size(); ++b)
    batch.push_back({tokens[b], states[b], logits[b], /*all_logits=*/b % 2 == 0});
  model->forward_batch(batch, scratch, {.chunk = 16});
  for (size_t b = 0; b < lengths.size(); ++b) {
    std::vector<float> state = initial[b], alone(batch[b].logits.size());
    model->forward_seq(tokens[b], state, alone, batch[b].all_logits, scratch);
    EXPECT_LE(diff(alone.data(), batch[b].logits.data(), alone.size()).max_abs, 1e-5) << b;
    EXPECT_LE(diff(state.data(), states[b].data(), state.size()).max_abs, 1e-5) << b;
  }
}

INSTANTIATE_TEST_SUITE_P(All, SequenceMode, ::testing::ValuesIn(all_models()),
                         [](const auto& info) {
                           std::string s = std::filesystem::path(info.param).stem().string();
                           for (char& ch : s)
                             if (!std::isalnum(static_cast<unsigned char>(ch))) ch = '_';
                           return s;
                         });

TEST(SequenceModeErrors, BadRequestsChangeNothing) {
  RWKV_REQUIRE_SHARED();
  auto model =
      Model::load((shared_dir() / "testdata/tiny-rwkv/tiny-rwkv-7v0-834K-FP32.bin").string());
  std::vector<float> state(model->state_size()), logits(256);
  model->init_state(state);
  const std::vector<float> before = state;
  Scratch scratch;
  const std::vector<int> bad = {1, 2, 300};
  EXPECT_THROW(model->forward_seq(bad, state, logits, false, scratch), Error);
  const std::vector<int> good = {1, 2, 3};
  EXPECT_THROW(model->forward_seq(good, state, logits, true, scratch), Error);  // needs 3 x 256
  EXPECT_THROW(model->forward_seq({}, state, logits, false, scratch), Error);
  std::vector<float> short_state(10);
  EXPECT_THROW(model->forward_seq(good, short_state, logits, false, scratch), Error);
  EXPECT_EQ(state, before);
}

}  // namespace
}  // namespace rwkv::test
