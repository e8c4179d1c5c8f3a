#include "train/optimizer.h"

#include <cmath>

namespace rwkv::train {

AdamW::AdamW(const ParamSet& params, const AdamWConfig& config, std::vector<bool> trainable)
    : m(params.size(), 0.0f), v(params.size(), 0.0f), config_(config) {
  const auto& infos = params.infos();
  for (size_t i = 0; i < infos.size(); ++i) {
    if (!trainable.empty() && !trainable[i]) continue;
    const std::string& n = infos[i].name;
    auto ends = [&n](const std::string& s) {
      return n.size() >= s.size() && n.compare(n.size() - s.size(), s.size(), s) == 0;
    };
    size_t dims = 0;
    for (int64_t d : infos[i].shape) dims += d > 1;
    Group g{infos[i].offset, infos[i].numel, 1.0f, 0.0f};
    if (ends("att.w0") || ends("att.time_decay"))
      g.lr_scale = 2.0f;
    else if (dims >= 2 && ends(".weight"))
      g.weight_decay = config.weight_decay;
    groups_.push_back(g);
  }
}

float AdamW::lr_at(int64_t step) const {
  const AdamWConfig& c = config_;
  if (step < c.warmup) return c.lr * (0.01f + 0.99f * float(step) / float(c.warmup));
  const int64_t span = std::max<int64_t>(1, c.steps - c.warmup - 1);
  const double progress = std::min(1.0, double(step - c.warmup) / double(span));
  return float(c.lr_final + (c.lr - c.lr_final) * 0.5 * (1 + std::cos(M_PI * progress)));
}

double AdamW::step(float* values, const float* grad, int64_t step) {
  double sq = 0;
  for (const Group& g : groups_)
    for (size_t i = g.offset; i < g.offset + g.numel; ++i) sq += double(grad[i]) * grad[i];
  const double norm = std::sqrt(sq);
  const float clip = config_.grad_clip > 0 && norm > config_.grad_clip
                         ? float(config_.grad_clip / norm)
                         : 1.0f;
  const float lr = lr_at(step), b1 = config_.beta1, b2 = config_.beta2;
  const float c1 = 1.0f - float(std::pow(double(b1), double(step + 1)));
  const float c2 = 1.0f - float(std::pow(double(b2), double(step + 1)));
  for (const Group& g : groups_) {
    const float glr = lr * g.lr_scale, decay = 1.0f - glr * g.weight_decay;
    for (size_t i = g.offset; i < g.offset + g.numel; ++i) {
      const float gi = grad[i] * clip;
      m[i] = b1 * m[i] + (1 - b1) * gi;
      v[i] = b2 * v[i] + (1 - b2) * gi * gi;
      values[i] = values[i] * decay - glr * (m[i] / c1) / (std::sqrt(v[i] / c2) + config_.eps);
    }
  }
  return norm;
}

}  // namespace rwkv::train
