// RWKV-4: per-channel exponential decay with the numerically stable (aa, bb, pp) WKV.
// Follows the official `rwkv` pip package (BlinkDL/ChatRWKV, rwkv_pip_package/src/rwkv/model.py)
// and RWKV_in_150_lines.py.
//
// State per layer, 5 x C floats: att_xx, aa, bb, pp, ffn_xx. att_xx/ffn_xx are the previous
// token's ln1/ln2 outputs; aa, bb, pp are numerator, denominator and running max exponent.
#include <algorithm>
#include <cmath>

#include "kernels/kernels.h"
#include "model/model_base.h"
#include "model/registry.h"
#include "model/weights.h"

namespace rwkv {

namespace {

struct V4Layer {
  Norm ln1, ln2;
  std::vector<float> att_time_mix_k, att_time_mix_v, att_time_mix_r;
  std::vector<float> att_w;                               // -exp(time_decay)
  std::vector<float> att_u;                               // time_first as stored
  Tensor att_key, att_value, att_receptance, att_output;  // (C, C)
  std::vector<float> ffn_time_mix_k, ffn_time_mix_r;
  ChannelMix ffn;
};

class ModelV4 final : public ModelBase {
 public:
  ModelV4(std::shared_ptr<TensorMap> map, ModelInfo info)
      : ModelBase(std::move(map), std::move(info)) {
    const int64_t C = info_.n_embd;
    WeightLoader w(*map_, info_);
    io_.load(w, info_.n_vocab, C);
    info_.ffn_dim = int(map_->at("blocks.0.ffn.key.weight").shape[0]);
    const int64_t F = info_.ffn_dim;
    for (int i = 0; i < info_.n_layer; ++i) {
      const std::string p = layer_prefix(i);
      V4Layer L;
      L.ln1.load(w, p + "ln1", C);
      L.ln2.load(w, p + "ln2", C);
      L.att_time_mix_k = w.f32(p + "att.time_mix_k", {C});
      L.att_time_mix_v = w.f32(p + "att.time_mix_v", {C});
      L.att_time_mix_r = w.f32(p + "att.time_mix_r", {C});
      L.att_w = w.f32(p + "att.time_decay", {C});
      for (float& x : L.att_w) x = -std::exp(x);
      L.att_u = w.f32(p + "att.time_first", {C});
      L.att_key = w.matrix(p + "att.key.weight", {C, C});
      L.att_value = w.matrix(p + "att.value.weight", {C, C});
      L.att_receptance = w.matrix(p + "att.receptance.weight", {C, C});
      L.att_output = w.matrix(p + "att.output.weight", {C, C});
      L.ffn_time_mix_k = w.f32(p + "ffn.time_mix_k", {C});
      L.ffn_time_mix_r = w.f32(p + "ffn.time_mix_r", {C});
      L.ffn.load(w, p + "ffn.", C, F);
      layers_.push_back(std::move(L));
    }
    finish_loading(w);
  }

  size_t state_size() const override { return size_t(info_.n_layer) * 5 * info_.n_embd; }

  void init_state(std::span<float> state) const override {
    const size_t C = info_.n_embd;
    std::fill(state.begin(), state.end(), 0.0f);
    for (int i = 0; i < info_.n_layer; ++i)
      std::fill_n(state.begin() + i * 5 * C + 3 * C, C, -1e30f);
  }

 protected:
  void run_layers(float* x, int64_t T, std::span<const Segment> segments, Scratch& scratch,
                  ThreadPool* pool) const override {
    const int64_t C = info_.n_embd, F = info_.ffn_dim;
    float* xx = scratch.get(size_t(T * (10 * C + F)), 1);
    float* prev = xx + T * C;
    float* xk = prev + T * C;
    float* xv = xk + T * C;
    float* xr = xv + T * C;
    float* r = xr + T * C;
    float* k = r + T * C;
    float* v = k + T * C;
    float* tmp = v + T * C;  // T x (2C + F) for the channel mix
    for (int i = 0; i < info_.n_layer; ++i) {
      const V4Layer& L = layers_[size_t(i)];
      const size_t base = size_t(i) * 5 * C;  // att_xx, aa, bb, pp, ffn_xx

      L.ln1.layer_norm(x, T, C, xx, pool);
      token_shift(xx, C, segments, base, prev);
      const MixTarget att_mix[] = {
          {L.att_time_mix_k, xk}, {L.att_time_mix_v, xv}, {L.att_time_mix_r, xr}};
      time_mix(xx, prev, T, C, att_mix, pool);
      const kernels::LinearJob rkv[] = {
          {&L.att_receptance, xr, r}, {&L.att_key, xk, k}, {&L.att_value, xv, v}};
      kernels::products(rkv, {}, T, pool);
      for (const Segment& s : segments) {
        float* aa = s.state + base + C;
        float* bb = aa + C;
        float* pp = bb + C;
        for (int64_t t = s.begin; t < s.begin + s.len; ++t) {
          for (int64_t c = 0; c < C; ++c) {
            const float kt = k[t * C + c], vt = v[t * C + c];
            float ww = L.att_u[c] + kt;
            float p = std::max(pp[c], ww);
            float e1 = std::exp(pp[c] - p), e2 = std::exp(ww - p);
            const float wkv = (e1 * aa[c] + e2 * vt) / (e1 * bb[c] + e2);
            ww = L.att_w[c] + pp[c];
            p = std::max(ww, kt);
            e1 = std::exp(ww - p);
            e2 = std::exp(kt - p);
            aa[c] = e1 * aa[c] + e2 * vt;
            bb[c] = e1 * bb[c] + e2;
            pp[c] = p;
            xr[t * C + c] = kernels::sigmoid(r[t * C + c]) * wkv;
          }
        }
      }
      kernels::linear(L.att_output, xr, T, v, pool);
      L.ln2.add_then_layer_norm(x, v, T, C, xx, pool);
      token_shift(xx, C, segments, base + 4 * C, prev);
      const MixTarget ffn_mix[] = {{L.ffn_time_mix_k, xk}, {L.ffn_time_mix_r, xr}};
      time_mix(xx, prev, T, C, ffn_mix, pool);
      L.ffn.add_to(xk, xr, T, tmp, x, pool);
    }
  }

 private:
  std::vector<V4Layer> layers_;
};

}  // namespace

std::unique_ptr<Model> build_v4(std::shared_ptr<TensorMap> map, ModelInfo info) {
  return std::make_unique<ModelV4>(std::move(map), std::move(info));
}

}  // namespace rwkv
