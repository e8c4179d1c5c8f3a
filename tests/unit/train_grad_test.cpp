// Gradients of the training passes: against PyTorch autograd (float64) on an independent
// reference forward (tests/train/reference_grad.py, through `rwkv grad`), against finite
// differences, chunked against unchunked, and the training forward against the inference engine.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <random>

#include "io/readers.h"
#include "model/init.h"
#include "rwkv/model.h"
#include "test_util.h"
#include "train/train_model.h"

namespace rwkv::train {
namespace {

using test::temp_dir;

// A tiny model of `arch` in the official layout: 2 layers, 2 heads of 16, vocab 64.
TensorMap tiny_model(const std::string& arch, uint64_t seed = 7) {
  InitOptions o;
  o.arch = arch;
  o.n_embd = 32;
  o.n_layer = 2;
  o.n_vocab = 64;
  o.head_size = 16;
  o.ffn_dim = 64;
  o.seed = seed;
  return init_model(o);
}

std::vector<int> random_tokens(size_t n, int vocab, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<int> t(n);
  for (int& x : t) x = int(rng() % uint32_t(vocab));
  return t;
}

// Largest |a - b| over the tensor divided by the largest |b| (0/0 counts as 0).
double rel_err(const float* a, const float* b, size_t n) {
  double diff = 0, scale = 0;
  for (size_t i = 0; i < n; ++i) {
    diff = std::max(diff, std::abs(double(a[i]) - b[i]));
    scale = std::max(scale, std::abs(double(b[i])));
  }
  return scale > 0 ? diff / scale : diff;
}

bool have_torch() {
  return std::system("/usr/bin/python3 -c 'import torch, numpy' >/dev/null 2>&1") == 0;
}

class TrainGrad : public ::testing::TestWithParam<std::string> {};

TEST_P(TrainGrad, MatchesPyTorchAutograd) {
  if (!have_torch())
    GTEST_SKIP() << "SKIPPED: /usr/bin/python3 with torch and numpy not found (Debian: "
                    "apt-get install --no-install-recommends python3-torch python3-numpy)";
  const auto dir = temp_dir();
  const std::string model = (dir / "model.safetensors").string();
  write_safetensors(tiny_model(GetParam()), model);
  const std::vector<int> tokens = random_tokens(24, 64, 11);
  std::string ids;
  for (int t : tokens) ids += std::to_string(t) + " ";
  {
    std::ofstream f(dir / "tokens.txt");
    f << ids;
  }
  // Chunks of 5 tokens: the state and its gradient cross chunk boundaries.
  const std::string ours = (dir / "ours.safetensors").string();
  const std::string ref = (dir / "ref.safetensors").string();
  ASSERT_EQ(std::system((test::cli_path() + " grad " + model + " --tokens '" + ids +
                         "' --chunk 5 --threads 2 --out " + ours + " >/dev/null")
                            .c_str()),
            0);
  ASSERT_EQ(std::system(("/usr/bin/python3 " RWKV_SOURCE_DIR "/tests/train/reference_grad.py " +
                         model + " " + (dir / "tokens.txt").string() + " " + ref)
                            .c_str()),
            0);
  const TensorMap a = read_tensor_map(ours), b = read_tensor_map(ref);
  ASSERT_EQ(a.names(), b.names());  // loss, then every tensor of the model in file order
  double worst = 0;
  std::string worst_name;
  for (const std::string& name : b.names()) {
    const std::vector<float> x = to_f32(a.at(name)), y = to_f32(b.at(name));
    ASSERT_EQ(a.at(name).shape, b.at(name).shape) << name;
    const double e = rel_err(x.data(), y.data(), y.size());
    EXPECT_LE(e, 1e-4) << name;
    if (e > worst) worst = e, worst_name = name;
  }
  std::printf("[ RWKV-%s ] worst gradient error vs PyTorch float64: %.2e (%s)\n",
              GetParam().c_str(), worst, worst_name.c_str());
}

TEST_P(TrainGrad, ChunkedEqualsUnchunked) {
  const ParamSet p = ParamSet::from_map(tiny_model(GetParam()));
  auto model = TrainModel::create(p);
  const int64_t B = 2, T = 17;
  const std::vector<int> tok = random_tokens(size_t(B * (T + 1)), 64, 5);
  std::vector<int> in, out;
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < T; ++t) {
      in.push_back(tok[size_t(b * (T + 1) + t)]);
      out.push_back(tok[size_t(b * (T + 1) + t + 1)]);
    }
  const Batch batch{in.data(), out.data(), B, T};
  std::vector<float> full(p.size(), 0.0f), ds_full(model->state_size(), 0.0f);
  std::vector<float> s0(model->state_size());
  std::mt19937 rng(3);
  for (float& s : s0) s = float(int(rng() % 200) - 100) / 400.0f;
  ThreadPool pool(2);
  const double loss = model->forward_backward(p.data.data(), batch, T, s0.data(), full.data(),
                                              ds_full.data(), &pool);
  for (int64_t chunk : {1, 4, 16}) {
    std::vector<float> g(p.size(), 0.0f), ds(model->state_size(), 0.0f);
    const double l =
        model->forward_backward(p.data.data(), batch, chunk, s0.data(), g.data(), ds.data(), &pool);
    EXPECT_NEAR(l, loss, 1e-6 * loss) << "chunk " << chunk;
    for (const ParamInfo& info : p.infos())
      EXPECT_LE(rel_err(&g[info.offset], &full[info.offset], info.numel), 1e-5)
          << info.name << " chunk " << chunk;
    EXPECT_LE(rel_err(ds.data(), ds_full.data(), ds.size()), 1e-5) << "state, chunk " << chunk;
  }
}

// (f(x + h) - f(x - h)) / 2h with x moved in place and put back.
template <typename F>
double central_difference(float& x, float h, const F& f) {
  const float x0 = x;
  x = x0 + h;
  const double up = f();
  x = x0 - h;
  const double down = f();
  x = x0;
  return (up - down) / (2 * double(h));
}

// Central differences in float32 with steps of 1e-2 on the element of each tensor with the
// largest gradient, and on the initial state.
TEST_P(TrainGrad, FiniteDifferences) {
  ParamSet p = ParamSet::from_map(tiny_model(GetParam()));
  auto model = TrainModel::create(p);
  const std::vector<int> tok = random_tokens(13, 64, 9);
  const Batch batch{tok.data(), tok.data() + 1, 1, 12};
  std::vector<float> s0(model->state_size(), 0.1f), ds(model->state_size(), 0.0f);
  std::vector<float> g(p.size(), 0.0f), scratch(p.size());
  model->forward_backward(p.data.data(), batch, 5, s0.data(), g.data(), ds.data(), nullptr);
  auto loss = [&] {
    return model->forward_backward(p.data.data(), batch, 5, s0.data(), scratch.data(), nullptr,
                                   nullptr);
  };
  const float h = 1e-2f;
  auto check = [&](float& x, double analytic, const std::string& what) {
    EXPECT_NEAR(central_difference(x, h, loss), analytic, 2e-2 * std::abs(analytic) + 3e-4) << what;
  };
  int checked = 0;
  for (const ParamInfo& info : p.infos()) {
    size_t best = info.offset;
    for (size_t i = info.offset; i < info.offset + info.numel; ++i)
      if (std::abs(g[i]) > std::abs(g[best])) best = i;
    if (g[best] == 0) continue;  // layer 0's v0/v1/v2 are unused
    check(p.data[best], g[best], info.name);
    ++checked;
  }
  EXPECT_GE(checked, 60);
  size_t best = 0;
  for (size_t i = 0; i < ds.size(); ++i)
    if (std::abs(ds[i]) > std::abs(ds[best])) best = i;
  check(s0[best], ds[best], "initial state");
}

// L2Wrap leaves the loss as it is and adds the gradient of coef / (2T) times the sum of the
// squared largest logits: checked against central differences of that sum (from the logits).
TEST_P(TrainGrad, L2WrapAddsTheGradientOfTheLargestLogits) {
  ParamSet p = ParamSet::from_map(tiny_model(GetParam()));
  auto model = TrainModel::create(p);
  const int64_t T = 12, V = model->n_vocab();
  const std::vector<int> tok = random_tokens(size_t(T + 1), 64, 4);
  const Batch batch{tok.data(), tok.data() + 1, 1, T};
  // Large, so that the term stands out of float32 rounding.
  const float coef = 1.0f;
  std::vector<float> plain(p.size(), 0.0f), wrapped(p.size(), 0.0f);
  const double loss =
      model->forward_backward(p.data.data(), batch, 5, nullptr, plain.data(), nullptr, nullptr);
  model->set_l2wrap(coef);
  EXPECT_EQ(
      model->forward_backward(p.data.data(), batch, 5, nullptr, wrapped.data(), nullptr, nullptr),
      loss);
  auto penalty = [&] {
    std::vector<float> logits(size_t(T * V));
    model->forward_logits(p.data.data(), tok.data(), 1, T, 5, logits.data(), nullptr);
    double sum = 0;
    for (int64_t t = 0; t < T; ++t) {
      const double top = *std::max_element(&logits[size_t(t * V)], &logits[size_t((t + 1) * V)]);
      sum += top * top;
    }
    return coef / (2.0 * double(T)) * sum;
  };
  const float h = 1e-2f;
  int checked = 0;
  for (const ParamInfo& info : p.infos()) {
    size_t best = info.offset;
    for (size_t i = info.offset; i < info.offset + info.numel; ++i)
      if (std::abs(wrapped[i] - plain[i]) > std::abs(wrapped[best] - plain[best])) best = i;
    const double added = double(wrapped[best]) - plain[best];
    if (added == 0) continue;  // layer 0's v0/v1/v2 are unused
    EXPECT_NEAR(central_difference(p.data[best], h, penalty), added, 2e-2 * std::abs(added) + 3e-4)
        << info.name;
    ++checked;
  }
  EXPECT_GE(checked, 60);
}

TEST_P(TrainGrad, ForwardMatchesInferenceEngine) {
  const auto dir = temp_dir();
  const std::string path = (dir / "model.safetensors").string();
  const TensorMap map = tiny_model(GetParam(), 21);
  write_safetensors(map, path);
  const ParamSet p = ParamSet::from_map(map);
  auto model = TrainModel::create(p);
  const std::vector<int> tokens = random_tokens(40, 64, 2);
  std::vector<float> ours(tokens.size() * 64);
  model->forward_logits(p.data.data(), tokens.data(), 1, int64_t(tokens.size()), 16, ours.data(),
                        nullptr);
  const test::RunResult ref = test::run_tokens(*Model::load(path), tokens);
  const test::DiffStats d = test::diff(ours.data(), ref.logits.data(), ours.size());
  EXPECT_LE(d.max_abs, 1e-4);
}

INSTANTIATE_TEST_SUITE_P(Versions, TrainGrad, ::testing::Values("7", "6"),
                         [](const auto& info) { return "v" + info.param; });

TEST(TrainGradCli, RejectsBadInput) {
  const auto dir = temp_dir();
  const std::string model = (dir / "m.safetensors").string();
  write_safetensors(tiny_model("7"), model);
  const std::string cli = test::cli_path() + " grad " + model + " --out " +
                          (dir / "g.safetensors").string() + " 2>/dev/null --tokens ";
  EXPECT_NE(std::system((cli + "'5'").c_str()), 0);      // one token: nothing to predict
  EXPECT_NE(std::system((cli + "'5 x 7'").c_str()), 0);  // not an id
  EXPECT_NE(std::system((cli + "'5 64'").c_str()), 0);   // outside the vocabulary
  InitOptions o;
  o.arch = "5";
  o.n_embd = 32;
  o.n_layer = 1;
  o.n_vocab = 16;
  o.head_size = 16;
  write_safetensors(init_model(o), model);  // RWKV-5: no training
  EXPECT_NE(std::system((cli + "'1 2 3'").c_str()), 0);
  EXPECT_FALSE(std::filesystem::exists(dir / "g.safetensors"));
}

}  // namespace
}  // namespace rwkv::train
