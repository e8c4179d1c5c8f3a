// Random-weight RWKV models in the official layout. Every tensor is described once (name, shape,
// mean formula, noise), then generated in fixed chunks of elements, each chunk with its own
// random stream derived from (seed, tensor, chunk), straight into the buffer the map will own,
// so the result does not depend on the thread count and nothing is copied.
#include "model/init.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <memory>

#include "core/random.h"
#include "core/weight_memory.h"
#include "rwkv/error.h"

namespace rwkv {

namespace {

// ---- random numbers ------------------------------------------------------------------------

uint64_t mix(uint64_t a, uint64_t b) { return splitmix64(a ^ (b * 0xd1b54a32d192ed03ull)); }

// Standard normal samples by inverting the CDF with a table: 32 random bits pick a point of
// (0, 1); the top 16 select one of 65536 equal-probability bins and the low 16 interpolate
// linearly inside it. Two samples per 64-bit draw, a load and a multiply-add each (far cheaper
// than Box-Muller's log/sqrt/sin/cos, which would dominate generating a few billion weights).
// The distribution is exact up to the interpolation inside a bin and cut off at +-4.42 sigma
// (probability 1.5e-5 beyond), which is immaterial for weights.
class NormalTable {
 public:
  NormalTable() : node_(kBins + 1) {
    // Nodes at the bin edges i / 65536, found by Newton's method on the upper tail walking
    // outward from 0 (each start is the previous node, so three or four steps converge); the
    // two outermost edges (at +-infinity) are replaced by the quantile of half a bin.
    const double inv_sqrt_2pi = 0.3989422804014327;
    double x = 0;
    node_[kBins / 2] = 0;
    for (int i = kBins / 2 + 1; i <= kBins; ++i) {
      const double q = i == kBins ? 0.5 / kBins : 1.0 - double(i) / kBins;  // upper tail mass
      for (int it = 0; it < 6; ++it) {
        const double g = 0.5 * std::erfc(x / std::sqrt(2.0)) - q;
        x += g / (inv_sqrt_2pi * std::exp(-0.5 * x * x));
      }
      node_[size_t(i)] = float(x);
      node_[size_t(kBins - i)] = float(-x);
    }
  }
  float sample(uint32_t bits) const {
    const uint32_t bin = bits >> 16;
    const float frac = float(bits & 0xffff) * (1.0f / 65536.0f);
    const float lo = node_[bin];
    return lo + frac * (node_[bin + 1] - lo);
  }

 private:
  static constexpr int kBins = 65536;
  std::vector<float> node_;
};

const NormalTable& normal_table() {
  static const NormalTable table;
  return table;
}

// ---- what to generate ----------------------------------------------------------------------

// One tensor: value = mean(i) + noise * N(0, 1), clamped to [lo, hi].
struct Spec {
  std::string name;
  std::vector<int64_t> shape;
  float noise = 0;
  std::function<float(int64_t)> mean;  // empty: 0 (the fast path for matrices)
  float lo = -std::numeric_limits<float>::infinity();
  float hi = std::numeric_limits<float>::infinity();
  int64_t numel() const {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    return n;
  }
};

// Builds the tensor list of one model, layer by layer, in the official key order.
class Layout {
 public:
  Layout(int64_t C, int64_t L) : out_gain(1.0f / std::sqrt(2.0f * float(L))), C_(C), L_(L) {}

  std::vector<Spec> specs;
  // Gain of the projections that write into the residual stream (att.output, ffn.value):
  // 1/sqrt(2L), the depth scaling of GPT-2's init. The official RWKV init zeroes them, and in a
  // trained model each layer nudges the stream; at unit gain a random model is chaotic (Q4_0
  // weights moved its next-token distributions by a KL of ~0.6 nats at 6 layers, against a few
  // hundredths for trained models), which would make quantization measurements meaningless.
  const float out_gain;

  // A weight used as x @ W or W x with `fan_in` inputs: N(0, gain / sqrt(fan_in)), the scale
  // that keeps activations at unit size through the layer.
  void matrix(const std::string& name, std::vector<int64_t> shape, int64_t fan_in,
              float gain = 1.0f) {
    specs.push_back({name, std::move(shape), gain / std::sqrt(float(fan_in)), {}});
  }
  void vec(const std::string& name, std::vector<int64_t> shape, std::function<float(int64_t)> mean,
           float noise, float lo = -std::numeric_limits<float>::infinity(),
           float hi = std::numeric_limits<float>::infinity()) {
    specs.push_back({name, std::move(shape), noise, std::move(mean), lo, hi});
  }
  // A vector around a constant.
  void constant(const std::string& name, std::vector<int64_t> shape, float value, float noise) {
    vec(
        name, std::move(shape), [value](int64_t) { return value; }, noise);
  }
  // Token-shift mix coefficients: a per-channel profile in [0, 1] plus a little noise.
  void mix(const std::string& name, std::function<float(int64_t)> profile) {
    vec(name, {1, 1, C_}, std::move(profile), 0.05f, 0.0f, 1.0f);
  }
  void norm(const std::string& prefix) {
    constant(prefix + ".weight", {C_}, 1.0f, 0.1f);
    constant(prefix + ".bias", {C_}, 0.0f, 0.05f);
  }

  // The official init's per-layer ratios and per-channel ramp.
  float r0(int layer) const { return L_ > 1 ? float(layer) / float(L_ - 1) : 0.0f; }
  float r1(int layer) const { return 1.0f - float(layer) / float(L_); }
  float ramp(int64_t c) const { return float(c) / float(C_); }                       // c / C
  float ramp1(int64_t c) const { return C_ > 1 ? float(c) / float(C_ - 1) : 0.0f; }  // to 1

 private:
  int64_t C_, L_;
};

float zigzag(int64_t c) { return float((c + 1) % 3 - 1); }

void build_v4(Layout& m, int64_t C, int64_t F, int L) {
  for (int i = 0; i < L; ++i) {
    const std::string p = "blocks." + std::to_string(i) + ".";
    const float r0 = m.r0(i), r1 = m.r1(i);
    m.norm(p + "ln1");
    m.norm(p + "ln2");
    if (i == 0) m.norm(p + "ln0");
    // Decay from fast to slow across channels (exp(td) per token), bonus around ln(0.3).
    m.vec(
        p + "att.time_decay", {C},
        [&m, r0](int64_t c) { return -5.0f + 8.0f * std::pow(m.ramp1(c), 0.7f + 1.3f * r0); },
        0.3f);
    m.vec(
        p + "att.time_first", {C}, [](int64_t c) { return std::log(0.3f) + 0.5f * zigzag(c); },
        0.3f);
    m.mix(p + "att.time_mix_k", [&m, r1](int64_t c) { return std::pow(m.ramp(c), r1); });
    m.mix(p + "att.time_mix_v",
          [&m, r0, r1](int64_t c) { return std::pow(m.ramp(c), r1) + 0.3f * r0; });
    m.mix(p + "att.time_mix_r", [&m, r1](int64_t c) { return std::pow(m.ramp(c), 0.5f * r1); });
    for (const char* name : {"key", "value", "receptance"})
      m.matrix(p + "att." + name + ".weight", {C, C}, C);
    m.matrix(p + "att.output.weight", {C, C}, C, m.out_gain);
    m.mix(p + "ffn.time_mix_k", [&m, r1](int64_t c) { return std::pow(m.ramp(c), r1); });
    m.mix(p + "ffn.time_mix_r", [&m, r1](int64_t c) { return std::pow(m.ramp(c), r1); });
    m.matrix(p + "ffn.key.weight", {F, C}, C);
    m.matrix(p + "ffn.value.weight", {C, F}, F, m.out_gain);
    m.matrix(p + "ffn.receptance.weight", {C, C}, C);
  }
}

// RWKV-5.2 "Eagle": per-channel decay and bonus shaped (H, N), gate, GroupNorm ln_x.
void build_v5(Layout& m, int64_t C, int64_t H, int64_t N, int64_t F, int L) {
  for (int i = 0; i < L; ++i) {
    const std::string p = "blocks." + std::to_string(i) + ".";
    const float r0 = m.r0(i), r1 = m.r1(i);
    m.norm(p + "ln1");
    m.norm(p + "ln2");
    if (i == 0) m.norm(p + "ln0");
    m.mix(p + "att.time_mix_k", [&m, r1](int64_t c) { return std::pow(m.ramp(c), r1); });
    m.mix(p + "att.time_mix_v",
          [&m, r0, r1](int64_t c) { return std::pow(m.ramp(c), r1) + 0.3f * r0; });
    m.mix(p + "att.time_mix_r", [&m, r1](int64_t c) { return std::pow(m.ramp(c), 0.5f * r1); });
    m.mix(p + "att.time_mix_g", [&m, r1](int64_t c) { return std::pow(m.ramp(c), 0.5f * r1); });
    m.vec(
        p + "att.time_decay", {H, N},
        [&m, r0](int64_t c) { return -6.0f + 5.0f * std::pow(m.ramp1(c), 0.7f + 1.3f * r0); },
        0.3f);
    m.vec(
        p + "att.time_faaaa", {H, N},
        [&m, r0](int64_t c) { return r0 * (1.0f - m.ramp1(c)) + 0.1f * zigzag(c); }, 0.1f);
    for (const char* name : {"receptance", "key", "value"})
      m.matrix(p + "att." + name + ".weight", {C, C}, C);
    m.matrix(p + "att.output.weight", {C, C}, C, m.out_gain);
    m.matrix(p + "att.gate.weight", {C, C}, C);
    m.norm(p + "att.ln_x");
    m.mix(p + "ffn.time_mix_k", [&m, r1](int64_t c) { return std::pow(m.ramp(c), r1); });
    m.mix(p + "ffn.time_mix_r", [&m, r1](int64_t c) { return std::pow(m.ramp(c), r1); });
    m.matrix(p + "ffn.key.weight", {F, C}, C);
    m.matrix(p + "ffn.value.weight", {C, F}, F, m.out_gain);
    m.matrix(p + "ffn.receptance.weight", {C, C}, C);
  }
}

// RWKV-6 "Finch": data-dependent token shift (LoRA time_maa_w1/w2) and decay (time_decay_w1/w2).
// The LoRA outputs adjust mixes and decays, so their second matrices are scaled down to keep
// those adjustments in the range trained models show.
void build_v6(Layout& m, int64_t C, int64_t H, int64_t N, int64_t F, int L, const LoraRanks& r) {
  for (int i = 0; i < L; ++i) {
    const std::string p = "blocks." + std::to_string(i) + ".";
    const float r0 = m.r0(i), r1 = m.r1(i);
    m.norm(p + "ln1");
    m.norm(p + "ln2");
    if (i == 0) m.norm(p + "ln0");
    auto inv = [&m](float e) {
      return [&m, e](int64_t c) { return 1.0f - std::pow(m.ramp(c), e); };
    };
    m.mix(p + "att.time_maa_x", inv(r1));
    m.mix(p + "att.time_maa_w", inv(r1));
    m.mix(p + "att.time_maa_k", inv(r1));
    m.mix(p + "att.time_maa_v",
          [&m, r0, r1](int64_t c) { return 1.0f - (std::pow(m.ramp(c), r1) + 0.3f * r0); });
    m.mix(p + "att.time_maa_r", inv(0.5f * r1));
    m.mix(p + "att.time_maa_g", inv(0.5f * r1));
    m.matrix(p + "att.time_maa_w1", {C, 5 * r.mix}, C);
    m.matrix(p + "att.time_maa_w2", {5, r.mix, C}, r.mix, 0.1f);
    m.vec(
        p + "att.time_decay", {1, 1, C},
        [&m, r0](int64_t c) { return -6.0f + 5.0f * std::pow(m.ramp1(c), 0.7f + 1.3f * r0); },
        0.3f);
    m.matrix(p + "att.time_decay_w1", {C, r.decay}, C);
    m.matrix(p + "att.time_decay_w2", {r.decay, C}, r.decay, 0.5f);
    m.vec(
        p + "att.time_faaaa", {H, N},
        [&m, r0](int64_t c) { return r0 * (1.0f - m.ramp1(c)) + 0.1f * zigzag(c); }, 0.1f);
    for (const char* name : {"receptance", "key", "value"})
      m.matrix(p + "att." + name + ".weight", {C, C}, C);
    m.matrix(p + "att.output.weight", {C, C}, C, m.out_gain);
    m.matrix(p + "att.gate.weight", {C, C}, C);
    m.norm(p + "att.ln_x");
    m.mix(p + "ffn.time_maa_k", inv(r1));
    m.mix(p + "ffn.time_maa_r", inv(r1));
    m.matrix(p + "ffn.key.weight", {F, C}, C);
    m.matrix(p + "ffn.receptance.weight", {C, C}, C);
    m.matrix(p + "ffn.value.weight", {C, F}, F, m.out_gain);
  }
}

// RWKV-7 "Goose". Layer 0 carries v0/v1/v2 like the official checkpoints (the model ignores
// them: layer 0 defines the value residual).
void build_v7(Layout& m, int64_t C, int64_t H, int64_t N, int64_t F, int L, const LoraRanks& r) {
  for (int i = 0; i < L; ++i) {
    const std::string p = "blocks." + std::to_string(i) + ".";
    const float r0 = m.r0(i), r1 = m.r1(i);
    m.norm(p + "ln1");
    m.norm(p + "ln2");
    if (i == 0) m.norm(p + "ln0");
    auto inv = [&m](float e) {
      return [&m, e](int64_t c) { return 1.0f - std::pow(m.ramp(c), e); };
    };
    m.mix(p + "att.x_r", inv(0.2f * r1));
    m.mix(p + "att.x_w", inv(0.9f * r1));
    m.mix(p + "att.x_k",
          [&m, r0, r1](int64_t c) { return 1.0f - (std::pow(m.ramp(c), 0.9f * r1) + 0.4f * r0); });
    m.mix(p + "att.x_v",
          [&m, r0, r1](int64_t c) { return 1.0f - (std::pow(m.ramp(c), 0.4f * r1) + 0.6f * r0); });
    m.mix(p + "att.x_a", inv(0.9f * r1));
    m.mix(p + "att.x_g", inv(0.2f * r1));
    const float w_exp = 0.85f + std::sqrt(r0);
    m.vec(
        p + "att.w0", {1, 1, C},
        [&m, w_exp](int64_t c) { return -6.5f + 5.0f * std::pow(m.ramp1(c), w_exp); }, 0.3f);
    m.matrix(p + "att.w1", {C, r.w}, C);
    m.matrix(p + "att.w2", {r.w, C}, r.w, 0.5f);
    m.constant(p + "att.a0", {1, 1, C}, 0.0f, 0.3f);
    m.matrix(p + "att.a1", {C, r.a}, C);
    m.matrix(p + "att.a2", {r.a, C}, r.a, 0.5f);
    m.constant(p + "att.v0", {1, 1, C}, 1.0f, 0.2f);
    m.matrix(p + "att.v1", {C, r.v}, C);
    m.matrix(p + "att.v2", {r.v, C}, r.v, 0.5f);
    m.matrix(p + "att.g1", {C, r.g}, C);
    m.matrix(p + "att.g2", {r.g, C}, r.g);
    m.constant(p + "att.k_k", {1, 1, C}, 0.85f, 0.1f);
    m.constant(p + "att.k_a", {1, 1, C}, 1.0f, 0.1f);
    m.constant(p + "att.r_k", {H, N}, 0.0f, 0.1f);
    for (const char* name : {"receptance", "key", "value"})
      m.matrix(p + "att." + name + ".weight", {C, C}, C);
    m.matrix(p + "att.output.weight", {C, C}, C, m.out_gain);
    m.norm(p + "att.ln_x");
    m.mix(p + "ffn.x_k", inv(r1 * r1 * r1 * r1));
    m.matrix(p + "ffn.key.weight", {F, C}, C);
    m.matrix(p + "ffn.value.weight", {C, F}, F, m.out_gain);
  }
}

std::string normalize_arch(const std::string& arch) {
  std::string a = !arch.empty() && (arch[0] == 'v' || arch[0] == 'V') ? arch.substr(1) : arch;
  if (a == "5.2") a = "5";
  if (a != "4" && a != "5" && a != "6" && a != "7")
    throw Error("unknown architecture '" + arch + "' (expected v4, v5, v6 or v7)");
  return a;
}

// ---- generation ----------------------------------------------------------------------------

constexpr int64_t kChunk = 1 << 16;  // elements per random stream (and per task)

void generate_chunk(const Spec& s, uint64_t stream, int64_t begin, int64_t end, DType dtype,
                    uint8_t* dst) {
  const NormalTable& table = normal_table();
  SplitMix64 rng{stream};
  float buf[256];
  for (int64_t i0 = begin; i0 < end; i0 += 256) {
    const int64_t n = std::min<int64_t>(256, end - i0);
    // For F32 the samples go straight into the tensor's buffer.
    float* out = dtype == DType::F32 ? reinterpret_cast<float*>(dst) + i0 : buf;
    for (int64_t j = 0; j < n; j += 2) {
      const uint64_t bits = rng.next();
      out[j] = table.sample(uint32_t(bits));
      if (j + 1 < n) out[j + 1] = table.sample(uint32_t(bits >> 32));
    }
    if (s.mean) {
      for (int64_t j = 0; j < n; ++j)
        out[j] = std::clamp(s.mean(i0 + j) + s.noise * out[j], s.lo, s.hi);
    } else {
      for (int64_t j = 0; j < n; ++j) out[j] *= s.noise;
    }
    if (dtype == DType::F16) {
      for (int64_t j = 0; j < n; ++j) {
        const uint16_t h = fp32_to_fp16(out[j]);
        std::memcpy(dst + 2 * (i0 + j), &h, 2);
      }
    } else if (dtype == DType::BF16) {
      for (int64_t j = 0; j < n; ++j) {
        const uint16_t h = fp32_to_bf16(out[j]);
        std::memcpy(dst + 2 * (i0 + j), &h, 2);
      }
    }
  }
}

}  // namespace

int64_t default_ffn_dim(const std::string& arch, int64_t n_embd) {
  const std::string a = normalize_arch(arch);
  if (a == "5" || a == "6") return n_embd * 7 / 2 / 32 * 32;
  return 4 * n_embd;
}

LoraRanks default_lora_ranks(const std::string& arch, int64_t n_embd) {
  const std::string a = normalize_arch(arch);
  LoraRanks r;
  if (a == "6") {
    r.mix = n_embd >= 4096 ? 64 : 32;
    r.decay = n_embd >= 4096 ? 128 : 64;
  } else if (a == "7") {
    // max(32, round(k * C^e / 32) * 32); Python's round() is ties-to-even, as is nearbyint.
    auto rank = [n_embd](double k, double e) {
      return std::max<int64_t>(32,
                               int64_t(std::nearbyint(k * std::pow(double(n_embd), e) / 32)) * 32);
    };
    r.w = rank(1.8, 0.5);
    r.a = rank(1.8, 0.5);
    r.v = rank(1.3, 0.5);
    r.g = rank(0.6, 0.8);
  }
  return r;
}

TensorMap init_model(const InitOptions& o) {
  const std::string arch = normalize_arch(o.arch);
  const int64_t C = o.n_embd, L = o.n_layer, V = o.n_vocab;
  if (C < 1 || L < 1 || V < 1)
    throw Error("n_embd, n_layer and vocab must be positive (got " + std::to_string(C) + ", " +
                std::to_string(L) + ", " + std::to_string(V) + ")");
  if (V > std::numeric_limits<int32_t>::max() || L > 100000 || C > (1 << 20))
    throw Error("dimensions too large");
  if (o.dtype != DType::F32 && o.dtype != DType::F16 && o.dtype != DType::BF16)
    throw Error("init writes F32, F16 or BF16, not " + std::string(dtype_name(o.dtype)));
  const int64_t N = o.head_size;
  if (arch != "4" && (N < 2 || C % N != 0))
    throw Error("head size " + std::to_string(N) + " must be at least 2 and divide n_embd " +
                std::to_string(C));
  const int64_t H = arch == "4" ? 0 : C / N;
  const int64_t F = o.ffn_dim > 0 ? o.ffn_dim : default_ffn_dim(arch, C);
  const LoraRanks ranks = default_lora_ranks(arch, C);

  Layout m(C, L);
  m.matrix("emb.weight", {V, C}, C);
  if (arch == "4") build_v4(m, C, F, int(L));
  if (arch == "5") build_v5(m, C, H, N, F, int(L));
  if (arch == "6") build_v6(m, C, H, N, F, int(L), ranks);
  if (arch == "7") build_v7(m, C, H, N, F, int(L), ranks);
  m.norm("ln_out");
  // Logits with a standard deviation of about 4, so the next-token distribution has an entropy
  // of a few nats like a trained model's, not the near-uniform one unit-size logits give over
  // a large vocabulary (which would make KL and top-1 measurements meaningless).
  m.matrix("head.weight", {V, C}, C, 4.0f);

  // One allocation for all tensors, left uninitialised (every byte is generated), each tensor
  // at a 64-byte boundary.
  const uint64_t elem = dtype_info(o.dtype).block_bytes;
  std::vector<uint64_t> offset(m.specs.size());
  uint64_t total_bytes = 0, total_elems = 0;
  for (size_t k = 0; k < m.specs.size(); ++k) {
    offset[k] = total_bytes;
    total_bytes += (uint64_t(m.specs[k].numel()) * elem + 63) / 64 * 64;
    total_elems += uint64_t(m.specs[k].numel());
  }
  std::shared_ptr<uint8_t> storage = allocate_weights(total_bytes);

  struct Task {
    size_t spec;
    int64_t begin, end;
  };
  std::vector<Task> tasks;
  for (size_t k = 0; k < m.specs.size(); ++k)
    for (int64_t b = 0; b < m.specs[k].numel(); b += kChunk)
      tasks.push_back({k, b, std::min(m.specs[k].numel(), b + kChunk)});
  auto run = [&](int64_t t) {
    const Task& task = tasks[size_t(t)];
    const uint64_t stream = mix(mix(o.seed, task.spec + 1), uint64_t(task.begin / kChunk) + 1);
    generate_chunk(m.specs[task.spec], stream, task.begin, task.end, o.dtype,
                   storage.get() + offset[task.spec]);
  };
  // Batches of about 1% of the elements, so progress is reported from the calling thread.
  uint64_t done = 0;
  for (size_t first = 0; first < tasks.size();) {
    size_t last = first;
    uint64_t batch = 0;
    while (last < tasks.size() && (batch == 0 || batch < total_elems / 100)) {
      batch += uint64_t(tasks[last].end - tasks[last].begin);
      ++last;
    }
    const int64_t n = int64_t(last - first);
    auto fn = [&, first](int64_t i) { run(int64_t(first) + i); };
    if (o.pool)
      o.pool->parallel_for(n, fn);
    else
      for (int64_t i = 0; i < n; ++i) fn(i);
    done += batch;
    if (o.progress) o.progress(done, total_elems);
    first = last;
  }

  TensorMap map;
  map.path = "rwkv init";
  map.format = "rwkv init";
  map.metadata["generator"] = "rwkv init";
  map.metadata["arch"] = "v" + arch;
  map.metadata["seed"] = std::to_string(o.seed);
  for (size_t k = 0; k < m.specs.size(); ++k) {
    Tensor t;
    t.dtype = o.dtype;
    t.shape = m.specs[k].shape;
    t.data = storage.get() + offset[k];
    t.nbytes = uint64_t(m.specs[k].numel()) * elem;
    map.add(m.specs[k].name, std::move(t));
  }
  map.keep_alive(std::shared_ptr<const void>(storage, storage.get()));
  return map;
}

}  // namespace rwkv
