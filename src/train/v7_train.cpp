// RWKV-7 "Goose" (x070) in training form: the forward of src/model/v7.cpp over a chunk of B
// sequences, keeping its activations, and the hand-written backward pass of every step, down to
// the WKV delta-rule recurrence (whose state after every token of the chunk is kept).
// Tensor names and roles follow the official checkpoints (see src/model/v7.cpp).
#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>

#include "rwkv/error.h"
#include "train/chunked_model.h"
#include "train/train_math.h"

namespace rwkv::train {

namespace {

constexpr float kLnEps = 1e-5f;
constexpr float kLnxEps = 64e-5f;  // GroupNorm eps of the official code (1e-5 * 8^2)

// The six token-shift mixes, in the order of the official x_r, x_w, x_k, x_v, x_a, x_g.
enum Mix { kR, kW, kK, kV, kA, kG, kMixes };

// Every tensor of a layer, by its name after "blocks.<i>.".
enum Field {
  kLn1W, kLn1B, kLn2W, kLn2B, kXr, kXw, kXk, kXv, kXa, kXg, kW0, kW1, kW2, kA0, kA1, kA2,
  kV0, kV1, kV2, kG1, kG2, kKk, kKa, kRk, kWr, kWk, kWv, kWo, kLnxW, kLnxB, kFx, kFk, kFv,
  kFields
};
constexpr const char* kFieldNames[kFields] = {
    "ln1.weight", "ln1.bias", "ln2.weight", "ln2.bias", "att.x_r", "att.x_w", "att.x_k",
    "att.x_v", "att.x_a", "att.x_g", "att.w0", "att.w1", "att.w2", "att.a0", "att.a1",
    "att.a2", "att.v0", "att.v1", "att.v2", "att.g1", "att.g2", "att.k_k", "att.k_a",
    "att.r_k", "att.receptance.weight", "att.key.weight", "att.value.weight",
    "att.output.weight", "att.ln_x.weight", "att.ln_x.bias", "ffn.x_k", "ffn.key.weight",
    "ffn.value.weight"};

using Vec = std::vector<float>;

// What the backward pass of one layer needs from its forward, for the rows of one chunk.
struct Acts {
  Vec x_in, xx, ln1_mean, ln1_rstd, sx, xm[kMixes];
  Vec r, k0, k, v0, v, w, ws, tw, a, ha, g, hg, kk, kk_norm, hv, sgv;
  Vec y, gn_mean, gn_rstd, zb, bonus, S, S0;
  Vec x_mid, xx2, ln2_mean, ln2_rstd, sx2, xk2, hpre, h2;
};

void fit(Vec& v, int64_t n) { v.resize(size_t(n)); }

class V7Train final : public ChunkedModel {
 public:
  explicit V7Train(const ParamSet& p) : ChunkedModel(p) {
    const int64_t C = C_;
    const ParamInfo& r_k = p.info("blocks.0.att.r_k");
    if (r_k.shape.size() != 2 || r_k.shape[0] * r_k.shape[1] != C)
      throw Error("blocks.0.att.r_k should be (n_head, head_size) covering n_embd");
    H_ = r_k.shape[0];
    N_ = r_k.shape[1];
    auto cols = [&](const std::string& name) {
      const ParamInfo& i = p.info(name);
      if (i.shape.size() != 2) throw Error("tensor " + name + " should be a matrix");
      return i.shape[1];
    };
    Dw_ = cols("blocks.0.att.w1");
    Da_ = cols("blocks.0.att.a1");
    Dg_ = cols("blocks.0.att.g1");
    F_ = p.info("blocks.0.ffn.key.weight").shape[0];
    for (L_ = 0; p.contains("blocks." + std::to_string(L_) + ".ln1.weight");) ++L_;
    Dv_ = L_ > 1 ? cols("blocks.1.att.v1") : 0;
    const std::vector<int64_t> shapes[kFields] = {
        {C},      {C},      {C},      {C},      {C},      {C},      {C},      {C},  {C},
        {C},      {C},      {C, Dw_}, {Dw_, C}, {C},      {C, Da_}, {Da_, C}, {C},  {C, Dv_},
        {Dv_, C}, {C, Dg_}, {Dg_, C}, {C},      {C},      {H_, N_}, {C, C},   {C, C},
        {C, C},   {C, C},   {C},      {C},      {C},      {F_, C},  {C, F_}};
    off_.resize(size_t(L_));
    for (int64_t l = 0; l < L_; ++l)
      for (int f = 0; f < kFields; ++f) {
        // Layer 0 defines the value residual: its v0/v1/v2 (if present) are unused.
        if (l == 0 && (f == kV0 || f == kV1 || f == kV2)) continue;
        off_[size_t(l)][size_t(f)] =
            offset("blocks." + std::to_string(l) + "." + kFieldNames[f], shapes[f]);
      }
    acts_.resize(size_t(L_));
  }

  size_t state_size() const override { return size_t(L_ * (2 * C_ + C_ * N_)); }

 protected:
  void layers_fwd(const float* P, float* x, int64_t B, int64_t Tc, float* state,
                  ThreadPool* pool) override {
    const int64_t C = C_, H = H_, N = N_, F = F_, rows = B * Tc, RC = rows * C;
    const int64_t ss = int64_t(state_size()), ls = 2 * C + C * N;
    const float decay_scale = std::exp(-0.5f);
    fit(v_first_, RC);
    fit(tmp_, rows * std::max({C, F, Dw_, Da_, Dv_, Dg_}));
    for (int64_t l = 0; l < L_; ++l) {
      Acts& A = acts_[size_t(l)];
      auto W = [&](Field f) { return P + off_[size_t(l)][size_t(f)]; };
      for (Vec* v : {&A.x_in, &A.xx, &A.sx, &A.r, &A.k0, &A.k, &A.v0, &A.v, &A.w, &A.ws, &A.a,
                     &A.g, &A.kk, &A.y, &A.zb, &A.x_mid, &A.xx2, &A.sx2, &A.xk2})
        fit(*v, RC);
      for (Vec& v : A.xm) fit(v, RC);
      for (Vec* v : {&A.ln1_mean, &A.ln1_rstd, &A.ln2_mean, &A.ln2_rstd}) fit(*v, rows);
      for (Vec* v : {&A.kk_norm, &A.gn_mean, &A.gn_rstd, &A.bonus}) fit(*v, rows * H);
      fit(A.tw, rows * Dw_);
      fit(A.ha, rows * Da_);
      fit(A.hg, rows * Dg_);
      fit(A.hpre, rows * F);
      fit(A.h2, rows * F);
      fit(A.S, rows * H * N * N);
      fit(A.S0, B * H * N * N);
      float* st = state + l * ls;

      std::copy_n(x, RC, A.x_in.data());
      layer_norm_fwd(x, W(kLn1W), W(kLn1B), rows, C, kLnEps, A.xx.data(), A.ln1_mean.data(),
                     A.ln1_rstd.data());
      shift_fwd(A.xx.data(), B, Tc, C, st, ss, A.sx.data());
      for (int64_t j = 0; j < RC; ++j) A.sx[size_t(j)] -= A.xx[size_t(j)];
      for (int m = 0; m < kMixes; ++m) {
        const float* mix = W(Field(kXr + m));
        for (int64_t j = 0; j < RC; ++j)
          A.xm[m][size_t(j)] = A.xx[size_t(j)] + A.sx[size_t(j)] * mix[j % C];
      }
      linear_fwd(A.xm[kR].data(), W(kWr), rows, C, C, A.r.data(), pool);
      linear_fwd(A.xm[kK].data(), W(kWk), rows, C, C, A.k0.data(), pool);
      linear_fwd(A.xm[kV].data(), W(kWv), rows, C, C, A.v0.data(), pool);

      // w = exp(-e^-0.5 * sigmoid(w0 + tanh(xw @ w1) @ w2))
      matmul_fwd(A.xm[kW].data(), W(kW1), rows, C, Dw_, A.tw.data(), pool);
      for (float& h : A.tw) h = std::tanh(h);
      matmul_fwd(A.tw.data(), W(kW2), rows, Dw_, C, A.w.data(), pool);
      for (int64_t j = 0; j < RC; ++j) {
        const float s = sigmoid(W(kW0)[j % C] + A.w[size_t(j)]);
        A.ws[size_t(j)] = s;
        A.w[size_t(j)] = std::exp(-decay_scale * s);
      }
      // a = sigmoid(a0 + (xa @ a1) @ a2)
      matmul_fwd(A.xm[kA].data(), W(kA1), rows, C, Da_, A.ha.data(), pool);
      matmul_fwd(A.ha.data(), W(kA2), rows, Da_, C, A.a.data(), pool);
      for (int64_t j = 0; j < RC; ++j) A.a[size_t(j)] = sigmoid(W(kA0)[j % C] + A.a[size_t(j)]);
      // g = sigmoid(xg @ g1) @ g2
      matmul_fwd(A.xm[kG].data(), W(kG1), rows, C, Dg_, A.hg.data(), pool);
      for (float& h : A.hg) h = sigmoid(h);
      matmul_fwd(A.hg.data(), W(kG2), rows, Dg_, C, A.g.data(), pool);

      // kk = per-head L2-normalised k0 * k_k; then k = k0 * (1 + (a - 1) * k_a).
      for (int64_t j = 0; j < RC; ++j) A.kk[size_t(j)] = A.k0[size_t(j)] * W(kKk)[j % C];
      for (int64_t h = 0; h < rows * H; ++h) {
        float* kh = &A.kk[size_t(h * N)];
        float ss2 = 0;
        for (int64_t j = 0; j < N; ++j) ss2 += kh[j] * kh[j];
        const float norm = std::max(std::sqrt(ss2), 1e-12f);
        A.kk_norm[size_t(h)] = norm;
        for (int64_t j = 0; j < N; ++j) kh[j] /= norm;
      }
      for (int64_t j = 0; j < RC; ++j)
        A.k[size_t(j)] = A.k0[size_t(j)] * (1 + (A.a[size_t(j)] - 1) * W(kKa)[j % C]);
      // Value residual: layer 0 defines v_first, later layers mix it in by a gate.
      if (l == 0) {
        A.v = A.v0;
        std::copy_n(A.v.data(), RC, v_first_.data());
      } else {
        fit(A.hv, rows * Dv_);
        fit(A.sgv, RC);
        matmul_fwd(A.xm[kV].data(), W(kV1), rows, C, Dv_, A.hv.data(), pool);
        matmul_fwd(A.hv.data(), W(kV2), rows, Dv_, C, A.sgv.data(), pool);
        for (int64_t j = 0; j < RC; ++j) {
          const float s = sigmoid(W(kV0)[j % C] + A.sgv[size_t(j)]);
          A.sgv[size_t(j)] = s;
          A.v[size_t(j)] = A.v0[size_t(j)] + (v_first_[size_t(j)] - A.v0[size_t(j)]) * s;
        }
      }

      wkv_fwd(A, B, Tc, st + C, ss, pool);
      // GroupNorm per head, plus the bonus (sum_j r_j k_j r_k[h][j]) * v.
      for (int64_t h = 0; h < rows * H; ++h) {
        const int64_t o = h * N, ho = (h % H) * N;
        layer_norm_fwd(&A.y[size_t(o)], W(kLnxW) + ho, W(kLnxB) + ho, 1, N, kLnxEps,
                       &A.zb[size_t(o)], &A.gn_mean[size_t(h)], &A.gn_rstd[size_t(h)]);
        float s = 0;
        for (int64_t j = 0; j < N; ++j) s += A.r[size_t(o + j)] * A.k[size_t(o + j)] * W(kRk)[ho + j];
        A.bonus[size_t(h)] = s;
        for (int64_t j = 0; j < N; ++j) A.zb[size_t(o + j)] += s * A.v[size_t(o + j)];
      }
      float* yg = tmp_.data();
      for (int64_t j = 0; j < RC; ++j) yg[j] = A.zb[size_t(j)] * A.g[size_t(j)];
      linear_fwd(yg, W(kWo), rows, C, C, A.x_mid.data(), pool);
      for (int64_t j = 0; j < RC; ++j) A.x_mid[size_t(j)] += x[j];

      // Feed-forward: Wv relu(Wk xk)^2.
      layer_norm_fwd(A.x_mid.data(), W(kLn2W), W(kLn2B), rows, C, kLnEps, A.xx2.data(),
                     A.ln2_mean.data(), A.ln2_rstd.data());
      shift_fwd(A.xx2.data(), B, Tc, C, st + C + C * N, ss, A.sx2.data());
      for (int64_t j = 0; j < RC; ++j) {
        A.sx2[size_t(j)] -= A.xx2[size_t(j)];
        A.xk2[size_t(j)] = A.xx2[size_t(j)] + A.sx2[size_t(j)] * W(kFx)[j % C];
      }
      linear_fwd(A.xk2.data(), W(kFk), rows, C, F, A.hpre.data(), pool);
      for (int64_t j = 0; j < rows * F; ++j) {
        const float h = std::max(A.hpre[size_t(j)], 0.0f);
        A.h2[size_t(j)] = h * h;
      }
      linear_fwd(A.h2.data(), W(kFv), rows, F, C, x, pool);
      for (int64_t j = 0; j < RC; ++j) x[j] += A.x_mid[size_t(j)];
    }
  }

  void layers_bwd(const float* P, float* G, float* dx, int64_t B, int64_t Tc, float* dstate,
                  ThreadPool* pool) override {
    const int64_t C = C_, H = H_, N = N_, F = F_, rows = B * Tc, RC = rows * C;
    const int64_t ss = int64_t(state_size()), ls = 2 * C + C * N;
    const float decay_scale = std::exp(-0.5f);
    const size_t n = size_t(RC);
    Vec dvf(n, 0.0f), dxx(n), dprev(n), dh(size_t(rows * F)), dr(n), dk(n), dv(n), dw(n), da(n);
    Vec dkk(n), dg(n), dzb(n), dy(n), dtmp(n), dlora(size_t(rows * std::max({Dw_, Da_, Dv_, Dg_})));
    Vec dxm[kMixes];
    for (Vec& v : dxm) v.assign(size_t(RC), 0.0f);
    for (int64_t l = L_ - 1; l >= 0; --l) {
      const Acts& A = acts_[size_t(l)];
      auto W = [&](Field f) { return P + off_[size_t(l)][size_t(f)]; };
      auto D = [&](Field f) { return G + off_[size_t(l)][size_t(f)]; };
      float* dst = dstate + l * ls;

      // Feed-forward.
      linear_bwd(A.h2.data(), W(kFv), dx, rows, F, C, dh.data(), false, D(kFv), pool);
      for (int64_t j = 0; j < rows * F; ++j)
        dh[size_t(j)] *= 2 * std::max(A.hpre[size_t(j)], 0.0f);
      float* dxk = dtmp.data();
      linear_bwd(A.xk2.data(), W(kFk), dh.data(), rows, C, F, dxk, false, D(kFk), pool);
      for (int64_t j = 0; j < RC; ++j) {
        const float m = W(kFx)[j % C];
        dxx[size_t(j)] = dxk[j] * (1 - m);
        dprev[size_t(j)] = dxk[j] * m;
        D(kFx)[j % C] += dxk[j] * A.sx2[size_t(j)];
      }
      shift_bwd(dprev.data(), B, Tc, C, dst + C + C * N, ss, dxx.data());
      layer_norm_bwd(A.x_mid.data(), W(kLn2W), A.ln2_mean.data(), A.ln2_rstd.data(), dxx.data(),
                     rows, C, dx, true, D(kLn2W), D(kLn2B));

      // Output projection, gate, bonus and GroupNorm.
      float* yg = dtmp.data();
      for (int64_t j = 0; j < RC; ++j) yg[j] = A.zb[size_t(j)] * A.g[size_t(j)];
      Vec& dyg = dprev;
      linear_bwd(yg, W(kWo), dx, rows, C, C, dyg.data(), false, D(kWo), pool);
      for (int64_t j = 0; j < RC; ++j) {
        dg[size_t(j)] = dyg[size_t(j)] * A.zb[size_t(j)];
        dzb[size_t(j)] = dyg[size_t(j)] * A.g[size_t(j)];
      }
      for (int64_t h = 0; h < rows * H; ++h) {
        const int64_t o = h * N, ho = (h % H) * N;
        float ds = 0;
        for (int64_t j = 0; j < N; ++j) {
          ds += dzb[size_t(o + j)] * A.v[size_t(o + j)];
          dv[size_t(o + j)] = dzb[size_t(o + j)] * A.bonus[size_t(h)];
        }
        for (int64_t j = 0; j < N; ++j) {
          const float r = A.r[size_t(o + j)], k = A.k[size_t(o + j)], rk = W(kRk)[ho + j];
          dr[size_t(o + j)] = ds * k * rk;
          dk[size_t(o + j)] = ds * r * rk;
          D(kRk)[ho + j] += ds * r * k;
        }
        layer_norm_bwd(&A.y[size_t(o)], W(kLnxW) + ho, &A.gn_mean[size_t(h)],
                       &A.gn_rstd[size_t(h)], &dzb[size_t(o)], 1, N, &dy[size_t(o)], false,
                       D(kLnxW) + ho, D(kLnxB) + ho);
      }

      wkv_bwd(A, dy.data(), B, Tc, dst + C, ss, dr.data(), dw.data(), dk.data(), dv.data(),
              dkk.data(), da.data(), pool);

      // k = k0 * (1 + (a - 1) * k_a) and kk = normalize(k0 * k_k), both from k0.
      float* dk0 = dtmp.data();
      for (int64_t j = 0; j < RC; ++j) {
        const float ka = W(kKa)[j % C], k0 = A.k0[size_t(j)], a = A.a[size_t(j)];
        dk0[j] = dk[size_t(j)] * (1 + (a - 1) * ka);
        da[size_t(j)] += dk[size_t(j)] * k0 * ka;
        D(kKa)[j % C] += dk[size_t(j)] * k0 * (a - 1);
      }
      for (int64_t h = 0; h < rows * H; ++h) {
        const int64_t o = h * N;
        const float norm = A.kk_norm[size_t(h)];
        float dot = 0;
        for (int64_t j = 0; j < N; ++j) dot += A.kk[size_t(o + j)] * dkk[size_t(o + j)];
        // Where the norm was clamped to 1e-12 it is a constant.
        if (norm <= 1e-12f) dot = 0;
        for (int64_t j = 0; j < N; ++j) {
          const int64_t c = (o + j) % C;
          const float du = (dkk[size_t(o + j)] - A.kk[size_t(o + j)] * dot) / norm;
          dk0[o + j] += du * W(kKk)[c];
          D(kKk)[c] += du * A.k0[size_t(o + j)];
        }
      }

      // Value residual.
      float* dl = dlora.data();
      if (l == 0) {
        for (int64_t j = 0; j < RC; ++j) dv[size_t(j)] += dvf[size_t(j)];
        linear_bwd(A.xm[kV].data(), W(kWv), dv.data(), rows, C, C, dxm[kV].data(), false,
                   D(kWv), pool);
      } else {
        float* dz = dy.data();  // dy is free again
        for (int64_t j = 0; j < RC; ++j) {
          const float s = A.sgv[size_t(j)], vf = v_first_[size_t(j)], v0 = A.v0[size_t(j)];
          const float d = dv[size_t(j)];
          dvf[size_t(j)] += d * s;
          dz[j] = d * (vf - v0) * s * (1 - s);
          dv[size_t(j)] = d * (1 - s);
          D(kV0)[j % C] += dz[j];
        }
        linear_bwd(A.xm[kV].data(), W(kWv), dv.data(), rows, C, C, dxm[kV].data(), false,
                   D(kWv), pool);
        matmul_bwd(A.hv.data(), W(kV2), dz, rows, Dv_, C, dl, false, D(kV2), pool);
        matmul_bwd(A.xm[kV].data(), W(kV1), dl, rows, C, Dv_, dxm[kV].data(), true, D(kV1),
                   pool);
      }
      // a = sigmoid(a0 + (xa @ a1) @ a2)
      for (int64_t j = 0; j < RC; ++j) {
        const float a = A.a[size_t(j)];
        da[size_t(j)] *= a * (1 - a);
        D(kA0)[j % C] += da[size_t(j)];
      }
      matmul_bwd(A.ha.data(), W(kA2), da.data(), rows, Da_, C, dl, false, D(kA2), pool);
      matmul_bwd(A.xm[kA].data(), W(kA1), dl, rows, C, Da_, dxm[kA].data(), false, D(kA1), pool);
      // g = sigmoid(xg @ g1) @ g2
      matmul_bwd(A.hg.data(), W(kG2), dg.data(), rows, Dg_, C, dl, false, D(kG2), pool);
      for (int64_t j = 0; j < rows * Dg_; ++j) dl[j] *= A.hg[size_t(j)] * (1 - A.hg[size_t(j)]);
      matmul_bwd(A.xm[kG].data(), W(kG1), dl, rows, C, Dg_, dxm[kG].data(), false, D(kG1), pool);
      // w = exp(-e^-0.5 * s), s = sigmoid(w0 + tanh(xw @ w1) @ w2)
      for (int64_t j = 0; j < RC; ++j) {
        const float s = A.ws[size_t(j)];
        dw[size_t(j)] *= -A.w[size_t(j)] * decay_scale * s * (1 - s);
        D(kW0)[j % C] += dw[size_t(j)];
      }
      matmul_bwd(A.tw.data(), W(kW2), dw.data(), rows, Dw_, C, dl, false, D(kW2), pool);
      for (int64_t j = 0; j < rows * Dw_; ++j) dl[j] *= 1 - A.tw[size_t(j)] * A.tw[size_t(j)];
      matmul_bwd(A.xm[kW].data(), W(kW1), dl, rows, C, Dw_, dxm[kW].data(), false, D(kW1), pool);
      linear_bwd(A.xm[kR].data(), W(kWr), dr.data(), rows, C, C, dxm[kR].data(), false, D(kWr),
                 pool);
      linear_bwd(A.xm[kK].data(), W(kWk), dk0, rows, C, C, dxm[kK].data(), false, D(kWk), pool);

      // Token-shift mixes: xm = xx + sx * mix with sx = prev - xx.
      std::fill(dxx.begin(), dxx.end(), 0.0f);
      std::fill(dprev.begin(), dprev.end(), 0.0f);
      for (int m = 0; m < kMixes; ++m) {
        const float* mix = W(Field(kXr + m));
        float* dmix = D(Field(kXr + m));
        for (int64_t j = 0; j < RC; ++j) {
          const float d = dxm[m][size_t(j)];
          dxx[size_t(j)] += d * (1 - mix[j % C]);
          dprev[size_t(j)] += d * mix[j % C];
          dmix[j % C] += d * A.sx[size_t(j)];
        }
      }
      shift_bwd(dprev.data(), B, Tc, C, dst, ss, dxx.data());
      layer_norm_bwd(A.x_in.data(), W(kLn1W), A.ln1_mean.data(), A.ln1_rstd.data(), dxx.data(),
                     rows, C, dx, true, D(kLn1W), D(kLn1B));
    }
  }

 private:
  // The WKV recurrence over the chunk for every (sequence, head), keeping the state after each
  // token in A.S and the start state in A.S0:
  //   sa = S kk' (kk' = -kk), S <- S diag(w) + sa (kk * a)^T + v k^T, y = S r.
  void wkv_fwd(Acts& A, int64_t B, int64_t Tc, float* state, int64_t ss, ThreadPool* pool) {
    const int64_t H = H_, N = N_, C = C_, NN = N * N;
    auto task = [&](int64_t bh) {
      const int64_t b = bh / H, h = bh % H;
      float* S = state + b * ss + h * NN;
      std::copy_n(S, NN, &A.S0[size_t(bh * NN)]);
      for (int64_t t = 0; t < Tc; ++t) {
        const int64_t row = b * Tc + t, o = row * C + h * N;
        const float *r = &A.r[size_t(o)], *w = &A.w[size_t(o)], *k = &A.k[size_t(o)];
        const float *v = &A.v[size_t(o)], *kk = &A.kk[size_t(o)], *a = &A.a[size_t(o)];
        float* y = &A.y[size_t(o)];
        for (int64_t i = 0; i < N; ++i) {
          float* Si = S + i * N;
          float sa = 0;
          for (int64_t j = 0; j < N; ++j) sa -= Si[j] * kk[j];
          float yi = 0;
          for (int64_t j = 0; j < N; ++j) {
            Si[j] = Si[j] * w[j] + sa * kk[j] * a[j] + v[i] * k[j];
            yi += Si[j] * r[j];
          }
          y[i] = yi;
        }
        std::copy_n(S, NN, &A.S[size_t((row * H + h) * NN)]);
      }
    };
    if (pool)
      pool->parallel_for(B * H, task);
    else
      for (int64_t i = 0; i < B * H; ++i) task(i);
  }

  // Back-propagates wkv_fwd. dS (the state's gradient in `dstate`) runs backwards through the
  // chunk; dr, dk, dv accumulate, dw, dkk, da are set.
  void wkv_bwd(const Acts& A, const float* dy, int64_t B, int64_t Tc, float* dstate, int64_t ss,
               float* dr, float* dw, float* dk, float* dv, float* dkk, float* da,
               ThreadPool* pool) {
    const int64_t H = H_, N = N_, C = C_, NN = N * N;
    auto task = [&](int64_t bh) {
      const int64_t b = bh / H, h = bh % H;
      float* dS = dstate + b * ss + h * NN;
      const size_t n = size_t(N);
      std::vector<float> sa(n), dsa(n), db(n);
      for (int64_t t = Tc - 1; t >= 0; --t) {
        const int64_t row = b * Tc + t, o = row * C + h * N;
        const float* S = &A.S[size_t((row * H + h) * NN)];
        const float* Sp = t > 0 ? &A.S[size_t(((row - 1) * H + h) * NN)] : &A.S0[size_t(bh * NN)];
        const float *r = &A.r[size_t(o)], *w = &A.w[size_t(o)], *k = &A.k[size_t(o)];
        const float *v = &A.v[size_t(o)], *kk = &A.kk[size_t(o)], *a = &A.a[size_t(o)];
        const float* dyo = dy + o;
        std::fill(db.begin(), db.end(), 0.0f);
        for (int64_t j = 0; j < N; ++j) {
          dw[o + j] = 0;
          dkk[o + j] = 0;
        }
        for (int64_t i = 0; i < N; ++i) {
          const float* Spi = Sp + i * N;
          float s = 0;
          for (int64_t j = 0; j < N; ++j) s -= Spi[j] * kk[j];
          sa[size_t(i)] = s;
        }
        for (int64_t i = 0; i < N; ++i) {
          float* dSi = dS + i * N;
          const float *Si = S + i * N, *Spi = Sp + i * N;
          float dvi = 0, dsai = 0;
          for (int64_t j = 0; j < N; ++j) {
            dSi[j] += dyo[i] * r[j];  // y = S r
            dr[o + j] += Si[j] * dyo[i];
            dw[o + j] += dSi[j] * Spi[j];
            dvi += dSi[j] * k[j];
            dk[o + j] += dSi[j] * v[i];
            dsai += dSi[j] * kk[j] * a[j];
            db[size_t(j)] += dSi[j] * sa[size_t(i)];
          }
          dv[o + i] += dvi;
          dsa[size_t(i)] = dsai;
        }
        // dS_prev = dS diag(w) + dsa (-kk)^T; and -kk's gradient from sa = S_prev (-kk).
        for (int64_t i = 0; i < N; ++i) {
          float* dSi = dS + i * N;
          const float* Spi = Sp + i * N;
          for (int64_t j = 0; j < N; ++j) {
            dkk[o + j] -= dsa[size_t(i)] * Spi[j];
            dSi[j] = dSi[j] * w[j] - dsa[size_t(i)] * kk[j];
          }
        }
        for (int64_t j = 0; j < N; ++j) {
          dkk[o + j] += db[size_t(j)] * a[j];
          da[o + j] = db[size_t(j)] * kk[j];
        }
      }
    };
    if (pool)
      pool->parallel_for(B * H, task);
    else
      for (int64_t i = 0; i < B * H; ++i) task(i);
  }

  int64_t H_ = 0, N_ = 0, F_ = 0, L_ = 0, Dw_ = 0, Da_ = 0, Dv_ = 0, Dg_ = 0;
  std::vector<std::array<size_t, kFields>> off_;
  std::vector<Acts> acts_;
  Vec v_first_, tmp_;
};

}  // namespace

std::unique_ptr<TrainModel> create_v7(const ParamSet& params) {
  return std::make_unique<V7Train>(params);
}

}  // namespace rwkv::train
