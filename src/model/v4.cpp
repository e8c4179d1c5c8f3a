// RWKV-4: per-channel exponential decay with the numerically stable (aa, bb, pp) WKV.
// Follows the official `rwkv` pip package (BlinkDL/ChatRWKV, rwkv_pip_package/src/rwkv/model.py)
// and RWKV_in_150_lines.py.
//
// State per layer, 5 x C floats: att_xx, aa, bb, pp, ffn_xx. att_xx/ffn_xx are the previous
// token's ln1/ln2 outputs; aa, bb, pp are numerator, denominator and running max exponent.
#include <algorithm>
#include <cmath>

#include "kernels/kernels.h"
#include "model/registry.h"
#include "model/weights.h"

namespace rwkv {

namespace {

struct V4Layer {
  std::vector<float> ln1_weight, ln1_bias, ln2_weight, ln2_bias;
  std::vector<float> att_time_mix_k, att_time_mix_v, att_time_mix_r;
  std::vector<float> att_w;  // -exp(time_decay)
  std::vector<float> att_u;  // time_first as stored
  Tensor att_key, att_value, att_receptance, att_output;  // (C, C)
  std::vector<float> ffn_time_mix_k, ffn_time_mix_r;
  ChannelMix ffn;
};

class ModelV4 final : public Model {
 public:
  ModelV4(std::shared_ptr<const TensorMap> map, ModelInfo info) : map_(std::move(map)) {
    info_ = std::move(info);
    const int64_t C = info_.n_embd;
    WeightLoader w(*map_);
    io_.load(w, info_.n_vocab, C);
    info_.ffn_dim = int(w.map().at("blocks.0.ffn.key.weight").shape[0]);
    const int64_t F = info_.ffn_dim;
    for (int i = 0; i < info_.n_layer; ++i) {
      const std::string p = layer_prefix(i);
      V4Layer L;
      L.ln1_weight = w.f32(p + "ln1.weight", {C});
      L.ln1_bias = w.f32(p + "ln1.bias", {C});
      L.ln2_weight = w.f32(p + "ln2.weight", {C});
      L.ln2_bias = w.f32(p + "ln2.bias", {C});
      L.att_time_mix_k = w.f32(p + "att.time_mix_k", {C});
      L.att_time_mix_v = w.f32(p + "att.time_mix_v", {C});
      L.att_time_mix_r = w.f32(p + "att.time_mix_r", {C});
      L.att_w = w.f32(p + "att.time_decay", {C});
      for (float& x : L.att_w) x = -std::exp(x);
      L.att_u = w.f32(p + "att.time_first", {C});
      L.att_key = w.tensor(p + "att.key.weight", {C, C});
      L.att_value = w.tensor(p + "att.value.weight", {C, C});
      L.att_receptance = w.tensor(p + "att.receptance.weight", {C, C});
      L.att_output = w.tensor(p + "att.output.weight", {C, C});
      L.ffn_time_mix_k = w.f32(p + "ffn.time_mix_k", {C});
      L.ffn_time_mix_r = w.f32(p + "ffn.time_mix_r", {C});
      L.ffn.load(w, p + "ffn.", C, F);
      layers_.push_back(std::move(L));
    }
    for (const std::string& name : w.unused()) info_.warnings.push_back("unused tensor " + name);
  }

  size_t state_size() const override { return size_t(info_.n_layer) * 5 * info_.n_embd; }

  void init_state(std::span<float> state) const override {
    const size_t C = info_.n_embd;
    std::fill(state.begin(), state.end(), 0.0f);
    for (int i = 0; i < info_.n_layer; ++i)
      std::fill_n(state.begin() + i * 5 * C + 3 * C, C, -1e30f);
  }

  void forward(int token, std::span<float> state, std::span<float> logits,
               Scratch& scratch) const override {
    check_buffers(state, logits);
    const int64_t C = info_.n_embd, F = info_.ffn_dim;
    float* x = scratch.get(size_t(10 * C + F));
    float* xx = x + C;
    float* xk = xx + C;
    float* xv = xk + C;
    float* xr = xv + C;
    float* r = xr + C;
    float* k = r + C;
    float* v = k + C;
    float* tmp = v + C;  // 2C + F for the channel mix
    io_.embed(token, x);
    for (int i = 0; i < info_.n_layer; ++i) {
      const V4Layer& L = layers_[size_t(i)];
      float* att_xx = state.data() + i * 5 * C;
      float* aa = att_xx + C;
      float* bb = aa + C;
      float* pp = bb + C;
      float* ffn_xx = pp + C;

      kernels::layer_norm(x, L.ln1_weight.data(), L.ln1_bias.data(), C, kLayerNormEps, xx);
      for (int64_t c = 0; c < C; ++c) {
        xk[c] = xx[c] * L.att_time_mix_k[c] + att_xx[c] * (1 - L.att_time_mix_k[c]);
        xv[c] = xx[c] * L.att_time_mix_v[c] + att_xx[c] * (1 - L.att_time_mix_v[c]);
        xr[c] = xx[c] * L.att_time_mix_r[c] + att_xx[c] * (1 - L.att_time_mix_r[c]);
        att_xx[c] = xx[c];
      }
      kernels::matvec(L.att_receptance, xr, r);
      kernels::matvec(L.att_key, xk, k);
      kernels::matvec(L.att_value, xv, v);
      for (int64_t c = 0; c < C; ++c) {
        float ww = L.att_u[c] + k[c];
        float p = std::max(pp[c], ww);
        float e1 = std::exp(pp[c] - p), e2 = std::exp(ww - p);
        const float wkv = (e1 * aa[c] + e2 * v[c]) / (e1 * bb[c] + e2);
        ww = L.att_w[c] + pp[c];
        p = std::max(ww, k[c]);
        e1 = std::exp(ww - p);
        e2 = std::exp(k[c] - p);
        aa[c] = e1 * aa[c] + e2 * v[c];
        bb[c] = e1 * bb[c] + e2;
        pp[c] = p;
        xr[c] = kernels::sigmoid(r[c]) * wkv;
      }
      kernels::matvec(L.att_output, xr, v);
      for (int64_t c = 0; c < C; ++c) x[c] += v[c];

      kernels::layer_norm(x, L.ln2_weight.data(), L.ln2_bias.data(), C, kLayerNormEps, xx);
      for (int64_t c = 0; c < C; ++c) {
        xk[c] = xx[c] * L.ffn_time_mix_k[c] + ffn_xx[c] * (1 - L.ffn_time_mix_k[c]);
        xr[c] = xx[c] * L.ffn_time_mix_r[c] + ffn_xx[c] * (1 - L.ffn_time_mix_r[c]);
        ffn_xx[c] = xx[c];
      }
      L.ffn.add_to(xk, xr, tmp, x);
    }
    io_.output(x, xx, logits.data());
  }

 private:
  std::shared_ptr<const TensorMap> map_;
  EmbeddingHead io_;
  std::vector<V4Layer> layers_;
};

}  // namespace

std::unique_ptr<Model> build_v4(std::shared_ptr<const TensorMap> map, ModelInfo info) {
  return std::make_unique<ModelV4>(std::move(map), std::move(info));
}

}  // namespace rwkv
