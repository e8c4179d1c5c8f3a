#include "train/train_init.h"

#include <cmath>
#include <functional>

#include "core/random.h"
#include "model/init.h"
#include "rwkv/error.h"

namespace rwkv::train {

namespace {

// Box-Muller on splitmix64: simple, and the same numbers on every platform.
struct Rng : SplitMix64 {
  double normal() {
    const double u = 1.0 - uniform(), v = uniform();
    return std::sqrt(-2.0 * std::log(u)) * std::cos(6.283185307179586 * v);
  }
};

// torch.nn.init.orthogonal_ for a (rows x cols) matrix: a Haar-random matrix whose rows (or
// columns, whichever are fewer) are orthonormal, times `gain`. Gram-Schmidt (twice, for
// stability) on Gaussian vectors gives the same distribution as QR with the sign fix.
void orthogonal(float* w, int64_t rows, int64_t cols, double gain, Rng& rng) {
  const bool by_rows = rows <= cols;
  const int64_t n = by_rows ? rows : cols, len = by_rows ? cols : rows;
  std::vector<double> q(size_t(n * len));
  for (double& x : q) x = rng.normal();
  for (int64_t i = 0; i < n; ++i) {
    double* qi = &q[size_t(i * len)];
    for (int pass = 0; pass < 2; ++pass)
      for (int64_t j = 0; j < i; ++j) {
        const double* qj = &q[size_t(j * len)];
        double d = 0;
        for (int64_t e = 0; e < len; ++e) d += qi[e] * qj[e];
        for (int64_t e = 0; e < len; ++e) qi[e] -= d * qj[e];
      }
    double norm = 0;
    for (int64_t e = 0; e < len; ++e) norm += qi[e] * qi[e];
    norm = std::sqrt(norm);
    for (int64_t e = 0; e < len; ++e) qi[e] /= norm;
  }
  for (int64_t i = 0; i < n; ++i)
    for (int64_t e = 0; e < len; ++e) {
      const double x = gain * q[size_t(i * len + e)];
      if (by_rows)
        w[i * cols + e] = float(x);
      else
        w[e * cols + i] = float(x);
    }
}

void uniform(float* w, int64_t n, double bound, Rng& rng) {
  for (int64_t i = 0; i < n; ++i) w[i] = float((2 * rng.uniform() - 1) * bound);
}

void fill(float* w, int64_t n, const std::function<double(int64_t)>& f) {
  for (int64_t i = 0; i < n; ++i) w[i] = float(f(i));
}

int64_t dim(const ParamSet& p, const std::string& name, size_t axis) {
  return p.info(name).shape.at(axis);
}

// Block l's layer norms (ln0 only in block 0): weight 1, bias 0.
void init_layer_norms(ParamSet& p, const std::string& pre, int64_t l, int64_t C) {
  for (const std::string n : {"ln1", "ln2", "ln0"}) {
    if (n == "ln0" && l != 0) continue;
    fill(p.get(pre + n + ".weight"), C, [](int64_t) { return 1.0; });
    fill(p.get(pre + n + ".bias"), C, [](int64_t) { return 0.0; });
  }
}

// The RWKV-LM x070 init (RWKV-v7/train_temp/src/model.py).
void init_v7(ParamSet& p, int64_t C, int64_t L, int64_t V, int64_t N, Rng& rng) {
  auto ortho_lora = [&](const std::string& name) {  // ortho_init(x, 0.1)
    const int64_t r = dim(p, name, 0), c = dim(p, name, 1);
    orthogonal(p.get(name), r, c, 0.1 * (r > c ? std::sqrt(double(r) / double(c)) : 1.0), rng);
  };
  for (int64_t l = 0; l < L; ++l) {
    const std::string pre = "blocks." + std::to_string(l) + ".";
    const double r0 = L > 1 ? double(l) / double(L - 1) : 0.0, r1 = 1.0 - double(l) / double(L);
    auto ddd = [C](int64_t c) { return double(c) / double(C); };
    auto lin = [C](int64_t c) { return double(c) / double(C - 1) - 0.5; };
    auto zigzag = [N](int64_t c) {
      const double z = (double(c % N) - double(N - 1) / 2) / (double(N - 1) / 2);
      return z * std::abs(z);
    };
    init_layer_norms(p, pre, l, C);
    const std::pair<const char*, double> mixes[] = {{"x_r", 0.2}, {"x_w", 0.9}, {"x_k", 0.7},
                                                    {"x_v", 0.7}, {"x_a", 0.9}, {"x_g", 0.2}};
    for (const auto& [n, e] : mixes)
      fill(p.get(pre + "att." + n), C,
           [&, e = e](int64_t c) { return 1.0 - std::pow(ddd(c), e * r1); });
    fill(p.get(pre + "att.w0"), C, [&](int64_t c) {
      const double www = -6 + 6 * std::pow(double(c) / double(C - 1), 1 + std::pow(r0, 0.3));
      return www + 0.5 + zigzag(c) * 2.5;
    });
    fill(p.get(pre + "att.a0"), C,
         [&](int64_t c) { return -0.19 + zigzag(c) * 0.3 + lin(c) * 0.4; });
    fill(p.get(pre + "att.v0"), C, [&](int64_t c) { return 0.73 - lin(c) * 0.4; });
    for (const char* n :
         {"att.w1", "att.a1", "att.v1", "att.g1", "att.output.weight", "ffn.value.weight"})
      fill(p.get(pre + n), int64_t(p.info(pre + n).numel), [](int64_t) { return 0.0; });
    for (const char* n : {"att.w2", "att.a2", "att.v2", "att.g2"}) ortho_lora(pre + n);
    fill(p.get(pre + "att.k_k"), C, [&](int64_t c) { return 0.71 - lin(c) * 0.1; });
    fill(p.get(pre + "att.k_a"), C, [](int64_t) { return 1.02; });
    fill(p.get(pre + "att.r_k"), C, [](int64_t) { return -0.04; });
    // generate_init_weight(): orthogonal matrices, gain 0.1 for the key.
    orthogonal(p.get(pre + "att.receptance.weight"), C, C, 1.0, rng);
    orthogonal(p.get(pre + "att.key.weight"), C, C, 0.1, rng);
    orthogonal(p.get(pre + "att.value.weight"), C, C, 1.0, rng);
    const double ln_x = std::pow(double(l + 1) / double(L), 0.7);
    fill(p.get(pre + "att.ln_x.weight"), C, [ln_x](int64_t) { return ln_x; });
    fill(p.get(pre + "att.ln_x.bias"), C, [](int64_t) { return 0.0; });
    fill(p.get(pre + "ffn.x_k"), C,
         [&](int64_t c) { return 1.0 - std::pow(ddd(c), std::pow(r1, 4)); });
    orthogonal(p.get(pre + "ffn.key.weight"), dim(p, pre + "ffn.key.weight", 0), C, 1.0, rng);
  }
  uniform(p.get("emb.weight"), V * C, 1e-4, rng);
  fill(p.get("ln_out.weight"), C, [](int64_t) { return 1.0; });
  fill(p.get("ln_out.bias"), C, [](int64_t) { return 0.0; });
  orthogonal(p.get("head.weight"), V, C, V > C ? 0.5 * std::sqrt(double(V) / double(C)) : 0.5, rng);
}

// The RWKV-LM x060 init (RWKV-v5/src/model.py, RWKV_Tmix_x060 and RWKV_CMix_x060).
void init_v6(ParamSet& p, int64_t C, int64_t L, int64_t V, Rng& rng) {
  for (int64_t l = 0; l < L; ++l) {
    const std::string pre = "blocks." + std::to_string(l) + ".";
    const double r0 = L > 1 ? double(l) / double(L - 1) : 0.0, r1 = 1.0 - double(l) / double(L);
    auto ddd = [C](int64_t c) { return double(c) / double(C); };
    auto ramp = [C](int64_t c) { return double(c) / double(C - 1); };
    init_layer_norms(p, pre, l, C);
    auto inv = [&](double e) { return [&, e](int64_t c) { return 1.0 - std::pow(ddd(c), e); }; };
    for (const char* n :
         {"att.time_maa_x", "att.time_maa_w", "att.time_maa_k", "ffn.time_maa_k", "ffn.time_maa_r"})
      fill(p.get(pre + n), C, inv(r1));
    fill(p.get(pre + "att.time_maa_v"), C,
         [&](int64_t c) { return 1.0 - (std::pow(ddd(c), r1) + 0.3 * r0); });
    fill(p.get(pre + "att.time_maa_r"), C, inv(0.5 * r1));
    fill(p.get(pre + "att.time_maa_g"), C, inv(0.5 * r1));
    for (const char* n : {"att.time_maa_w1", "att.time_decay_w1", "att.output.weight",
                          "ffn.value.weight", "ffn.receptance.weight"})
      fill(p.get(pre + n), int64_t(p.info(pre + n).numel), [](int64_t) { return 0.0; });
    for (const char* n : {"att.time_maa_w2", "att.time_decay_w2"})
      uniform(p.get(pre + n), int64_t(p.info(pre + n).numel), 0.01, rng);
    fill(p.get(pre + "att.time_decay"), C,
         [&](int64_t c) { return -6 + 5 * std::pow(ramp(c), 0.7 + 1.3 * r0); });
    fill(p.get(pre + "att.time_faaaa"), C,
         [&](int64_t c) { return r0 * (1 - ramp(c)) + double((c + 1) % 3 - 1) * 0.1; });
    orthogonal(p.get(pre + "att.receptance.weight"), C, C, 1.0, rng);
    orthogonal(p.get(pre + "att.key.weight"), C, C, 0.1, rng);
    orthogonal(p.get(pre + "att.value.weight"), C, C, 1.0, rng);
    orthogonal(p.get(pre + "att.gate.weight"), C, C, 0.1, rng);
    const double ln_x = std::pow(double(l + 1) / double(L), 0.7);
    fill(p.get(pre + "att.ln_x.weight"), C, [ln_x](int64_t) { return ln_x; });
    fill(p.get(pre + "att.ln_x.bias"), C, [](int64_t) { return 0.0; });
    orthogonal(p.get(pre + "ffn.key.weight"), dim(p, pre + "ffn.key.weight", 0), C, 1.0, rng);
  }
  uniform(p.get("emb.weight"), V * C, 1e-4, rng);
  fill(p.get("ln_out.weight"), C, [](int64_t) { return 1.0; });
  fill(p.get("ln_out.bias"), C, [](int64_t) { return 0.0; });
  orthogonal(p.get("head.weight"), V, C, V > C ? 0.5 * std::sqrt(double(V) / double(C)) : 0.5, rng);
}

}  // namespace

ParamSet init_for_training(const TrainInitOptions& o) {
  InitOptions io;
  io.arch = o.arch;
  io.n_embd = o.n_embd;
  io.n_layer = o.n_layer;
  io.n_vocab = o.n_vocab;
  io.head_size = o.head_size;
  io.seed = o.seed;
  // The official layout (names, shapes, order) with placeholder values, all replaced below.
  ParamSet p = ParamSet::from_map(init_model(io));
  Rng rng{{o.seed * 0x2545f4914f6cdd1dull + 1}};
  const std::string arch = detect_train_arch(p);
  if (arch == "7")
    init_v7(p, o.n_embd, o.n_layer, o.n_vocab, o.head_size, rng);
  else
    init_v6(p, o.n_embd, o.n_layer, o.n_vocab, rng);
  return p;
}

}  // namespace rwkv::train
