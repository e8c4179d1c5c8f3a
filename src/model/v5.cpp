// RWKV-5 "Eagle": matrix-valued state per head with a static decay. Covers all three layouts the
// official code distinguishes: 5.0 (no gate, per-head decay), 5.1 (gate, per-head decay) and 5.2
// (gate, per-channel decay `time_decay` (H, N) and bonus `time_faaaa`).
// Follows BlinkDL/ChatRWKV rwkv_pip_package/src/rwkv/model.py and RWKV_v5_demo.py.
//
// State per layer, 2C + H*N*N floats: att_xx (C), att_kv (H, N, N) with S[h][i][j] accumulating
// k_i * v_j, ffn_xx (C).
#include <algorithm>
#include <cmath>

#include "kernels/activations.h"
#include "kernels/kernels.h"
#include "kernels/wkv.h"
#include "model/model_base.h"
#include "model/registry.h"
#include "model/weights.h"

namespace rwkv {

namespace {

struct V5Layer {
  Norm ln1, ln2;
  std::vector<float> att_time_mix_k, att_time_mix_v, att_time_mix_r, att_time_mix_g;
  std::vector<float> att_w;  // exp(-exp(time_decay)), broadcast to every channel
  std::vector<float> att_u;  // exp(time_first) or time_faaaa, broadcast to every channel
  Tensor att_key, att_value, att_receptance, att_output;  // (C, C)
  Tensor att_gate;                                        // (C, C), absent in 5.0
  Norm ln_x;
  std::vector<float> ffn_time_mix_k, ffn_time_mix_r;
  ChannelMix ffn;
};

// Reads a per-head (H,) or per-channel (H, N) tensor as C per-channel values.
std::vector<float> per_channel(WeightLoader& w, const std::string& name, int64_t H, int64_t N) {
  const Tensor& t = w.map().at(name);
  std::vector<float> v =
      w.f32(name, t.numel() == H ? std::vector<int64_t>{H} : std::vector<int64_t>{H, N});
  if (int64_t(v.size()) == H * N) return v;
  std::vector<float> out(static_cast<size_t>(H * N));
  for (int64_t h = 0; h < H; ++h) std::fill_n(out.begin() + h * N, N, v[size_t(h)]);
  return out;
}

class ModelV5 final : public MatrixStateModel {
 public:
  ModelV5(std::shared_ptr<TensorMap> map, ModelInfo info)
      : MatrixStateModel(std::move(map), std::move(info)) {
    const int64_t C = info_.n_embd;
    WeightLoader w(*map_, info_);
    io_.load(w, info_.n_vocab, C);
    const Tensor& decay0 = map_->at("blocks.0.att.time_decay");
    const int64_t H = decay0.shape.empty() ? 1 : decay0.shape[0];
    if (H <= 0 || C % H != 0)
      throw Error(map_->path + ": time_decay shape " + shape_string(decay0.shape) +
                  " does not divide n_embd=" + std::to_string(C) + " into heads");
    const int64_t N = C / H;
    info_.n_head = int(H);
    info_.head_size = int(N);
    info_.ffn_dim = int(map_->at("blocks.0.ffn.key.weight").shape[0]);
    const int64_t F = info_.ffn_dim;
    gated_ = info_.version != "5.0";
    for (int i = 0; i < info_.n_layer; ++i) {
      const std::string p = layer_prefix(i);
      V5Layer L;
      L.ln1.load(w, p + "ln1", C);
      L.ln2.load(w, p + "ln2", C);
      L.att_time_mix_k = w.f32(p + "att.time_mix_k", {C});
      L.att_time_mix_v = w.f32(p + "att.time_mix_v", {C});
      L.att_time_mix_r = w.f32(p + "att.time_mix_r", {C});
      L.att_w = per_channel(w, p + "att.time_decay", H, N);
      for (float& x : L.att_w) x = std::exp(-std::exp(x));
      if (w.has(p + "att.time_first")) {
        // The first layout stores the bonus as its logarithm.
        L.att_u = per_channel(w, p + "att.time_first", H, N);
        for (float& x : L.att_u) x = std::exp(x);
      } else {
        L.att_u = per_channel(w, p + "att.time_faaaa", H, N);
      }
      L.att_key = w.matrix(p + "att.key.weight", {C, C});
      L.att_value = w.matrix(p + "att.value.weight", {C, C});
      L.att_receptance = w.matrix(p + "att.receptance.weight", {C, C});
      L.att_output = w.matrix(p + "att.output.weight", {C, C});
      if (gated_) {
        L.att_time_mix_g = w.f32(p + "att.time_mix_g", {C});
        L.att_gate = w.matrix(p + "att.gate.weight", {C, C});
      }
      L.ln_x.load(w, p + "att.ln_x", C);
      L.ffn_time_mix_k = w.f32(p + "ffn.time_mix_k", {C});
      L.ffn_time_mix_r = w.f32(p + "ffn.time_mix_r", {C});
      L.ffn.load(w, p + "ffn.", C, F);
      layers_.push_back(std::move(L));
    }
    finish_loading(w);
  }

 protected:
  void run_layers(float* x, int64_t T, std::span<const Segment> segments, Scratch& scratch,
                  ThreadPool* pool) const override {
    const int64_t C = info_.n_embd, H = info_.n_head, N = info_.head_size;
    float* xx = scratch.get(size_t(T * (14 * C + info_.ffn_dim)), 1);
    float* prev = xx + T * C;
    float* xk = prev + T * C;
    float* xv = xk + T * C;
    float* xr = xv + T * C;
    float* xg = xr + T * C;
    float* r = xg + T * C;
    float* k = r + T * C;
    float* v = k + T * C;
    float* g = v + T * C;
    float* y = g + T * C;
    float* tmp = y + T * C;  // T x (2C + F)
    const size_t layer_size = size_t(2 * C + C * N);
    for (int i = 0; i < info_.n_layer; ++i) {
      const V5Layer& L = layers_[size_t(i)];
      const size_t att_xx = size_t(i) * layer_size, att_kv = att_xx + C, ffn_xx = att_kv + C * N;

      L.ln1.layer_norm(x, T, C, xx, pool);
      token_shift(xx, C, segments, att_xx, prev);
      const MixTarget att_mix[] = {{L.att_time_mix_k, xk},
                                   {L.att_time_mix_v, xv},
                                   {L.att_time_mix_r, xr},
                                   {L.att_time_mix_g, xg}};
      time_mix(xx, prev, T, C, std::span(att_mix, gated_ ? 4 : 3), pool);
      const kernels::LinearJob rkvg[] = {{&L.att_receptance, xr, r},
                                         {&L.att_key, xk, k},
                                         {&L.att_value, xv, v},
                                         {&L.att_gate, xg, g}};
      kernels::products(std::span(rkvg).first(gated_ ? 4 : 3), {}, T, pool);
      for (const Segment& s : segments) {
        const int64_t o = s.begin * C;
        kernels::wkv5(r + o, k + o, v + o, L.att_w.data(), 0, L.att_u.data(), s.len, H, N,
                      s.state + att_kv, y + o, pool);
      }
      for_token_rows(T, pool, [&](int64_t t0, int64_t t1) {
        L.ln_x.group_norm(y + t0 * C, t1 - t0, H, N, info_.ln_x_eps, y + t0 * C);
        if (gated_) {
          kernels::silu_of(g + t0 * C, g + t0 * C, (t1 - t0) * C);
          for (int64_t j = t0 * C; j < t1 * C; ++j) y[j] *= g[j];
        }
      });
      kernels::linear(L.att_output, y, T, v, pool);
      L.ln2.add_then_layer_norm(x, v, T, C, xx, pool);
      token_shift(xx, C, segments, ffn_xx, prev);
      const MixTarget ffn_mix[] = {{L.ffn_time_mix_k, xk}, {L.ffn_time_mix_r, xr}};
      time_mix(xx, prev, T, C, ffn_mix, pool);
      L.ffn.add_to(xk, xr, T, tmp, x, pool);
    }
  }

 private:
  std::vector<V5Layer> layers_;
  bool gated_ = true;
};

}  // namespace

std::unique_ptr<Model> build_v5(std::shared_ptr<TensorMap> map, ModelInfo info) {
  return std::make_unique<ModelV5>(std::move(map), std::move(info));
}

}  // namespace rwkv
