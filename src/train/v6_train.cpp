// RWKV-6 "Finch" (x060) in training form: the forward of src/model/v6.cpp over a chunk of B
// sequences, keeping its activations, and the hand-written backward pass of every step: the
// data-dependent token shift (time_maa LoRA), the data-dependent decay (time_decay LoRA), the
// WKV recurrence (whose state after every token of the chunk is kept), GroupNorm, the SiLU gate
// and the channel mix with its receptance. Tensor names follow the official checkpoints.
#include <algorithm>
#include <array>
#include <cmath>

#include "rwkv/error.h"
#include "train/chunked_model.h"
#include "train/train_math.h"

namespace rwkv::train {

namespace {

constexpr float kLnEps = 1e-5f;
constexpr float kLnxEps = 64e-5f;  // GroupNorm eps of the official code (1e-5 * 8^2)

// The five data-dependent mixes, in the order of time_maa_w2's branches.
enum Branch { kW, kK, kV, kR, kG, kBranches };

enum Field {
  kLn1W, kLn1B, kLn2W, kLn2B, kMaaX, kMaaW, kMaaK, kMaaV, kMaaR, kMaaG, kMaaW1, kMaaW2,
  kDecay, kDecayW1, kDecayW2, kFaaaa, kWr, kWk, kWv, kWo, kWg, kLnxW, kLnxB, kFMaaK, kFMaaR,
  kFk, kFr, kFv, kFields
};
constexpr const char* kFieldNames[kFields] = {
    "ln1.weight", "ln1.bias", "ln2.weight", "ln2.bias", "att.time_maa_x", "att.time_maa_w",
    "att.time_maa_k", "att.time_maa_v", "att.time_maa_r", "att.time_maa_g", "att.time_maa_w1",
    "att.time_maa_w2", "att.time_decay", "att.time_decay_w1", "att.time_decay_w2",
    "att.time_faaaa", "att.receptance.weight", "att.key.weight", "att.value.weight",
    "att.output.weight", "att.gate.weight", "att.ln_x.weight", "att.ln_x.bias",
    "ffn.time_maa_k", "ffn.time_maa_r", "ffn.key.weight", "ffn.receptance.weight",
    "ffn.value.weight"};
// The mix vectors of the branches, in Branch order.
constexpr Field kMaa[kBranches] = {kMaaW, kMaaK, kMaaV, kMaaR, kMaaG};

using Vec = std::vector<float>;

struct Acts {
  Vec x_in, xx, ln1_mean, ln1_rstd, sx, xxx, m[kBranches], mix[kBranches], xb[kBranches];
  Vec r, k, v, gpre, dd, w, y, gn_mean, gn_rstd, z, S, S0;
  Vec x_mid, xx2, ln2_mean, ln2_rstd, sx2, xk2, xr2, hpre, h2, rr, kv;
};

void fit(Vec& v, int64_t n) { v.resize(size_t(n)); }

class V6Train final : public ChunkedModel {
 public:
  explicit V6Train(const ParamSet& p) : ChunkedModel(p) {
    const int64_t C = C_;
    const ParamInfo& u = p.info("blocks.0.att.time_faaaa");
    if (u.shape.size() != 2 || u.shape[0] * u.shape[1] != C)
      throw Error("blocks.0.att.time_faaaa should be (n_head, head_size) covering n_embd");
    H_ = u.shape[0];
    N_ = u.shape[1];
    const ParamInfo& w1 = p.info("blocks.0.att.time_maa_w1");
    if (w1.shape.size() != 2 || w1.shape[1] % kBranches != 0)
      throw Error("blocks.0.att.time_maa_w1 should be (n_embd, 5 * rank)");
    Dm_ = w1.shape[1] / kBranches;
    Dd_ = p.info("blocks.0.att.time_decay_w1").shape.at(1);
    F_ = p.info("blocks.0.ffn.key.weight").shape.at(0);
    for (L_ = 0; p.contains("blocks." + std::to_string(L_) + ".ln1.weight");) ++L_;
    const std::vector<int64_t> shapes[kFields] = {
        {C},      {C},           {C},      {C},     {C},     {C},     {C},
        {C},      {C},           {C},      {C, kBranches * Dm_}, {kBranches, Dm_, C},
        {C},      {C, Dd_},      {Dd_, C}, {H_, N_}, {C, C},  {C, C},  {C, C},
        {C, C},   {C, C},        {C},      {C},     {C},     {C},     {F_, C},
        {C, C},   {C, F_}};
    off_.resize(size_t(L_));
    for (int64_t l = 0; l < L_; ++l)
      for (int f = 0; f < kFields; ++f)
        off_[size_t(l)][size_t(f)] =
            offset("blocks." + std::to_string(l) + "." + kFieldNames[f], shapes[f]);
    acts_.resize(size_t(L_));
  }

  size_t state_size() const override { return size_t(L_ * (2 * C_ + C_ * N_)); }

 protected:
  void layers_fwd(const float* P, float* x, int64_t B, int64_t Tc, float* state,
                  ThreadPool* pool) override {
    const int64_t C = C_, H = H_, F = F_, rows = B * Tc, RC = rows * C, D = Dm_;
    const int64_t ss = int64_t(state_size()), ls = 2 * C + C * N_;
    for (int64_t l = 0; l < L_; ++l) {
      Acts& A = acts_[size_t(l)];
      auto W = [&](Field f) { return P + off_[size_t(l)][size_t(f)]; };
      for (Vec* v : {&A.x_in, &A.xx, &A.sx, &A.xxx, &A.r, &A.k, &A.v, &A.gpre, &A.w, &A.y,
                     &A.z, &A.x_mid, &A.xx2, &A.sx2, &A.xk2, &A.xr2, &A.rr, &A.kv})
        fit(*v, RC);
      for (int b = 0; b < kBranches; ++b) {
        fit(A.m[b], rows * D);
        fit(A.mix[b], RC);
        fit(A.xb[b], RC);
      }
      for (Vec* v : {&A.ln1_mean, &A.ln1_rstd, &A.ln2_mean, &A.ln2_rstd}) fit(*v, rows);
      fit(A.gn_mean, rows * H);
      fit(A.gn_rstd, rows * H);
      fit(A.dd, rows * Dd_);
      fit(A.hpre, rows * F);
      fit(A.h2, rows * F);
      fit(A.S, rows * H * N_ * N_);
      fit(A.S0, B * H * N_ * N_);
      float* st = state + l * ls;

      std::copy_n(x, RC, A.x_in.data());
      layer_norm_fwd(x, W(kLn1W), W(kLn1B), rows, C, kLnEps, A.xx.data(), A.ln1_mean.data(),
                     A.ln1_rstd.data());
      shift_fwd(A.xx.data(), B, Tc, C, st, ss, A.sx.data());
      for (int64_t j = 0; j < RC; ++j) {
        A.sx[size_t(j)] -= A.xx[size_t(j)];
        A.xxx[size_t(j)] = A.xx[size_t(j)] + A.sx[size_t(j)] * W(kMaaX)[j % C];
      }
      // m = tanh(xxx @ time_maa_w1), five branches of D; mix_b = m_b @ time_maa_w2[b].
      Vec& m_all = tmp_;
      fit(m_all, rows * kBranches * D);
      matmul_fwd(A.xxx.data(), W(kMaaW1), rows, C, kBranches * D, m_all.data(), pool);
      for (int64_t t = 0; t < rows; ++t)
        for (int b = 0; b < kBranches; ++b)
          for (int64_t d = 0; d < D; ++d)
            A.m[b][size_t(t * D + d)] = std::tanh(m_all[size_t((t * kBranches + b) * D + d)]);
      for (int b = 0; b < kBranches; ++b) {
        matmul_fwd(A.m[b].data(), W(kMaaW2) + b * D * C, rows, D, C, A.mix[b].data(), pool);
        const float* maa = W(kMaa[b]);
        for (int64_t j = 0; j < RC; ++j)
          A.xb[b][size_t(j)] =
              A.xx[size_t(j)] + A.sx[size_t(j)] * (maa[j % C] + A.mix[b][size_t(j)]);
      }
      linear_fwd(A.xb[kR].data(), W(kWr), rows, C, C, A.r.data(), pool);
      linear_fwd(A.xb[kK].data(), W(kWk), rows, C, C, A.k.data(), pool);
      linear_fwd(A.xb[kV].data(), W(kWv), rows, C, C, A.v.data(), pool);
      linear_fwd(A.xb[kG].data(), W(kWg), rows, C, C, A.gpre.data(), pool);
      // w = exp(-exp(time_decay + tanh(xw @ time_decay_w1) @ time_decay_w2))
      matmul_fwd(A.xb[kW].data(), W(kDecayW1), rows, C, Dd_, A.dd.data(), pool);
      for (float& h : A.dd) h = std::tanh(h);
      matmul_fwd(A.dd.data(), W(kDecayW2), rows, Dd_, C, A.w.data(), pool);
      for (int64_t j = 0; j < RC; ++j)
        A.w[size_t(j)] = std::exp(-std::exp(W(kDecay)[j % C] + A.w[size_t(j)]));

      wkv_fwd(A, W(kFaaaa), B, Tc, st + C, ss, pool);
      for (int64_t h = 0; h < rows * H; ++h) {
        const int64_t o = h * N_, ho = (h % H) * N_;
        layer_norm_fwd(&A.y[size_t(o)], W(kLnxW) + ho, W(kLnxB) + ho, 1, N_, kLnxEps,
                       &A.z[size_t(o)], &A.gn_mean[size_t(h)], &A.gn_rstd[size_t(h)]);
      }
      float* yg = A.x_mid.data();  // scratch until the output projection overwrites it
      const size_t n = size_t(RC);
      Vec out(n);
      for (int64_t j = 0; j < RC; ++j) {
        const float g = A.gpre[size_t(j)] * sigmoid(A.gpre[size_t(j)]);
        yg[j] = A.z[size_t(j)] * g;
      }
      linear_fwd(yg, W(kWo), rows, C, C, out.data(), pool);
      for (int64_t j = 0; j < RC; ++j) A.x_mid[size_t(j)] = x[j] + out[size_t(j)];

      // Channel mix: sigmoid(Wr xr) * (Wv relu(Wk xk)^2).
      layer_norm_fwd(A.x_mid.data(), W(kLn2W), W(kLn2B), rows, C, kLnEps, A.xx2.data(),
                     A.ln2_mean.data(), A.ln2_rstd.data());
      shift_fwd(A.xx2.data(), B, Tc, C, st + C + C * N_, ss, A.sx2.data());
      for (int64_t j = 0; j < RC; ++j) {
        A.sx2[size_t(j)] -= A.xx2[size_t(j)];
        A.xk2[size_t(j)] = A.xx2[size_t(j)] + A.sx2[size_t(j)] * W(kFMaaK)[j % C];
        A.xr2[size_t(j)] = A.xx2[size_t(j)] + A.sx2[size_t(j)] * W(kFMaaR)[j % C];
      }
      linear_fwd(A.xk2.data(), W(kFk), rows, C, F, A.hpre.data(), pool);
      for (int64_t j = 0; j < rows * F; ++j) {
        const float h = std::max(A.hpre[size_t(j)], 0.0f);
        A.h2[size_t(j)] = h * h;
      }
      linear_fwd(A.h2.data(), W(kFv), rows, F, C, A.kv.data(), pool);
      linear_fwd(A.xr2.data(), W(kFr), rows, C, C, A.rr.data(), pool);
      for (int64_t j = 0; j < RC; ++j) {
        A.rr[size_t(j)] = sigmoid(A.rr[size_t(j)]);
        x[j] = A.x_mid[size_t(j)] + A.rr[size_t(j)] * A.kv[size_t(j)];
      }
    }
  }

  void layers_bwd(const float* P, float* G, float* dx, int64_t B, int64_t Tc, float* dstate,
                  ThreadPool* pool) override {
    const int64_t C = C_, H = H_, F = F_, rows = B * Tc, RC = rows * C, D = Dm_;
    const int64_t ss = int64_t(state_size()), ls = 2 * C + C * N_;
    const size_t n = size_t(RC);
    Vec da(n), db(n), dxx(n), dsx(n), dh(size_t(rows * F)), dr(n), dk(n), dv(n), dw(n), dg(n);
    Vec dy(n), dlora(size_t(rows * std::max(Dd_, D))), dm_all(size_t(rows * kBranches * D));
    Vec dxb[kBranches];
    for (Vec& v : dxb) v.resize(n);
    for (int64_t l = L_ - 1; l >= 0; --l) {
      const Acts& A = acts_[size_t(l)];
      auto W = [&](Field f) { return P + off_[size_t(l)][size_t(f)]; };
      auto Dg = [&](Field f) { return G + off_[size_t(l)][size_t(f)]; };
      float* dst = dstate + l * ls;

      // Channel mix.
      for (int64_t j = 0; j < RC; ++j) {
        const float rr = A.rr[size_t(j)];
        da[size_t(j)] = dx[j] * A.kv[size_t(j)] * rr * (1 - rr);  // receptance pre-activation
        db[size_t(j)] = dx[j] * rr;                                // Wv relu()^2
      }
      linear_bwd(A.h2.data(), W(kFv), db.data(), rows, F, C, dh.data(), false, Dg(kFv), pool);
      for (int64_t j = 0; j < rows * F; ++j)
        dh[size_t(j)] *= 2 * std::max(A.hpre[size_t(j)], 0.0f);
      linear_bwd(A.xk2.data(), W(kFk), dh.data(), rows, C, F, dk.data(), false, Dg(kFk), pool);
      linear_bwd(A.xr2.data(), W(kFr), da.data(), rows, C, C, dr.data(), false, Dg(kFr), pool);
      for (int64_t j = 0; j < RC; ++j) {
        const float mk = W(kFMaaK)[j % C], mr = W(kFMaaR)[j % C];
        dxx[size_t(j)] = dk[size_t(j)] * (1 - mk) + dr[size_t(j)] * (1 - mr);
        dsx[size_t(j)] = dk[size_t(j)] * mk + dr[size_t(j)] * mr;
        Dg(kFMaaK)[j % C] += dk[size_t(j)] * A.sx2[size_t(j)];
        Dg(kFMaaR)[j % C] += dr[size_t(j)] * A.sx2[size_t(j)];
      }
      shift_bwd(dsx.data(), B, Tc, C, dst + C + C * N_, ss, dxx.data());
      layer_norm_bwd(A.x_mid.data(), W(kLn2W), A.ln2_mean.data(), A.ln2_rstd.data(), dxx.data(),
                     rows, C, dx, true, Dg(kLn2W), Dg(kLn2B));

      // Output projection, SiLU gate and GroupNorm.
      for (int64_t j = 0; j < RC; ++j) {
        const float gp = A.gpre[size_t(j)];
        da[size_t(j)] = A.z[size_t(j)] * gp * sigmoid(gp);  // the projection's input
      }
      linear_bwd(da.data(), W(kWo), dx, rows, C, C, db.data(), false, Dg(kWo), pool);
      for (int64_t j = 0; j < RC; ++j) {
        const float gp = A.gpre[size_t(j)], s = sigmoid(gp);
        dg[size_t(j)] = db[size_t(j)] * A.z[size_t(j)] * s * (1 + gp * (1 - s));
        db[size_t(j)] *= gp * s;  // the gradient of GroupNorm's output
      }
      for (int64_t h = 0; h < rows * H; ++h) {
        const int64_t o = h * N_, ho = (h % H) * N_;
        layer_norm_bwd(&A.y[size_t(o)], W(kLnxW) + ho, &A.gn_mean[size_t(h)],
                       &A.gn_rstd[size_t(h)], &db[size_t(o)], 1, N_, &dy[size_t(o)], false,
                       Dg(kLnxW) + ho, Dg(kLnxB) + ho);
      }
      std::fill(dr.begin(), dr.end(), 0.0f);
      std::fill(dk.begin(), dk.end(), 0.0f);
      std::fill(dv.begin(), dv.end(), 0.0f);
      wkv_bwd(A, W(kFaaaa), dy.data(), B, Tc, dst + C, ss, dr.data(), dk.data(), dv.data(),
              dw.data(), Dg(kFaaaa), pool);

      // Decay: d/dlog of exp(-exp(s)) is w * ln(w).
      for (int64_t j = 0; j < RC; ++j) {
        const float w = A.w[size_t(j)];
        dw[size_t(j)] *= w * std::log(w);
        Dg(kDecay)[j % C] += dw[size_t(j)];
      }
      float* dl = dlora.data();
      matmul_bwd(A.dd.data(), W(kDecayW2), dw.data(), rows, Dd_, C, dl, false, Dg(kDecayW2), pool);
      for (int64_t j = 0; j < rows * Dd_; ++j) dl[j] *= 1 - A.dd[size_t(j)] * A.dd[size_t(j)];
      linear_bwd(A.xb[kR].data(), W(kWr), dr.data(), rows, C, C, dxb[kR].data(), false, Dg(kWr),
                 pool);
      linear_bwd(A.xb[kK].data(), W(kWk), dk.data(), rows, C, C, dxb[kK].data(), false, Dg(kWk),
                 pool);
      linear_bwd(A.xb[kV].data(), W(kWv), dv.data(), rows, C, C, dxb[kV].data(), false, Dg(kWv),
                 pool);
      linear_bwd(A.xb[kG].data(), W(kWg), dg.data(), rows, C, C, dxb[kG].data(), false, Dg(kWg),
                 pool);
      matmul_bwd(A.xb[kW].data(), W(kDecayW1), dl, rows, C, Dd_, dxb[kW].data(), false,
                 Dg(kDecayW1), pool);

      // x_b = xx + sx * (maa_b + mix_b), mix_b = m_b @ w2[b], m = tanh(xxx @ w1).
      std::fill(dxx.begin(), dxx.end(), 0.0f);
      std::fill(dsx.begin(), dsx.end(), 0.0f);
      for (int b = 0; b < kBranches; ++b) {
        const float* maa = W(kMaa[b]);
        float* dmaa = Dg(kMaa[b]);
        float* dmix = da.data();
        for (int64_t j = 0; j < RC; ++j) {
          const float d = dxb[b][size_t(j)], sx = A.sx[size_t(j)];
          dxx[size_t(j)] += d;
          dsx[size_t(j)] += d * (maa[j % C] + A.mix[b][size_t(j)]);
          dmaa[j % C] += d * sx;
          dmix[j] = d * sx;
        }
        matmul_bwd(A.m[b].data(), W(kMaaW2) + b * D * C, dmix, rows, D, C, dl, false,
                   Dg(kMaaW2) + b * D * C, pool);
        for (int64_t t = 0; t < rows; ++t)
          for (int64_t d = 0; d < D; ++d) {
            const float m = A.m[b][size_t(t * D + d)];
            dm_all[size_t((t * kBranches + b) * D + d)] = dl[t * D + d] * (1 - m * m);
          }
      }
      float* dxxx = db.data();
      matmul_bwd(A.xxx.data(), W(kMaaW1), dm_all.data(), rows, C, kBranches * D, dxxx, false,
                 Dg(kMaaW1), pool);
      for (int64_t j = 0; j < RC; ++j) {
        const float mx = W(kMaaX)[j % C];
        dxx[size_t(j)] += dxxx[j];
        dsx[size_t(j)] += dxxx[j] * mx;
        Dg(kMaaX)[j % C] += dxxx[j] * A.sx[size_t(j)];
        dxx[size_t(j)] -= dsx[size_t(j)];  // sx = prev - xx
      }
      shift_bwd(dsx.data(), B, Tc, C, dst, ss, dxx.data());
      layer_norm_bwd(A.x_in.data(), W(kLn1W), A.ln1_mean.data(), A.ln1_rstd.data(), dxx.data(),
                     rows, C, dx, true, Dg(kLn1W), Dg(kLn1B));
    }
  }

 private:
  // y_j = sum_i r_i (u_i k_i v_j + S_ij); S_ij <- k_i v_j + w_i S_ij, for every (sequence,
  // head), keeping the state after each token in A.S and the start state in A.S0.
  void wkv_fwd(Acts& A, const float* u, int64_t B, int64_t Tc, float* state, int64_t ss,
               ThreadPool* pool) {
    const int64_t H = H_, N = N_, C = C_, NN = N * N;
    auto task = [&](int64_t bh) {
      const int64_t b = bh / H, h = bh % H;
      float* S = state + b * ss + h * NN;
      std::copy_n(S, NN, &A.S0[size_t(bh * NN)]);
      for (int64_t t = 0; t < Tc; ++t) {
        const int64_t row = b * Tc + t, o = row * C + h * N;
        const float *r = &A.r[size_t(o)], *k = &A.k[size_t(o)], *v = &A.v[size_t(o)];
        const float *w = &A.w[size_t(o)], *uh = u + h * N;
        float* y = &A.y[size_t(o)];
        std::fill_n(y, N, 0.0f);
        for (int64_t i = 0; i < N; ++i) {
          float* Si = S + i * N;
          for (int64_t j = 0; j < N; ++j) {
            const float kv = k[i] * v[j];
            y[j] += r[i] * (uh[i] * kv + Si[j]);
            Si[j] = kv + w[i] * Si[j];
          }
        }
        std::copy_n(S, NN, &A.S[size_t((row * H + h) * NN)]);
      }
    };
    if (pool)
      pool->parallel_for(B * H, task);
    else
      for (int64_t i = 0; i < B * H; ++i) task(i);
  }

  // Back-propagates wkv_fwd: dr, dk, dv accumulate, dw is set; du (the bonus time_faaaa)
  // accumulates per head after the parallel part, so threads never share it.
  void wkv_bwd(const Acts& A, const float* u, const float* dy, int64_t B, int64_t Tc,
               float* dstate, int64_t ss, float* dr, float* dk, float* dv, float* dw,
               float* du, ThreadPool* pool) {
    const int64_t H = H_, N = N_, C = C_, NN = N * N;
    std::vector<float> du_bh(size_t(B * H * N), 0.0f);
    auto task = [&](int64_t bh) {
      const int64_t b = bh / H, h = bh % H;
      float* dS = dstate + b * ss + h * NN;
      const float* uh = u + h * N;
      float* duh = &du_bh[size_t(bh * N)];
      for (int64_t t = Tc - 1; t >= 0; --t) {
        const int64_t row = b * Tc + t, o = row * C + h * N;
        const float* Sp = t > 0 ? &A.S[size_t(((row - 1) * H + h) * NN)] : &A.S0[size_t(bh * NN)];
        const float *r = &A.r[size_t(o)], *k = &A.k[size_t(o)], *v = &A.v[size_t(o)];
        const float* w = &A.w[size_t(o)];
        const float* dyo = dy + o;
        float dyv = 0;  // sum_j dy_j v_j
        for (int64_t j = 0; j < N; ++j) dyv += dyo[j] * v[j];
        for (int64_t i = 0; i < N; ++i) {
          float* dSi = dS + i * N;
          const float* Spi = Sp + i * N;
          float dri = uh[i] * k[i] * dyv, dki = r[i] * uh[i] * dyv, dwi = 0;
          for (int64_t j = 0; j < N; ++j) {
            dri += dyo[j] * Spi[j];
            dki += dSi[j] * v[j];
            dv[o + j] += (r[i] * uh[i] * k[i] * dyo[j]) + dSi[j] * k[i];
            dwi += dSi[j] * Spi[j];
            dSi[j] = w[i] * dSi[j] + r[i] * dyo[j];
          }
          dr[o + i] += dri;
          dk[o + i] += dki;
          dw[o + i] = dwi;
          duh[i] += r[i] * k[i] * dyv;
        }
      }
    };
    if (pool)
      pool->parallel_for(B * H, task);
    else
      for (int64_t i = 0; i < B * H; ++i) task(i);
    for (int64_t bh = 0; bh < B * H; ++bh)
      for (int64_t i = 0; i < N; ++i) du[(bh % H) * N + i] += du_bh[size_t(bh * N + i)];
  }

  int64_t H_ = 0, N_ = 0, F_ = 0, L_ = 0, Dm_ = 0, Dd_ = 0;
  std::vector<std::array<size_t, kFields>> off_;
  std::vector<Acts> acts_;
  Vec tmp_;
};

}  // namespace

std::unique_ptr<TrainModel> create_v6(const ParamSet& params) {
  return std::make_unique<V6Train>(params);
}

}  // namespace rwkv::train
