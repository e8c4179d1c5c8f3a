#include "train/chunked_model.h"

#include <algorithm>
#include <cstring>

#include "rwkv/error.h"
#include "train/train_math.h"

namespace rwkv::train {

namespace {
constexpr float kLnEps = 1e-5f;

std::vector<int64_t> squeeze(const std::vector<int64_t>& s) {
  std::vector<int64_t> out;
  for (int64_t d : s)
    if (d != 1) out.push_back(d);
  return out;
}
}  // namespace

std::unique_ptr<TrainModel> TrainModel::create(const ParamSet& params) {
  return detect_train_arch(params) == "7" ? create_v7(params) : create_v6(params);
}

ChunkedModel::ChunkedModel(const ParamSet& params) : layout_(params) {
  const ParamInfo& emb = params.info("emb.weight");
  if (emb.shape.size() != 2) throw Error("emb.weight should be a matrix");
  V_ = emb.shape[0];
  C_ = emb.shape[1];
  emb_ = offset("emb.weight", {V_, C_});
  ln0_w_ = offset("blocks.0.ln0.weight", {C_});
  ln0_b_ = offset("blocks.0.ln0.bias", {C_});
  ln_out_w_ = offset("ln_out.weight", {C_});
  ln_out_b_ = offset("ln_out.bias", {C_});
  head_ = offset("head.weight", {V_, C_});
}

size_t ChunkedModel::offset(const std::string& name, const std::vector<int64_t>& shape) const {
  const ParamInfo& p = layout_.info(name);
  if (squeeze(p.shape) != squeeze(shape))
    throw Error("tensor " + name + " has shape " + shape_string(p.shape) + ", expected " +
                shape_string(shape));
  return p.offset;
}

void ChunkedModel::check_tokens(const int* tokens, int64_t n) const {
  for (int64_t i = 0; i < n; ++i)
    if (tokens[i] < 0 || tokens[i] >= V_)
      throw Error("token " + std::to_string(tokens[i]) + " is outside the vocabulary [0, " +
                  std::to_string(V_) + ")");
}

void ChunkedModel::embed(const float* P, const int* tokens, int64_t T, int64_t t0, int64_t B,
                         int64_t Tc, float* x, ThreadPool* pool) {
  const int64_t rows = B * Tc, C = C_;
  e_.resize(size_t(rows * C));
  e_mean_.resize(size_t(rows));
  e_rstd_.resize(size_t(rows));
  rows_tokens_.resize(size_t(rows));
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < Tc; ++t) {
      const int tok = tokens[b * T + t0 + t];
      rows_tokens_[size_t(b * Tc + t)] = tok;
      std::memcpy(&e_[size_t((b * Tc + t) * C)], P + emb_ + size_t(tok) * size_t(C),
                  size_t(C) * 4);
    }
  layer_norm_fwd(e_.data(), P + ln0_w_, P + ln0_b_, rows, C, kLnEps, x, e_mean_.data(),
                 e_rstd_.data(), pool);
}

void ChunkedModel::head_fwd(const float* P, const float* x, int64_t rows, float* logits,
                            ThreadPool* pool) {
  xo_norm_.resize(size_t(rows * C_));
  xo_mean_.resize(size_t(rows));
  xo_rstd_.resize(size_t(rows));
  layer_norm_fwd(x, P + ln_out_w_, P + ln_out_b_, rows, C_, kLnEps, xo_norm_.data(),
                 xo_mean_.data(), xo_rstd_.data(), pool);
  linear_fwd(xo_norm_.data(), P + head_, rows, C_, V_, logits, pool);
}

double ChunkedModel::forward_backward(const float* P, const Batch& batch, int64_t chunk,
                                      const float* state0, float* G, float* dstate0,
                                      ThreadPool* pool) {
  const int64_t B = batch.B, T = batch.T, C = C_, S = int64_t(state_size());
  if (B < 1 || T < 1) throw Error("empty batch");
  chunk = std::clamp<int64_t>(chunk, 1, T);
  check_tokens(batch.inputs, B * T);
  check_tokens(batch.targets, B * T);
  const int64_t n_chunks = (T + chunk - 1) / chunk;

  // Pass 1: the state at the start of every chunk.
  std::vector<float> boundary(size_t(n_chunks * B * S), 0.0f);
  if (state0)
    for (int64_t b = 0; b < B; ++b) std::copy_n(state0, S, &boundary[size_t(b * S)]);
  x_.resize(size_t(B * chunk * C));
  for (int64_t c = 0; c + 1 < n_chunks; ++c) {
    float* next = &boundary[size_t((c + 1) * B * S)];
    std::copy_n(&boundary[size_t(c * B * S)], B * S, next);
    embed(P, batch.inputs, T, c * chunk, B, chunk, x_.data(), pool);
    layers_fwd(P, x_.data(), B, chunk, next, pool);
  }

  // Pass 2, last chunk first: recompute, then back-propagate.
  std::vector<float> state(size_t(B * S)), dstate(size_t(B * S), 0.0f);
  const float scale = 1.0f / float(B * T);
  double loss = 0;
  std::vector<int> targets;
  for (int64_t c = n_chunks - 1; c >= 0; --c) {
    const int64_t t0 = c * chunk, Tc = std::min(chunk, T - t0), rows = B * Tc;
    std::copy_n(&boundary[size_t(c * B * S)], B * S, state.data());
    embed(P, batch.inputs, T, t0, B, Tc, x_.data(), pool);
    layers_fwd(P, x_.data(), B, Tc, state.data(), pool);
    logits_.resize(size_t(rows * V_));
    head_fwd(P, x_.data(), rows, logits_.data(), pool);
    targets.resize(size_t(rows));
    for (int64_t b = 0; b < B; ++b)
      std::copy_n(batch.targets + b * T + t0, Tc, &targets[size_t(b * Tc)]);
    loss += cross_entropy(logits_.data(), targets.data(), rows, V_, scale, l2wrap_ * scale,
                          pool);

    dn_.resize(size_t(rows * C));
    dx_.resize(size_t(rows * C));
    linear_bwd(xo_norm_.data(), P + head_, logits_.data(), rows, C, V_, dn_.data(), false,
               G + head_, pool);
    layer_norm_bwd(x_.data(), P + ln_out_w_, xo_mean_.data(), xo_rstd_.data(), dn_.data(), rows,
                   C, dx_.data(), false, G + ln_out_w_, G + ln_out_b_, pool);
    layers_bwd(P, G, dx_.data(), B, Tc, dstate.data(), pool);
    layer_norm_bwd(e_.data(), P + ln0_w_, e_mean_.data(), e_rstd_.data(), dx_.data(), rows, C,
                   dn_.data(), false, G + ln0_w_, G + ln0_b_, pool);
    // By columns: rows with the same token add to the same embedding row.
    parallel_ranges(pool, C, 16, [&](int64_t c0, int64_t c1) {
      for (int64_t r = 0; r < rows; ++r) {
        float* de = G + emb_ + size_t(rows_tokens_[size_t(r)]) * size_t(C);
        for (int64_t i = c0; i < c1; ++i) de[i] += dn_[size_t(r * C + i)];
      }
    });
  }
  if (dstate0)
    for (int64_t b = 0; b < B; ++b)
      for (int64_t i = 0; i < S; ++i) dstate0[i] += dstate[size_t(b * S + i)];
  return loss / double(B * T);
}

void ChunkedModel::forward_logits(const float* P, const int* tokens, int64_t B, int64_t T,
                                  int64_t chunk, float* logits, ThreadPool* pool) {
  const int64_t S = int64_t(state_size());
  chunk = std::clamp<int64_t>(chunk, 1, T);
  check_tokens(tokens, B * T);
  std::vector<float> state(size_t(B * S), 0.0f);
  x_.resize(size_t(B * chunk * C_));
  for (int64_t t0 = 0; t0 < T; t0 += chunk) {
    const int64_t Tc = std::min(chunk, T - t0), rows = B * Tc;
    embed(P, tokens, T, t0, B, Tc, x_.data(), pool);
    layers_fwd(P, x_.data(), B, Tc, state.data(), pool);
    logits_.resize(size_t(rows * V_));
    head_fwd(P, x_.data(), rows, logits_.data(), pool);
    for (int64_t b = 0; b < B; ++b)
      std::copy_n(&logits_[size_t(b * Tc * V_)], Tc * V_, logits + (b * T + t0) * V_);
  }
}

}  // namespace rwkv::train
