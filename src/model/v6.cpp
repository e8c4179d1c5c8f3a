// RWKV-6 "Finch" (x060): RWKV-5.2's matrix state with data-dependent token shift (a LoRA per
// mixed input) and a per-token decay from its own LoRA.
// Follows BlinkDL/ChatRWKV rwkv_pip_package/src/rwkv/model.py and RWKV_v6_demo.py.
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

// The five token-shift branches, in the order of the rows of time_maa_w1's output.
enum Branch { kW, kK, kV, kR, kG, kBranches };

struct V6Layer {
  Norm ln1, ln2;
  std::vector<float> att_time_maa_x;
  std::vector<float> att_time_maa[kBranches];  // time_maa_w, _k, _v, _r, _g
  Tensor att_time_maa_w1;                      // (C, 5 * D_mix)
  Tensor att_time_maa_w2[kBranches];           // each (D_mix, C), slices of (5, D_mix, C)
  std::vector<float> att_time_decay;           // (C,)
  Tensor att_time_decay_w1;                    // (C, D_decay)
  Tensor att_time_decay_w2;                    // (D_decay, C)
  std::vector<float> att_u;                    // time_faaaa (H, N)
  Tensor att_key, att_value, att_receptance, att_output, att_gate;  // (C, C)
  Norm ln_x;
  std::vector<float> ffn_time_maa_k, ffn_time_maa_r;
  ChannelMix ffn;
};

class ModelV6 final : public MatrixStateModel {
 public:
  ModelV6(std::shared_ptr<TensorMap> map, ModelInfo info)
      : MatrixStateModel(std::move(map), std::move(info)) {
    const int64_t C = info_.n_embd;
    WeightLoader w(*map_, info_);
    io_.load(w, info_.n_vocab, C);
    const Tensor& faaaa = map_->at("blocks.0.att.time_faaaa");
    const Tensor& maa_w1 = map_->at("blocks.0.att.time_maa_w1");
    const Tensor& decay_w1 = map_->at("blocks.0.att.time_decay_w1");
    if (faaaa.shape.size() != 2 || faaaa.shape[0] * faaaa.shape[1] != C)
      throw Error(map_->path + ": tensor blocks.0.att.time_faaaa has shape " +
                  shape_string(faaaa.shape) +
                  ", expected (n_head, head_size) covering n_embd=" + std::to_string(C));
    if (maa_w1.shape.size() != 2 || maa_w1.shape[1] % kBranches != 0 || decay_w1.shape.size() != 2)
      throw Error(map_->path + ": time_maa_w1 " + shape_string(maa_w1.shape) +
                  " or time_decay_w1 " + shape_string(decay_w1.shape) + " has an invalid shape");
    const int64_t H = faaaa.shape[0], N = faaaa.shape[1];
    const int64_t D_mix = maa_w1.shape[1] / kBranches, D_decay = decay_w1.shape[1];
    info_.n_head = int(H);
    info_.head_size = int(N);
    info_.lora = {{"time_maa", int(D_mix)}, {"time_decay", int(D_decay)}};
    info_.ffn_dim = int(map_->at("blocks.0.ffn.key.weight").shape[0]);
    const int64_t F = info_.ffn_dim;
    const char* names[kBranches] = {"w", "k", "v", "r", "g"};
    for (int i = 0; i < info_.n_layer; ++i) {
      const std::string p = layer_prefix(i);
      V6Layer L;
      L.ln1.load(w, p + "ln1", C);
      L.ln2.load(w, p + "ln2", C);
      L.att_time_maa_x = w.f32(p + "att.time_maa_x", {C});
      for (int b = 0; b < kBranches; ++b)
        L.att_time_maa[b] = w.f32(p + "att.time_maa_" + names[b], {C});
      L.att_time_maa_w1 = w.lora(p + "att.time_maa_w1", {C, kBranches * D_mix});
      const std::vector<Tensor> w2 =
          w.loras(p + "att.time_maa_w2", {kBranches, D_mix, C}, kBranches);
      std::copy(w2.begin(), w2.end(), L.att_time_maa_w2);
      L.att_time_decay = w.f32(p + "att.time_decay", {C});
      L.att_time_decay_w1 = w.lora(p + "att.time_decay_w1", {C, D_decay});
      L.att_time_decay_w2 = w.lora(p + "att.time_decay_w2", {D_decay, C});
      L.att_u = w.f32(p + "att.time_faaaa", {H, N});
      L.att_key = w.matrix(p + "att.key.weight", {C, C});
      L.att_value = w.matrix(p + "att.value.weight", {C, C});
      L.att_receptance = w.matrix(p + "att.receptance.weight", {C, C});
      L.att_output = w.matrix(p + "att.output.weight", {C, C});
      L.att_gate = w.matrix(p + "att.gate.weight", {C, C});
      L.ln_x.load(w, p + "att.ln_x", C);
      L.ffn_time_maa_k = w.f32(p + "ffn.time_maa_k", {C});
      L.ffn_time_maa_r = w.f32(p + "ffn.time_maa_r", {C});
      L.ffn.load(w, p + "ffn.", C, F);
      layers_.push_back(std::move(L));
    }
    finish_loading(w);
  }

 protected:
  void run_layers(float* x, int64_t T, std::span<const Segment> segments, Scratch& scratch,
                  ThreadPool* pool) const override {
    const int64_t C = info_.n_embd, H = info_.n_head, N = info_.head_size;
    const int64_t D_mix = info_.lora.at("time_maa"), D_decay = info_.lora.at("time_decay");
    // tmp: the channel mix's T x (2C + F), or before it the five branches' LoRA inputs.
    const int64_t tmp_size = std::max(2 * C + info_.ffn_dim, kBranches * D_mix);
    float* xx = scratch.get(size_t(T * (16 * C + tmp_size + kBranches * D_mix + D_decay)), 1);
    float* sx = xx + T * C;  // prev - x
    float* xb[kBranches];    // mixed inputs per branch
    xb[0] = sx + T * C;
    for (int b = 1; b < kBranches; ++b) xb[b] = xb[b - 1] + T * C;
    float* m = xb[kBranches - 1] + T * C;  // time_maa_w1's input
    float* r = m + T * C;
    float* k = r + T * C;
    float* v = k + T * C;
    float* g = v + T * C;
    float* decay = g + T * C;
    float* y = decay + T * C;
    float* tmp = y + T * C;
    float* lora = tmp + T * tmp_size;                  // T x 5 D_mix
    float* lora_decay = lora + T * kBranches * D_mix;  // T x D_decay
    const size_t layer_size = size_t(2 * C + C * N);
    for (int i = 0; i < info_.n_layer; ++i) {
      const V6Layer& L = layers_[size_t(i)];
      const size_t att_xx = size_t(i) * layer_size, att_kv = att_xx + C, ffn_xx = att_kv + C * N;

      // Elementwise work runs over token rows [t0, t1) on every pool thread (for_token_rows).
      L.ln1.layer_norm(x, T, C, xx, pool);
      token_shift(xx, C, segments, att_xx, sx);
      for_token_rows(T, pool, [&](int64_t t0, int64_t t1) {
        for (int64_t t = t0; t < t1; ++t)
          for (int64_t c = 0; c < C; ++c) {
            const int64_t j = t * C + c;
            sx[j] -= xx[j];
            m[j] = xx[j] + sx[j] * L.att_time_maa_x[size_t(c)];
          }
      });
      kernels::matmul(m, T, L.att_time_maa_w1, lora, pool);
      for (int64_t j = 0; j < T * kBranches * D_mix; ++j) lora[j] = std::tanh(lora[j]);
      // Branch b's LoRA input is columns [b * D_mix, (b + 1) * D_mix) of each row of `lora`
      // (copied to tmp + b * T * D_mix); its output goes to xb[b], mixed there in place.
      kernels::MatmulJob maa_up[kBranches];
      for (int b = 0; b < kBranches; ++b) {
        float* in = tmp + b * T * D_mix;
        for (int64_t t = 0; t < T; ++t)
          std::copy_n(lora + t * kBranches * D_mix + b * D_mix, D_mix, in + t * D_mix);
        maa_up[b] = {in, &L.att_time_maa_w2[b], xb[b]};
      }
      kernels::matmul_many(maa_up, T, pool);
      for_token_rows(T, pool, [&](int64_t t0, int64_t t1) {
        for (int b = 0; b < kBranches; ++b)
          for (int64_t t = t0; t < t1; ++t)
            for (int64_t c = 0; c < C; ++c) {
              const int64_t j = t * C + c;
              xb[b][j] = xx[j] + sx[j] * (L.att_time_maa[b][size_t(c)] + xb[b][j]);
            }
      });
      const kernels::LinearJob rkvg[] = {{&L.att_receptance, xb[kR], r},
                                         {&L.att_key, xb[kK], k},
                                         {&L.att_value, xb[kV], v},
                                         {&L.att_gate, xb[kG], g}};
      const kernels::MatmulJob decay_down = {xb[kW], &L.att_time_decay_w1, lora_decay};
      kernels::products(rkvg, {&decay_down, 1}, T, pool);
      for (int64_t j = 0; j < T * D_decay; ++j) lora_decay[j] = std::tanh(lora_decay[j]);
      kernels::matmul(lora_decay, T, L.att_time_decay_w2, decay, pool);
      for_token_rows(T, pool, [&](int64_t t0, int64_t t1) {
        float* d = decay + t0 * C;
        const int64_t n = (t1 - t0) * C;
        for (int64_t t = 0; t < t1 - t0; ++t)
          for (int64_t c = 0; c < C; ++c) d[t * C + c] += L.att_time_decay[size_t(c)];
        kernels::exp_of(d, d, n);
        for (int64_t j = 0; j < n; ++j) d[j] = -d[j];
        kernels::exp_of(d, d, n);
      });
      for (const Segment& s : segments) {
        const int64_t o = s.begin * C;
        kernels::wkv5(r + o, k + o, v + o, decay + o, C, L.att_u.data(), s.len, H, N,
                      s.state + att_kv, y + o, pool);
      }
      for_token_rows(T, pool, [&](int64_t t0, int64_t t1) {
        L.ln_x.group_norm(y + t0 * C, t1 - t0, H, N, info_.ln_x_eps, y + t0 * C);
        kernels::silu_of(g + t0 * C, g + t0 * C, (t1 - t0) * C);
        for (int64_t j = t0 * C; j < t1 * C; ++j) y[j] *= g[j];
      });
      kernels::linear(L.att_output, y, T, v, pool);
      L.ln2.add_then_layer_norm(x, v, T, C, xx, pool);

      token_shift(xx, C, segments, ffn_xx, sx);
      float* xk = xb[kK];
      float* xr = xb[kR];
      for_token_rows(T, pool, [&](int64_t t0, int64_t t1) {
        for (int64_t t = t0; t < t1; ++t)
          for (int64_t c = 0; c < C; ++c) {
            const int64_t j = t * C + c;
            const float s = sx[j] - xx[j];
            xk[j] = xx[j] + s * L.ffn_time_maa_k[size_t(c)];
            xr[j] = xx[j] + s * L.ffn_time_maa_r[size_t(c)];
          }
      });
      L.ffn.add_to(xk, xr, T, tmp, x, pool);
    }
  }

 private:
  std::vector<V6Layer> layers_;
};

}  // namespace

std::unique_ptr<Model> build_v6(std::shared_ptr<TensorMap> map, ModelInfo info) {
  return std::make_unique<ModelV6>(std::move(map), std::move(info));
}

}  // namespace rwkv
