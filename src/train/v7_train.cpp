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
#include "train/wkv7_train.h"

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
  Vec sa, y, gn_mean, gn_rstd, zb, bonus, S;
  Vec x_mid, xx2, ln2_mean, ln2_rstd, sx2, xk2, hpre, h2;
};

// The backward pass's gradients of one layer's activations (kept from call to call).
struct Grads {
  Vec dvf, dxx, dh, dr, dk, dv, dw, da, dkk, dg, dzb, dy, dtmp, dlora, dxm[kMixes];
};

void fit(Vec& v, int64_t n) { v.resize(size_t(n)); }

// max(x, 0) without a branch (half the pre-activations are negative, at random): exact, as
// x + |x| is 2x or 0.
inline float relu(float x) { return 0.5f * (x + std::fabs(x)); }

// f applied to every element of v, in pieces over the pool.
template <class Fn>
void apply(ThreadPool* pool, Vec& v, Fn f) {
  parallel_ranges(pool, int64_t(v.size()), 16, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) v[size_t(i)] = f(v[size_t(i)]);
  });
}

// y += x over n floats.
void add(ThreadPool* pool, int64_t n, const float* x, float* y) {
  parallel_ranges(pool, n, 16, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) y[i] += x[i];
  });
}

// The token shift and the mixes of a chunk of B sequences of T rows of x (C wide), by columns:
// sx = prev - x (prev as shift_fwd, `carry` updated the same way) and out[m] = x + sx * mix[m].
void shift_mix_fwd(const float* x, int64_t B, int64_t T, int64_t C, float* carry,
                   int64_t carry_stride, int n, const float* const* mix, float* const* out,
                   float* sx, ThreadPool* pool) {
  parallel_ranges(pool, C, 16, [&](int64_t c0, int64_t c1) {
    for (int64_t b = 0; b < B; ++b) {
      float* saved = carry + b * carry_stride;
      for (int64_t t = 0; t < T; ++t) {
        const int64_t o = (b * T + t) * C;
        const float* prev = t > 0 ? x + o - C : saved;
        for (int64_t c = c0; c < c1; ++c) sx[o + c] = prev[c] - x[o + c];
        for (int m = 0; m < n; ++m)
          for (int64_t c = c0; c < c1; ++c) out[m][o + c] = x[o + c] + sx[o + c] * mix[m][c];
      }
      std::copy(x + (b * T + T - 1) * C + c0, x + (b * T + T - 1) * C + c1, saved + c0);
    }
  });
}

// The gradient of shift_mix_fwd from dout[m]: sets dx, adds to dmix[m], and passes the carry's
// gradient on as shift_bwd does.
void shift_mix_bwd(const float* const* dout, const float* const* mix, int n, const float* sx,
                   int64_t B, int64_t T, int64_t C, float* dcarry, int64_t carry_stride,
                   float* dx, float* const* dmix, ThreadPool* pool) {
  parallel_ranges(pool, C, 16, [&](int64_t c0, int64_t c1) {
    Vec first(size_t(c1 - c0));  // the gradient of the first row's prev: the new carry's
    for (int64_t b = 0; b < B; ++b) {
      float* dc = dcarry + b * carry_stride;
      for (int64_t t = 0; t < T; ++t) {
        const int64_t o = (b * T + t) * C;
        for (int64_t c = c0; c < c1; ++c) {
          float dxc = 0, dprev = 0;
          for (int m = 0; m < n; ++m) {
            const float dm = dout[m][o + c];
            dxc += dm * (1 - mix[m][c]);
            dprev += dm * mix[m][c];
            dmix[m][c] += dm * sx[o + c];
          }
          dx[o + c] = dxc;
          if (t > 0)
            dx[o - C + c] += dprev;
          else
            first[size_t(c - c0)] = dprev;
        }
      }
      const int64_t last = (b * T + T - 1) * C;
      for (int64_t c = c0; c < c1; ++c) {
        dx[last + c] += dc[c];
        dc[c] = first[size_t(c - c0)];
      }
    }
  });
}

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
                     &A.g, &A.kk, &A.sa, &A.y, &A.zb, &A.x_mid, &A.xx2, &A.sx2, &A.xk2})
        fit(*v, RC);
      for (Vec& v : A.xm) fit(v, RC);
      for (Vec* v : {&A.ln1_mean, &A.ln1_rstd, &A.ln2_mean, &A.ln2_rstd}) fit(*v, rows);
      for (Vec* v : {&A.kk_norm, &A.gn_mean, &A.gn_rstd, &A.bonus}) fit(*v, rows * H);
      fit(A.tw, rows * Dw_);
      fit(A.ha, rows * Da_);
      fit(A.hg, rows * Dg_);
      fit(A.hpre, rows * F);
      fit(A.h2, rows * F);
      fit(A.S, B * H * wkv7_saved_size(Tc, N));
      if (l > 0) {
        fit(A.hv, rows * Dv_);
        fit(A.sgv, RC);
      }
      float* st = state + l * ls;

      std::copy_n(x, RC, A.x_in.data());
      layer_norm_fwd(x, W(kLn1W), W(kLn1B), rows, C, kLnEps, A.xx.data(), A.ln1_mean.data(),
                     A.ln1_rstd.data(), pool);
      const float* mixes[kMixes];
      float* xm[kMixes];
      for (int m = 0; m < kMixes; ++m) mixes[m] = W(Field(kXr + m)), xm[m] = A.xm[m].data();
      shift_mix_fwd(A.xx.data(), B, Tc, C, st, ss, kMixes, mixes, xm, A.sx.data(), pool);
      linear_fwd(A.xm[kR].data(), W(kWr), rows, C, C, A.r.data(), pool);
      linear_fwd(A.xm[kK].data(), W(kWk), rows, C, C, A.k0.data(), pool);
      linear_fwd(A.xm[kV].data(), W(kWv), rows, C, C, A.v0.data(), pool);
      // The LoRA paths: tanh(xw @ w1) @ w2, (xa @ a1) @ a2, sigmoid(xg @ g1) @ g2 and for the
      // value residual (xv @ v1) @ v2.
      matmul_fwd(A.xm[kW].data(), W(kW1), rows, C, Dw_, A.tw.data(), pool);
      apply(pool, A.tw, [](float h) { return std::tanh(h); });
      matmul_fwd(A.tw.data(), W(kW2), rows, Dw_, C, A.w.data(), pool);
      matmul_fwd(A.xm[kA].data(), W(kA1), rows, C, Da_, A.ha.data(), pool);
      matmul_fwd(A.ha.data(), W(kA2), rows, Da_, C, A.a.data(), pool);
      matmul_fwd(A.xm[kG].data(), W(kG1), rows, C, Dg_, A.hg.data(), pool);
      apply(pool, A.hg, sigmoid);
      matmul_fwd(A.hg.data(), W(kG2), rows, Dg_, C, A.g.data(), pool);
      if (l > 0) {
        matmul_fwd(A.xm[kV].data(), W(kV1), rows, C, Dv_, A.hv.data(), pool);
        matmul_fwd(A.hv.data(), W(kV2), rows, Dv_, C, A.sgv.data(), pool);
      }

      // By whole heads: w = exp(-e^-0.5 * sigmoid(w0 + ...)), a = sigmoid(a0 + ...),
      // kk = per-head L2-normalised k0 * k_k, k = k0 * (1 + (a - 1) * k_a), and the value
      // residual: layer 0 defines v_first, later layers mix it in by a gate.
      parallel_ranges(pool, C, N, [&](int64_t c0, int64_t c1) {
        const float *w0 = W(kW0), *a0 = W(kA0), *k_k = W(kKk), *k_a = W(kKa);
        const float* v0p = l > 0 ? W(kV0) : nullptr;
        for (int64_t row = 0; row < rows; ++row)
          for (int64_t c = c0; c < c1; ++c) {
            const size_t j = size_t(row * C + c);
            const float s = sigmoid(w0[c] + A.w[j]);
            A.ws[j] = s;
            A.w[j] = std::exp(-decay_scale * s);
            const float a = sigmoid(a0[c] + A.a[j]), k0 = A.k0[j];
            A.a[j] = a;
            A.kk[j] = k0 * k_k[c];
            A.k[j] = k0 * (1 + (a - 1) * k_a[c]);
            if (l == 0) {
              A.v[j] = v_first_[j] = A.v0[j];
            } else {
              const float g = sigmoid(v0p[c] + A.sgv[j]);
              A.sgv[j] = g;
              A.v[j] = A.v0[j] + (v_first_[j] - A.v0[j]) * g;
            }
          }
        for (int64_t row = 0; row < rows; ++row)
          for (int64_t h = c0 / N; h < c1 / N; ++h) {
            float* kh = &A.kk[size_t(row * C + h * N)];
            float ss2 = 0;
            for (int64_t j = 0; j < N; ++j) ss2 += kh[j] * kh[j];
            const float norm = std::max(std::sqrt(ss2), 1e-12f);
            A.kk_norm[size_t(row * H + h)] = norm;
            for (int64_t j = 0; j < N; ++j) kh[j] /= norm;
          }
      });

      wkv_fwd(A, B, Tc, st + C, ss, pool);
      // GroupNorm per head, plus the bonus (sum_j r_j k_j r_k[h][j]) * v, times the gate.
      float* yg = tmp_.data();
      parallel_ranges(pool, C, N, [&](int64_t c0, int64_t c1) {
        for (int64_t row = 0; row < rows; ++row)
          for (int64_t h = c0 / N; h < c1 / N; ++h) {
            const int64_t o = row * C + h * N, hi = row * H + h;
            layer_norm_fwd(&A.y[size_t(o)], W(kLnxW) + h * N, W(kLnxB) + h * N, 1, N, kLnxEps,
                           &A.zb[size_t(o)], &A.gn_mean[size_t(hi)], &A.gn_rstd[size_t(hi)]);
            float s = 0;
            for (int64_t j = 0; j < N; ++j)
              s += A.r[size_t(o + j)] * A.k[size_t(o + j)] * W(kRk)[h * N + j];
            A.bonus[size_t(hi)] = s;
            for (int64_t j = 0; j < N; ++j) {
              A.zb[size_t(o + j)] += s * A.v[size_t(o + j)];
              yg[o + j] = A.zb[size_t(o + j)] * A.g[size_t(o + j)];
            }
          }
      });
      linear_fwd(yg, W(kWo), rows, C, C, A.x_mid.data(), pool);
      add(pool, RC, x, A.x_mid.data());

      // Feed-forward: Wv relu(Wk xk)^2.
      layer_norm_fwd(A.x_mid.data(), W(kLn2W), W(kLn2B), rows, C, kLnEps, A.xx2.data(),
                     A.ln2_mean.data(), A.ln2_rstd.data(), pool);
      const float* fx = W(kFx);
      float* xk2 = A.xk2.data();
      shift_mix_fwd(A.xx2.data(), B, Tc, C, st + C + C * N, ss, 1, &fx, &xk2, A.sx2.data(), pool);
      linear_fwd(A.xk2.data(), W(kFk), rows, C, F, A.hpre.data(), pool);
      parallel_ranges(pool, rows * F, 16, [&](int64_t i0, int64_t i1) {
        for (int64_t j = i0; j < i1; ++j) {
          const float h = relu(A.hpre[size_t(j)]);
          A.h2[size_t(j)] = h * h;
        }
      });
      linear_fwd(A.h2.data(), W(kFv), rows, F, C, x, pool);
      add(pool, RC, A.x_mid.data(), x);
    }
  }

  void layers_bwd(const float* P, float* G, float* dx, int64_t B, int64_t Tc, float* dstate,
                  ThreadPool* pool) override {
    const int64_t C = C_, H = H_, N = N_, F = F_, rows = B * Tc, RC = rows * C;
    const int64_t ss = int64_t(state_size()), ls = 2 * C + C * N;
    const float decay_scale = std::exp(-0.5f);
    Grads& d = grads_;
    d.dvf.assign(size_t(RC), 0.0f);
    for (Vec* v : {&d.dxx, &d.dr, &d.dk, &d.dv, &d.dw, &d.da, &d.dkk, &d.dg, &d.dzb, &d.dy,
                   &d.dtmp})
      fit(*v, RC);
    for (Vec& v : d.dxm) fit(v, RC);
    fit(d.dh, rows * F);
    fit(d.dlora, rows * std::max({Dw_, Da_, Dv_, Dg_}));
    for (int64_t l = L_ - 1; l >= 0; --l) {
      const Acts& A = acts_[size_t(l)];
      auto W = [&](Field f) { return P + off_[size_t(l)][size_t(f)]; };
      auto D = [&](Field f) { return G + off_[size_t(l)][size_t(f)]; };
      float* dst = dstate + l * ls;

      // Feed-forward.
      linear_bwd(A.h2.data(), W(kFv), dx, rows, F, C, d.dh.data(), false, D(kFv), pool);
      parallel_ranges(pool, rows * F, 16, [&](int64_t i0, int64_t i1) {
        for (int64_t j = i0; j < i1; ++j) d.dh[size_t(j)] *= 2 * relu(A.hpre[size_t(j)]);
      });
      float* dxk = d.dtmp.data();
      linear_bwd(A.xk2.data(), W(kFk), d.dh.data(), rows, C, F, dxk, false, D(kFk), pool);
      const float* fx = W(kFx);
      float* dfx = D(kFx);
      shift_mix_bwd(&dxk, &fx, 1, A.sx2.data(), B, Tc, C, dst + C + C * N, ss, d.dxx.data(),
                    &dfx, pool);
      layer_norm_bwd(A.x_mid.data(), W(kLn2W), A.ln2_mean.data(), A.ln2_rstd.data(),
                     d.dxx.data(), rows, C, dx, true, D(kLn2W), D(kLn2B), pool);

      // Output projection, gate, bonus and GroupNorm, by whole heads.
      float* yg = d.dtmp.data();
      parallel_ranges(pool, RC, 16, [&](int64_t i0, int64_t i1) {
        for (int64_t j = i0; j < i1; ++j) yg[j] = A.zb[size_t(j)] * A.g[size_t(j)];
      });
      Vec& dyg = d.dxx;
      linear_bwd(yg, W(kWo), dx, rows, C, C, dyg.data(), false, D(kWo), pool);
      parallel_ranges(pool, C, N, [&](int64_t c0, int64_t c1) {
        const float* rk = W(kRk);
        float* drk = D(kRk);
        for (int64_t row = 0; row < rows; ++row)
          for (int64_t h = c0 / N; h < c1 / N; ++h) {
            const int64_t o = row * C + h * N, hi = row * H + h;
            float ds = 0;
            for (int64_t j = 0; j < N; ++j) {
              const size_t e = size_t(o + j);
              d.dg[e] = dyg[e] * A.zb[e];
              d.dzb[e] = dyg[e] * A.g[e];
              ds += d.dzb[e] * A.v[e];
              d.dv[e] = d.dzb[e] * A.bonus[size_t(hi)];
            }
            for (int64_t j = 0; j < N; ++j) {
              const size_t e = size_t(o + j);
              const float r = A.r[e], k = A.k[e];
              d.dr[e] = ds * k * rk[h * N + j];
              d.dk[e] = ds * r * rk[h * N + j];
              drk[h * N + j] += ds * r * k;
            }
            layer_norm_bwd(&A.y[size_t(o)], W(kLnxW) + h * N, &A.gn_mean[size_t(hi)],
                           &A.gn_rstd[size_t(hi)], &d.dzb[size_t(o)], 1, N, &d.dy[size_t(o)],
                           false, D(kLnxW) + h * N, D(kLnxB) + h * N);
          }
      });

      wkv_bwd(A, d.dy.data(), B, Tc, dst + C, ss, d.dr.data(), d.dw.data(), d.dk.data(),
              d.dv.data(), d.dkk.data(), d.da.data(), pool);

      // By whole heads, back through k = k0 * (1 + (a - 1) * k_a), kk = normalize(k0 * k_k),
      // the value residual, a = sigmoid(a0 + ...) and w = exp(-e^-0.5 * s),
      // s = sigmoid(w0 + ...). dz (in dy, free again) is the value gate's input gradient.
      float *dk0 = d.dtmp.data(), *dz = d.dy.data();
      parallel_ranges(pool, C, N, [&](int64_t c0, int64_t c1) {
        const float *k_a = W(kKa), *k_k = W(kKk);
        float *dka = D(kKa), *dkkw = D(kKk), *da0 = D(kA0), *dw0 = D(kW0);
        float* dv0 = l > 0 ? D(kV0) : nullptr;
        for (int64_t row = 0; row < rows; ++row) {
          for (int64_t c = c0; c < c1; ++c) {
            const size_t j = size_t(row * C + c);
            const float ka = k_a[c], k0 = A.k0[j], a = A.a[j], dk = d.dk[j];
            dk0[j] = dk * (1 + (a - 1) * ka);
            const float da = (d.da[j] + dk * k0 * ka) * a * (1 - a);
            d.da[j] = da;
            da0[c] += da;
            dka[c] += dk * k0 * (a - 1);
            const float s = A.ws[j];
            d.dw[j] *= -A.w[j] * decay_scale * s * (1 - s);
            dw0[c] += d.dw[j];
            if (l == 0) {
              d.dv[j] += d.dvf[j];
            } else {
              const float g = A.sgv[j], dv = d.dv[j];
              d.dvf[j] += dv * g;
              dz[j] = dv * (v_first_[j] - A.v0[j]) * g * (1 - g);
              d.dv[j] = dv * (1 - g);
              dv0[c] += dz[j];
            }
          }
          for (int64_t h = c0 / N; h < c1 / N; ++h) {
            const int64_t o = row * C + h * N;
            const float norm = A.kk_norm[size_t(row * H + h)];
            float dot = 0;
            for (int64_t j = 0; j < N; ++j) dot += A.kk[size_t(o + j)] * d.dkk[size_t(o + j)];
            // Where the norm was clamped to 1e-12 it is a constant.
            if (norm <= 1e-12f) dot = 0;
            for (int64_t j = 0; j < N; ++j) {
              const size_t e = size_t(o + j);
              const float du = (d.dkk[e] - A.kk[e] * dot) / norm;
              dk0[e] += du * k_k[h * N + j];
              dkkw[h * N + j] += du * A.k0[e];
            }
          }
        }
      });

      float* dl = d.dlora.data();
      linear_bwd(A.xm[kV].data(), W(kWv), d.dv.data(), rows, C, C, d.dxm[kV].data(), false,
                 D(kWv), pool);
      if (l > 0) {
        matmul_bwd(A.hv.data(), W(kV2), dz, rows, Dv_, C, dl, false, D(kV2), pool);
        matmul_bwd(A.xm[kV].data(), W(kV1), dl, rows, C, Dv_, d.dxm[kV].data(), true, D(kV1),
                   pool);
      }
      matmul_bwd(A.ha.data(), W(kA2), d.da.data(), rows, Da_, C, dl, false, D(kA2), pool);
      matmul_bwd(A.xm[kA].data(), W(kA1), dl, rows, C, Da_, d.dxm[kA].data(), false, D(kA1),
                 pool);
      matmul_bwd(A.hg.data(), W(kG2), d.dg.data(), rows, Dg_, C, dl, false, D(kG2), pool);
      parallel_ranges(pool, rows * Dg_, 16, [&](int64_t i0, int64_t i1) {
        for (int64_t j = i0; j < i1; ++j) dl[j] *= A.hg[size_t(j)] * (1 - A.hg[size_t(j)]);
      });
      matmul_bwd(A.xm[kG].data(), W(kG1), dl, rows, C, Dg_, d.dxm[kG].data(), false, D(kG1),
                 pool);
      matmul_bwd(A.tw.data(), W(kW2), d.dw.data(), rows, Dw_, C, dl, false, D(kW2), pool);
      parallel_ranges(pool, rows * Dw_, 16, [&](int64_t i0, int64_t i1) {
        for (int64_t j = i0; j < i1; ++j) dl[j] *= 1 - A.tw[size_t(j)] * A.tw[size_t(j)];
      });
      matmul_bwd(A.xm[kW].data(), W(kW1), dl, rows, C, Dw_, d.dxm[kW].data(), false, D(kW1),
                 pool);
      linear_bwd(A.xm[kR].data(), W(kWr), d.dr.data(), rows, C, C, d.dxm[kR].data(), false,
                 D(kWr), pool);
      linear_bwd(A.xm[kK].data(), W(kWk), dk0, rows, C, C, d.dxm[kK].data(), false, D(kWk),
                 pool);

      const float* mixes[kMixes];
      const float* dxm[kMixes];
      float* dmix[kMixes];
      for (int m = 0; m < kMixes; ++m) {
        mixes[m] = W(Field(kXr + m));
        dxm[m] = d.dxm[m].data();
        dmix[m] = D(Field(kXr + m));
      }
      shift_mix_bwd(dxm, mixes, kMixes, A.sx.data(), B, Tc, C, dst, ss, d.dxx.data(), dmix,
                    pool);
      layer_norm_bwd(A.x_in.data(), W(kLn1W), A.ln1_mean.data(), A.ln1_rstd.data(),
                     d.dxx.data(), rows, C, dx, true, D(kLn1W), D(kLn1B), pool);
    }
  }

 private:
  // The WKV recurrence over the chunk for every (sequence, head), keeping in A.S what the
  // backward needs and S (-kk) in A.sa.
  void wkv_fwd(Acts& A, int64_t B, int64_t Tc, float* state, int64_t ss, ThreadPool* pool) {
    const int64_t H = H_, N = N_, saved = wkv7_saved_size(Tc, N);
    parallel_ranges(pool, B * H, 1, [&](int64_t i0, int64_t i1) {
      for (int64_t bh = i0; bh < i1; ++bh) {
        const int64_t b = bh / H, h = bh % H, o = b * Tc * C_ + h * N;
        wkv7_fwd(head(A, o), Tc, N, state + b * ss + h * N * N, &A.S[size_t(bh * saved)],
                 &A.y[size_t(o)], &A.sa[size_t(o)]);
      }
    });
  }

  // Back-propagates wkv_fwd. dS (the state's gradient in `dstate`) runs backwards through the
  // chunk; dr, dk, dv accumulate, dw, dkk, da are set.
  void wkv_bwd(const Acts& A, const float* dy, int64_t B, int64_t Tc, float* dstate, int64_t ss,
               float* dr, float* dw, float* dk, float* dv, float* dkk, float* da,
               ThreadPool* pool) {
    const int64_t H = H_, N = N_, saved = wkv7_saved_size(Tc, N);
    parallel_ranges(pool, B * H, 1, [&](int64_t i0, int64_t i1) {
      for (int64_t bh = i0; bh < i1; ++bh) {
        const int64_t b = bh / H, h = bh % H, o = b * Tc * C_ + h * N;
        wkv7_bwd(head(A, o), Tc, N, &A.S[size_t(bh * saved)], &A.sa[size_t(o)], dy + o,
                 dstate + b * ss + h * N * N, dr + o, dw + o, dk + o, dv + o, dkk + o, da + o);
      }
    });
  }

  // The WKV inputs of the head whose first value is at offset o of the chunk's rows.
  Wkv7Head head(const Acts& A, int64_t o) const {
    return {&A.r[size_t(o)], &A.w[size_t(o)], &A.k[size_t(o)], &A.v[size_t(o)],
            &A.kk[size_t(o)], &A.a[size_t(o)], C_};
  }

  int64_t H_ = 0, N_ = 0, F_ = 0, L_ = 0, Dw_ = 0, Da_ = 0, Dv_ = 0, Dg_ = 0;
  std::vector<std::array<size_t, kFields>> off_;
  std::vector<Acts> acts_;
  Grads grads_;
  Vec v_first_, tmp_;
};

}  // namespace

std::unique_ptr<TrainModel> create_v7(const ParamSet& params) {
  return std::make_unique<V7Train>(params);
}

}  // namespace rwkv::train
