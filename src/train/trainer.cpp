#include "train/trainer.h"

#include <fmt/format.h>

#include <chrono>
#include <cmath>

#include "io/readers.h"
#include "core/random.h"
#include "rwkv/error.h"
#include "rwkv/state.h"
#include "train/train_math.h"
#include "train/train_model.h"

namespace rwkv::train {

namespace {

// The matrices of the blocks that get adapters: every 2-D "blocks.*.weight".
bool lora_target(const ParamInfo& p) {
  return p.name.rfind("blocks.", 0) == 0 && p.name.ends_with(".weight") && p.shape.size() == 2;
}

class Loop {
 public:
  Loop(const TrainerOptions& o, const TokenData& data) : o_(o), data_(data) {
    if (o.tune != "full" && o.tune != "state" && o.tune != "lora")
      throw Error("--tune must be full, state or lora, not '" + o.tune + "'");
    if (o.tune != "full" && o.init_model.empty())
      throw Error("--tune " + o.tune + " needs the model to tune (--init MODEL)");
    if (o.ctx_len < 1 || o.batch < 1 || o.adam.steps < 1)
      throw Error("--ctx-len, --batch and --steps must be positive");
    if (o.batch % o.world != 0)
      throw Error(fmt::format("--batch {} must be a multiple of the number of processes {}",
                              o.batch, o.world));
    if (data.size() < uint64_t(o.ctx_len) + 1)
      throw Error(fmt::format("the data has {} tokens; --ctx-len {} needs at least {}",
                              data.size(), o.ctx_len, o.ctx_len + 1));
    model_ = o.init_model.empty() ? init_for_training(o.init)
                                   : ParamSet::from_map(read_tensor_map(o.init_model));
    net_ = TrainModel::create(model_);
    net_->set_l2wrap(float(o.l2wrap));
    if (data.max_token() >= net_->n_vocab())
      throw Error(fmt::format("the data holds token {} but the model's vocabulary is {}",
                              data.max_token(), net_->n_vocab()));
    if (o.tune == "state") {
      tuned_.add("state", {int64_t(net_->state_size())});
    } else if (o.tune == "lora") {
      if (o.lora_rank < 1) throw Error("--lora-rank must be positive");
      base_ = model_.data;
      // A (rank x in) uniform in +-1/sqrt(in), B (out x rank) zero: training starts from the
      // base model exactly.
      uint64_t s = o.seed ^ 0x10a4;
      for (const ParamInfo& p : model_.infos()) {
        if (!lora_target(p)) continue;
        tuned_.add(p.name + ".lora_A", {o.lora_rank, p.shape[1]});
        tuned_.add(p.name + ".lora_B", {p.shape[0], o.lora_rank});
        float* a = tuned_.get(p.name + ".lora_A");
        const double bound = 1.0 / std::sqrt(double(p.shape[1]));
        for (int64_t i = 0; i < o.lora_rank * p.shape[1]; ++i)
          a[i] = float((double(splitmix64(s++) >> 11) / 9007199254740992.0 * 2 - 1) * bound);
      }
    }
    opt_ = o.tune == "full" ? &model_ : &tuned_;
    adam_ = std::make_unique<AdamW>(*opt_, o.adam);
    grad_.resize(model_.size());
    tgrad_.resize(opt_->size());
    config_ = fmt::format(
        "tune={} rank={} params={} tensors={} ctx={} chunk={} batch={} world={} seed={} "
        "init_seed={} lr={} lr_final={} warmup={} steps={} wd={} clip={} l2wrap={} data={}",
        o.tune, o.lora_rank, model_.size(), model_.infos().size(), o.ctx_len, o.chunk_len,
        o.batch, o.world, o.seed, o.init.seed, o.adam.lr, o.adam.lr_final, o.adam.warmup,
        o.adam.steps, o.adam.weight_decay, o.adam.grad_clip, o.l2wrap, data.size());
  }

  TrainResult run(const std::function<void(const StepReport&)>& on_step,
                  const std::atomic<bool>& stop) {
    ThreadPool pool(std::max(1, o_.threads));
    setup_gemm();
    int64_t step = 0;
    if (o_.resume) step = load_checkpoint();
    TrainResult result;
    const int64_t B = o_.batch / o_.world, T = o_.ctx_len;
    std::vector<int> inputs(size_t(B * T)), targets(size_t(B * T));
    for (; step < o_.adam.steps; ++step) {
      const auto t0 = std::chrono::steady_clock::now();
      for (int64_t i = 0; i < B; ++i) {
        const uint64_t b = uint64_t(o_.rank * B + i);
        const uint64_t off =
            splitmix64(splitmix64(o_.seed ^ uint64_t(step) * 0x9e37) ^ b) % (data_.size() - uint64_t(T));
        for (int64_t t = 0; t < T; ++t) {
          inputs[size_t(i * T + t)] = data_[off + uint64_t(t)];
          targets[size_t(i * T + t)] = data_[off + uint64_t(t) + 1];
        }
      }
      if (o_.tune == "lora") merge_lora(model_.data, &pool);
      std::fill(grad_.begin(), grad_.end(), 0.0f);
      std::fill(tgrad_.begin(), tgrad_.end(), 0.0f);
      const bool state = o_.tune == "state";
      double loss = net_->forward_backward(
          model_.data.data(), Batch{inputs.data(), targets.data(), B, T},
          o_.chunk_len > 0 ? o_.chunk_len : T, state ? tuned_.data.data() : nullptr,
          grad_.data(), state ? tgrad_.data() : nullptr, &pool);
      if (o_.tune == "full") tgrad_.swap(grad_);
      if (o_.tune == "lora") lora_grad(&pool);
      if (o_.world > 1) loss = all_reduce_mean(loss);
      const double norm = adam_->step(opt_->data.data(), tgrad_.data(), step);
      if (o_.tune == "full") tgrad_.swap(grad_);
      const double secs =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      if (result.steps_done == 0) result.first_loss = loss;
      result.last_loss = loss;
      ++result.steps_done;
      on_step({step + 1, loss, norm, adam_->lr_at(step), double(o_.batch * T) / secs});
      const bool last = step + 1 == o_.adam.steps;
      if (stop.load() || last || (o_.save_every > 0 && (step + 1) % o_.save_every == 0)) {
        save(step + 1);
        if (stop.load() && !last) {
          result.interrupted = true;
          break;
        }
      }
    }
    return result;
  }

 private:
  double all_reduce_mean(double loss) {
    // Gradients are means over each process's share of the batch: their mean over processes
    // is the gradient of the global batch.
    std::vector<double> buf(tgrad_.size() + 1);
    for (size_t i = 0; i < tgrad_.size(); ++i) buf[i] = tgrad_[i];
    buf.back() = loss;
    o_.all_reduce(buf.data(), buf.size());
    for (size_t i = 0; i < tgrad_.size(); ++i) tgrad_[i] = float(buf[i] / o_.world);
    return buf.back() / o_.world;
  }

  // model = base + B A for every adapted matrix.
  void merge_lora(std::vector<float>& out, ThreadPool* pool) {
    out = base_;
    for (const ParamInfo& p : model_.infos()) {
      if (!lora_target(p)) continue;
      gemm(false, false, p.shape[0], p.shape[1], o_.lora_rank, tuned_.get(p.name + ".lora_B"),
           tuned_.get(p.name + ".lora_A"), out.data() + p.offset, true, pool);
    }
  }

  // From the gradient of each merged matrix W = W0 + B A: dA = B^T dW, dB = dW A^T.
  void lora_grad(ThreadPool* pool) {
    for (const ParamInfo& p : model_.infos()) {
      if (!lora_target(p)) continue;
      const int64_t out = p.shape[0], in = p.shape[1], r = o_.lora_rank;
      const float* dW = grad_.data() + p.offset;
      const size_t a = tuned_.info(p.name + ".lora_A").offset;
      const size_t b = tuned_.info(p.name + ".lora_B").offset;
      gemm(true, false, r, in, out, tuned_.data.data() + b, dW, tgrad_.data() + a, false, pool);
      gemm(false, true, out, r, in, dW, tuned_.data.data() + a, tgrad_.data() + b, false, pool);
    }
  }

  int64_t load_checkpoint() {
    const std::string path = checkpoint_path(o_.out);
    const TensorMap ck = read_tensor_map(path);
    const auto it = ck.metadata.find("config");
    if (it == ck.metadata.end() || it->second != config_)
      throw Error(path + ": written by a run with other options; resume needs the same ones\n  "
                  "checkpoint: " + (it == ck.metadata.end() ? "(none)" : it->second) +
                  "\n  this run:   " + config_);
    for (const ParamInfo& p : opt_->infos()) {
      for (auto [prefix, dst] : {std::pair{"param/", opt_->data.data()},
                                 std::pair{"adam_m/", adam_->m.data()},
                                 std::pair{"adam_v/", adam_->v.data()}}) {
        const std::vector<float> v = to_f32(ck.at(prefix + p.name));
        if (v.size() != p.numel) throw Error(path + ": tensor " + prefix + p.name + " has the wrong size");
        std::copy(v.begin(), v.end(), dst + p.offset);
      }
    }
    return std::stoll(ck.metadata.at("step"));
  }

  void save(int64_t step) {
    if (o_.rank != 0) return;
    TensorMap ck;
    ck.metadata["step"] = std::to_string(step);
    ck.metadata["config"] = config_;
    const TensorMap params = opt_->view(opt_->data), m = opt_->view(adam_->m),
                    v = opt_->view(adam_->v);
    for (const ParamInfo& p : opt_->infos()) {
      ck.add("param/" + p.name, params.at(p.name));
      ck.add("adam_m/" + p.name, m.at(p.name));
      ck.add("adam_v/" + p.name, v.at(p.name));
    }
    write_safetensors(ck, checkpoint_path(o_.out));
    if (o_.tune == "full") {
      TensorMap out = model_.view(model_.data, o_.out);
      out.metadata["generator"] = "rwkv train";
      out.metadata["step"] = std::to_string(step);
      write_safetensors(out, o_.out);
    } else if (o_.tune == "state") {
      const auto base = Model::load(o_.init_model);
      State st(*base);
      std::copy(tuned_.data.begin(), tuned_.data.end(), st.data().begin());
      st.save(o_.out);
    } else {
      TensorMap out = tuned_.view(tuned_.data, o_.out);
      out.metadata["lora_rank"] = std::to_string(o_.lora_rank);
      write_safetensors(out, o_.out);
      if (!o_.merge_out.empty()) {
        std::vector<float> merged;
        merge_lora(merged, nullptr);
        write_safetensors(model_.view(merged, o_.merge_out), o_.merge_out);
      }
    }
  }

  const TrainerOptions& o_;
  const TokenData& data_;
  ParamSet model_, tuned_;
  ParamSet* opt_ = nullptr;
  std::vector<float> base_, grad_, tgrad_;
  std::unique_ptr<TrainModel> net_;
  std::unique_ptr<AdamW> adam_;
  std::string config_;
};

}  // namespace

std::string checkpoint_path(const std::string& out) { return out + ".ckpt"; }

TrainResult train(const TrainerOptions& options, const TokenData& data,
                  const std::function<void(const StepReport&)>& on_step,
                  const std::atomic<bool>& stop) {
  Loop loop(options, data);
  return loop.run(on_step, stop);
}

}  // namespace rwkv::train
