// RWKV-7 "Goose" (x070): a generalised delta-rule state update with per-token decay, an
// in-context learning rate and a value residual from layer 0.
// Follows BlinkDL/RWKV-LM RWKV-v7/rwkv_v7_demo.py and the official `rwkv` pip package.
//
// State per layer, 2C + H*N*N floats: att_x_prev (C), att_kv (H, N, N) with S[h][i][j]
// accumulating v_i * k_j (transposed relative to RWKV-5/6), ffn_x_prev (C).
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

// The six token-shift mixes, in the order of the official x_r, x_w, x_k, x_v, x_a, x_g.
enum Mix { kR, kW, kK, kV, kA, kG, kMixes };

struct V7Layer {
  Norm ln1, ln2;
  std::vector<float> att_x[kMixes];
  std::vector<float> att_w0, att_a0, att_v0;              // (C,)
  Tensor att_w1, att_a1, att_v1, att_g1;                  // (C, D)
  Tensor att_w2, att_a2, att_v2, att_g2;                  // (D, C)
  std::vector<float> att_k_k, att_k_a;                    // (C,)
  std::vector<float> att_r_k;                             // (H, N)
  Tensor att_key, att_value, att_receptance, att_output;  // (C, C)
  Norm ln_x;
  std::vector<float> ffn_x_k;
  Tensor ffn_key;    // (F, C)
  Tensor ffn_value;  // (C, F)
};

class ModelV7 final : public MatrixStateModel {
 public:
  ModelV7(std::shared_ptr<TensorMap> map, ModelInfo info)
      : MatrixStateModel(std::move(map), std::move(info)) {
    const int64_t C = info_.n_embd;
    WeightLoader w(*map_, info_);
    io_.load(w, info_.n_vocab, C);
    const Tensor& r_k = map_->at("blocks.0.att.r_k");
    if (r_k.shape.size() != 2 || r_k.shape[0] * r_k.shape[1] != C)
      throw Error(map_->path + ": tensor blocks.0.att.r_k has shape " + shape_string(r_k.shape) +
                  ", expected (n_head, head_size) covering n_embd=" + std::to_string(C));
    const int64_t H = r_k.shape[0], N = r_k.shape[1];
    info_.n_head = int(H);
    info_.head_size = int(N);
    auto rank = [&](const std::string& name) {
      const Tensor& t = map_->at(name);
      if (t.shape.size() != 2) throw Error(map_->path + ": tensor " + name + " should be a matrix");
      return t.shape[1];
    };
    const int64_t Dw = rank("blocks.0.att.w1"), Da = rank("blocks.0.att.a1"),
                  Dg = rank("blocks.0.att.g1");
    const int64_t Dv = info_.n_layer > 1 ? rank("blocks.1.att.v1") : 0;
    info_.lora = {{"w", int(Dw)}, {"a", int(Da)}, {"v", int(Dv)}, {"g", int(Dg)}};
    info_.ffn_dim = int(map_->at("blocks.0.ffn.key.weight").shape[0]);
    const int64_t F = info_.ffn_dim;
    const char* mix_names[kMixes] = {"x_r", "x_w", "x_k", "x_v", "x_a", "x_g"};
    for (int i = 0; i < info_.n_layer; ++i) {
      const std::string p = layer_prefix(i);
      V7Layer L;
      L.ln1.load(w, p + "ln1", C);
      L.ln2.load(w, p + "ln2", C);
      for (int b = 0; b < kMixes; ++b) L.att_x[b] = w.f32(p + "att." + mix_names[b], {C});
      L.att_w0 = w.f32(p + "att.w0", {C});
      L.att_w1 = w.lora(p + "att.w1", {C, Dw});
      L.att_w2 = w.lora(p + "att.w2", {Dw, C});
      L.att_a0 = w.f32(p + "att.a0", {C});
      L.att_a1 = w.lora(p + "att.a1", {C, Da});
      L.att_a2 = w.lora(p + "att.a2", {Da, C});
      if (i > 0) {
        L.att_v0 = w.f32(p + "att.v0", {C});
        L.att_v1 = w.lora(p + "att.v1", {C, Dv});
        L.att_v2 = w.lora(p + "att.v2", {Dv, C});
      } else {
        // Layer 0 defines the value residual, so the reference ignores its v0/v1/v2.
        for (const char* name : {"att.v0", "att.v1", "att.v2"}) w.ignore(p + name);
      }
      L.att_g1 = w.lora(p + "att.g1", {C, Dg});
      L.att_g2 = w.lora(p + "att.g2", {Dg, C});
      L.att_k_k = w.f32(p + "att.k_k", {C});
      L.att_k_a = w.f32(p + "att.k_a", {C});
      L.att_r_k = w.f32(p + "att.r_k", {H, N});
      L.att_key = w.matrix(p + "att.key.weight", {C, C});
      L.att_value = w.matrix(p + "att.value.weight", {C, C});
      L.att_receptance = w.matrix(p + "att.receptance.weight", {C, C});
      L.att_output = w.matrix(p + "att.output.weight", {C, C});
      L.ln_x.load(w, p + "att.ln_x", C);
      L.ffn_x_k = w.f32(p + "ffn.x_k", {C});
      L.ffn_key = w.matrix(p + "ffn.key.weight", {F, C});
      L.ffn_value = w.matrix(p + "ffn.value.weight", {C, F});
      layers_.push_back(std::move(L));
    }
    finish_loading(w);
  }

 protected:
  void run_layers(float* x, int64_t T, std::span<const Segment> segments, Scratch& scratch,
                  ThreadPool* pool) const override {
    const int64_t C = info_.n_embd, H = info_.n_head, N = info_.head_size;
    // `hidden` holds the FFN's hidden rows, and before them the LoRAs' side by side.
    int64_t ranks = 0;
    for (const auto& [name, rank] : info_.lora) ranks += rank;
    const int64_t D = std::max<int64_t>(info_.ffn_dim, ranks);
    float* xx = scratch.get(size_t(T * (18 * C + D)), 1);
    float* sx = xx + T * C;  // prev - x
    float* xm[kMixes];
    xm[0] = sx + T * C;
    for (int b = 1; b < kMixes; ++b) xm[b] = xm[b - 1] + T * C;
    float* r = xm[kMixes - 1] + T * C;
    float* w = r + T * C;
    float* k = w + T * C;
    float* v = k + T * C;
    float* a = v + T * C;
    float* g = a + T * C;
    float* kk = g + T * C;
    float* v_first = kk + T * C;
    float* y = v_first + T * C;
    float* hidden = y + T * C;  // T x max(LoRA rank, F)
    const size_t layer_size = size_t(2 * C + C * N);
    const float decay_scale = std::exp(-0.5f);
    for (int i = 0; i < info_.n_layer; ++i) {
      const V7Layer& L = layers_[size_t(i)];
      const size_t att_x_prev = size_t(i) * layer_size, att_kv = att_x_prev + C,
                   ffn_x_prev = att_kv + C * N;

      // Elementwise work runs over token rows [t0, t1) on every pool thread (for_token_rows);
      // `o` is token t's first element.
      L.ln1.layer_norm(x, T, C, xx, pool);
      token_shift(xx, C, segments, att_x_prev, sx);
      for_token_rows(T, pool, [&](int64_t t0, int64_t t1) {
        for (int64_t t = t0; t < t1; ++t) {
          const int64_t o = t * C;
          for (int64_t c = 0; c < C; ++c) sx[o + c] -= xx[o + c];
          for (int b = 0; b < kMixes; ++b)
            for (int64_t c = 0; c < C; ++c)
              xm[b][o + c] = xx[o + c] + sx[o + c] * L.att_x[b][size_t(c)];
        }
      });

      // w = exp(-e^-0.5 * sigmoid(w0 + tanh(xw @ w1) @ w2)), i.e. the reference's
      // exp(-exp(-softplus(-z) - 0.5)), in float32.
      const auto identity = [](float h) { return h; };
      const Lora loras[] = {
          {&L.att_w1, &L.att_w2, xm[kW], w, [](float h) { return std::tanh(h); }},
          {&L.att_a1, &L.att_a2, xm[kA], a, identity},
          {&L.att_g1, &L.att_g2, xm[kG], g, [](float h) { return kernels::sigmoid(h); }},
          {&L.att_v1, &L.att_v2, xm[kV], y, identity}};
      const kernels::LinearJob rkv[] = {
          {&L.att_receptance, xm[kR], r}, {&L.att_key, xm[kK], k}, {&L.att_value, xm[kV], v}};
      run_loras(rkv, std::span(loras).first(i > 0 ? 4 : 3), T, hidden, pool);

      for_token_rows(T, pool, [&](int64_t t0, int64_t t1) {
        for (int64_t t = t0; t < t1; ++t) {
          const int64_t o = t * C;
          for (int64_t c = 0; c < C; ++c) w[o + c] += L.att_w0[size_t(c)];
          kernels::sigmoid_of(w + o, w + o, C);
          for (int64_t c = 0; c < C; ++c) w[o + c] *= -decay_scale;
          kernels::exp_of(w + o, w + o, C);
          for (int64_t c = 0; c < C; ++c) a[o + c] += L.att_a0[size_t(c)];
          kernels::sigmoid_of(a + o, a + o, C);
          // kk = per-head L2-normalised k * k_k (F.normalize, eps 1e-12), from k before k_a.
          for (int64_t c = 0; c < C; ++c) kk[o + c] = k[o + c] * L.att_k_k[size_t(c)];
          for (int64_t h = 0; h < H; ++h) {
            float* kh = kk + o + h * N;
            float ss = 0;
            for (int64_t j = 0; j < N; ++j) ss += kh[j] * kh[j];
            const float inv = 1.0f / std::max(std::sqrt(ss), 1e-12f);
            for (int64_t j = 0; j < N; ++j) kh[j] *= inv;
          }
          for (int64_t c = 0; c < C; ++c) k[o + c] *= 1 + (a[o + c] - 1) * L.att_k_a[size_t(c)];
          if (i == 0) {
            std::copy_n(v + o, C, v_first + o);
          } else {
            for (int64_t c = 0; c < C; ++c) y[o + c] += L.att_v0[size_t(c)];
            kernels::sigmoid_of(y + o, y + o, C);
            for (int64_t c = 0; c < C; ++c) v[o + c] += (v_first[o + c] - v[o + c]) * y[o + c];
          }
        }
      });

      for (const Segment& s : segments) {
        const int64_t o = s.begin * C;
        kernels::wkv7(r + o, w + o, k + o, v + o, kk + o, a + o, s.len, H, N, s.state + att_kv,
                      y + o, pool);
      }
      for_token_rows(T, pool, [&](int64_t t0, int64_t t1) {
        L.ln_x.group_norm(y + t0 * C, t1 - t0, H, N, info_.ln_x_eps, y + t0 * C);
        for (int64_t t = t0; t < t1; ++t) {
          // Bonus: per head, (sum_j r_j k_j r_k[h][j]) * v.
          for (int64_t h = 0; h < H; ++h) {
            const int64_t o = t * C + h * N;
            const float* r_k = L.att_r_k.data() + h * N;
            float s = 0;
            for (int64_t j = 0; j < N; ++j) s += r[o + j] * k[o + j] * r_k[j];
            for (int64_t j = 0; j < N; ++j) y[o + j] += s * v[o + j];
          }
          for (int64_t c = t * C; c < (t + 1) * C; ++c) y[c] *= g[c];
        }
      });
      kernels::linear(L.att_output, y, T, v, pool);
      L.ln2.add_then_layer_norm(x, v, T, C, xx, pool);

      token_shift(xx, C, segments, ffn_x_prev, sx);
      float* xk = xm[kK];
      for_token_rows(T, pool, [&](int64_t t0, int64_t t1) {
        for (int64_t t = t0; t < t1; ++t)
          for (int64_t c = 0; c < C; ++c)
            xk[t * C + c] = xx[t * C + c] + (sx[t * C + c] - xx[t * C + c]) * L.ffn_x_k[size_t(c)];
      });
      kernels::linear(L.ffn_key, xk, T, hidden, pool);
      const int64_t F = info_.ffn_dim;
      for_token_rows(T, pool, [&](int64_t t0, int64_t t1) {
        kernels::relu_squared_of(hidden + t0 * F, hidden + t0 * F, (t1 - t0) * F);
      });
      kernels::linear(L.ffn_value, hidden, T, v, pool);
      for_token_rows(T, pool, [&](int64_t t0, int64_t t1) {
        for (int64_t c = t0 * C; c < t1 * C; ++c) x[c] += v[c];
      });
    }
  }

 private:
  // out = act(x @ w1) @ w2 over T rows, the shape of every RWKV-7 LoRA.
  struct Lora {
    const Tensor *w1, *w2;
    const float* x;
    float* out;
    float (*act)(float);
  };

  // A layer's LoRAs (independent of each other): all first products in one spread over the
  // pool with the layer's other products of the same inputs (`with`), the activations, then all
  // second products (`hidden` holds T x the sum of the ranks).
  static void run_loras(std::span<const kernels::LinearJob> with, std::span<const Lora> loras,
                        int64_t T, float* hidden, ThreadPool* pool) {
    constexpr size_t kMaxLoras = 4;
    kernels::MatmulJob down[kMaxLoras], up[kMaxLoras];
    float* h[kMaxLoras];
    for (size_t j = 0; j < loras.size(); ++j) {
      h[j] = j == 0 ? hidden : h[j - 1] + T * loras[j - 1].w1->cols();
      down[j] = {loras[j].x, loras[j].w1, h[j]};
      up[j] = {h[j], loras[j].w2, loras[j].out};
    }
    kernels::products(with, {down, loras.size()}, T, pool);
    for (size_t j = 0; j < loras.size(); ++j)
      for (int64_t k = 0; k < T * loras[j].w1->cols(); ++k) h[j][k] = loras[j].act(h[j][k]);
    kernels::matmul_many({up, loras.size()}, T, pool);
  }

  std::vector<V7Layer> layers_;
};

}  // namespace

std::unique_ptr<Model> build_v7(std::shared_ptr<TensorMap> map, ModelInfo info) {
  return std::make_unique<ModelV7>(std::move(map), std::move(info));
}

}  // namespace rwkv
