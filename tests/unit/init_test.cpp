// Random-weight models from model/init.h: every version loads with the requested dimensions and
// no warnings, runs to finite, varied logits, and the same options give the same bytes whatever
// the thread count.
#include "model/init.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <memory>

#include "model/registry.h"

namespace rwkv {
namespace {

InitOptions small(const std::string& arch) {
  InitOptions o;
  o.arch = arch;
  o.n_embd = 64;
  o.n_layer = 3;
  o.n_vocab = 300;
  o.head_size = 32;
  o.seed = 7;
  return o;
}

std::unique_ptr<Model> build(TensorMap map) {
  return build_model(std::make_shared<TensorMap>(std::move(map)), {});
}

TEST(Init, EveryVersionLoadsWithTheRequestedDims) {
  const std::pair<const char*, const char*> versions[] = {
      {"v4", "4"}, {"v5", "5.2"}, {"v6", "6.0"}, {"v7", "7.0"}};
  for (const auto& [arch, version] : versions) {
    InitOptions o = small(arch);
    auto model = build(init_model(o));
    const ModelInfo& info = model->info();
    EXPECT_EQ(info.version, version);
    EXPECT_TRUE(info.warnings.empty()) << arch << ": " << info.warnings.front();
    EXPECT_EQ(info.n_embd, 64);
    EXPECT_EQ(info.n_layer, 3);
    EXPECT_EQ(info.n_vocab, 300);
    EXPECT_EQ(info.ffn_dim, default_ffn_dim(arch, 64));
    if (std::string(arch) != "v4") {
      EXPECT_EQ(info.head_size, 32);
      EXPECT_EQ(info.n_head, 2);
    }

    // Finite logits that differ between tokens and positions, and a finite state.
    std::vector<float> state(model->state_size()), logits(300);
    model->init_state(state);
    Scratch scratch;
    double sum = 0, sum2 = 0;
    for (int t : {1, 200, 3, 299, 0, 42}) {
      model->forward(t, state, logits, scratch);
      for (float v : logits) {
        ASSERT_TRUE(std::isfinite(v)) << arch;
        sum += v;
        sum2 += double(v) * v;
      }
    }
    for (float v : state) ASSERT_TRUE(std::isfinite(v) || v == -1e30f) << arch;
    const double n = 6 * 300, sd = std::sqrt(sum2 / n - (sum / n) * (sum / n));
    EXPECT_GT(sd, 1.0) << arch;  // the head is scaled for logits of about 4 sd
    EXPECT_LT(sd, 20.0) << arch;
  }
}

TEST(Init, SameSeedSameBytesWhateverTheThreads) {
  for (const char* arch : {"v4", "v5", "v6", "v7"}) {
    InitOptions o = small(arch);
    const TensorMap a = init_model(o);
    ThreadPool pool(3);
    o.pool = &pool;
    const TensorMap b = init_model(o);
    o.seed = 8;
    const TensorMap c = init_model(o);
    ASSERT_EQ(a.names(), b.names());
    bool differs = false;
    for (const std::string& name : a.names()) {
      const Tensor &ta = a.at(name), &tb = b.at(name), &tc = c.at(name);
      ASSERT_EQ(ta.nbytes, tb.nbytes);
      ASSERT_EQ(std::memcmp(ta.data, tb.data, ta.nbytes), 0) << arch << " " << name;
      differs |= std::memcmp(ta.data, tc.data, ta.nbytes) != 0;
    }
    EXPECT_TRUE(differs) << arch << ": another seed gave the same weights";
  }
}

// Matrices are N(0, gain / sqrt(fan_in)): check the statistics of a large one.
TEST(Init, MatricesAreGaussianWithTheFanInScale) {
  InitOptions o = small("v7");
  o.n_embd = 512;
  o.n_layer = 1;
  const TensorMap map = init_model(o);
  const Tensor& t = map.at("blocks.0.ffn.key.weight");  // (2048, 512), fan_in 512
  const float* w = reinterpret_cast<const float*>(t.data);
  const int64_t n = t.numel();
  double sum = 0, sum2 = 0, sum4 = 0;
  for (int64_t i = 0; i < n; ++i) {
    sum += w[i];
    sum2 += double(w[i]) * w[i];
  }
  const double mean = sum / n, var = sum2 / n - mean * mean;
  for (int64_t i = 0; i < n; ++i) sum4 += std::pow(w[i] - mean, 4);
  EXPECT_NEAR(mean, 0.0, 0.001);
  EXPECT_NEAR(std::sqrt(var), 1.0 / std::sqrt(512.0), 0.01 / std::sqrt(512.0));
  EXPECT_NEAR(sum4 / n / (var * var), 3.0, 0.05);  // Gaussian kurtosis
}

TEST(Init, HalfPrecisionTypes) {
  for (DType dtype : {DType::F16, DType::BF16}) {
    InitOptions o = small("v6");
    o.dtype = dtype;
    const TensorMap map = init_model(o);
    for (const std::string& name : map.names()) ASSERT_EQ(map.at(name).dtype, dtype) << name;
    auto model = build(init_model(o));
    EXPECT_TRUE(model->info().warnings.empty());
  }
}

TEST(Init, OfficialLoraRanksAndFfnWidths) {
  const LoraRanks r768 = default_lora_ranks("v7", 768), r2048 = default_lora_ranks("7", 2048);
  EXPECT_EQ(r768.w, 64);
  EXPECT_EQ(r768.a, 64);
  EXPECT_EQ(r768.v, 32);
  EXPECT_EQ(r768.g, 128);
  EXPECT_EQ(r2048.w, 96);
  EXPECT_EQ(r2048.a, 96);
  EXPECT_EQ(r2048.v, 64);
  EXPECT_EQ(r2048.g, 256);
  EXPECT_EQ(default_lora_ranks("v6", 2048).mix, 32);
  EXPECT_EQ(default_lora_ranks("v6", 2048).decay, 64);
  EXPECT_EQ(default_lora_ranks("v6", 4096).mix, 64);
  EXPECT_EQ(default_lora_ranks("v6", 4096).decay, 128);
  EXPECT_EQ(default_ffn_dim("v4", 768), 3072);
  EXPECT_EQ(default_ffn_dim("v5", 2048), 7168);
  EXPECT_EQ(default_ffn_dim("v6", 2560), 8960);
  EXPECT_EQ(default_ffn_dim("v7", 2048), 8192);

  InitOptions o = small("v7");
  o.n_embd = 768;
  o.n_layer = 2;
  o.n_vocab = 64;
  o.head_size = 64;
  auto model = build(init_model(o));
  const std::map<std::string, int> want = {{"w", 64}, {"a", 64}, {"v", 32}, {"g", 128}};
  EXPECT_EQ(model->info().lora, want);
}

TEST(Init, RejectsImpossibleDims) {
  InitOptions o = small("v8");
  EXPECT_THROW(init_model(o), Error);
  o = small("v5");
  o.head_size = 48;  // does not divide 64
  EXPECT_THROW(init_model(o), Error);
  o = small("v7");
  o.n_layer = 0;
  EXPECT_THROW(init_model(o), Error);
  o = small("v4");
  o.dtype = DType::Q8_0;
  EXPECT_THROW(init_model(o), Error);
}

}  // namespace
}  // namespace rwkv
