// `rwkv grad MODEL --tokens "..." --out FILE`: one forward and backward pass over the tokens
// (next-token cross-entropy, mean over positions, from the model's initial state), writing the
// loss and every parameter's gradient under its official name and shape, float32. This is the
// interface gradients are checked against other implementations with; keep it stable.
#include <fmt/format.h>

#include <chrono>
#include <ctime>
#include <thread>

#include "cli.h"
#include "io/readers.h"
#include "train/train_math.h"
#include "train/train_model.h"

namespace rwkv::cli {

void add_grad_command(CLI::App& app) {
  auto* cmd = app.add_subcommand(
      "grad", "Loss and the gradient of every parameter over a token sequence (safetensors)");
  struct Opts {
    std::string model, tokens, out;
    int64_t chunk = 0;
    int threads = 0;
    float l2wrap = 0;
    int repeat = 1;
  };
  auto o = std::make_shared<Opts>();
  cmd->add_option("model", o->model, "RWKV-7 or RWKV-6 model (.pth or .safetensors)")
      ->required()
      ->check(CLI::ExistingFile);
  cmd->add_option("--tokens", o->tokens, "Token ids separated by spaces or commas (at least 2)")
      ->required();
  cmd->add_option("--out", o->out, "Output .safetensors: 'loss' and the gradients")->required();
  cmd->add_option("--chunk", o->chunk,
                  "Tokens per chunk; the state carries across chunks (default: all at once)")
      ->check(kNonNegative);
  cmd->add_option("--threads", o->threads, "Threads (default: one per core)")
      ->check(CLI::Range(1, 1024));
  cmd->add_option("--l2wrap", o->l2wrap,
                  "Add RWKV-LM's L2Wrap term with this coefficient to the gradients, as "
                  "`rwkv train` does (default 0: the loss's own gradients)")
      ->check(kNonNegative);
  cmd->add_option("--repeat", o->repeat,
                  "Run the pass this many times and report the last, as a training step after "
                  "the first finds its buffers allocated (default 1)")
      ->check(kPositive);
  cmd->callback([o] {
    const std::vector<int> ids = parse_token_ids(o->tokens, "--tokens");
    if (ids.size() < 2) throw Error("--tokens: need at least 2 tokens (inputs and targets)");
    const train::ParamSet params = train::ParamSet::from_map(read_tensor_map(o->model));
    auto model = train::TrainModel::create(params);
    model->set_l2wrap(o->l2wrap);
    const int n_threads =
        o->threads > 0 ? o->threads : int(std::max(1u, std::thread::hardware_concurrency()));
    ThreadPool pool(n_threads);
    train::setup_gemm();
    const int64_t T = int64_t(ids.size()) - 1;
    train::Batch batch{ids.data(), ids.data() + 1, 1, T};
    std::vector<float> grad(params.size());
    double loss = 0, secs = 0, cpu_secs = 0;
    for (int i = 0; i < o->repeat; ++i) {
      std::fill(grad.begin(), grad.end(), 0.0f);
      const auto start = std::chrono::steady_clock::now();
      const std::clock_t cpu_start = std::clock();  // all threads of the process
      loss = model->forward_backward(params.data.data(), batch, o->chunk > 0 ? o->chunk : T,
                                     nullptr, grad.data(), nullptr, &pool);
      secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      cpu_secs = double(std::clock() - cpu_start) / CLOCKS_PER_SEC;
    }
    TensorMap out = params.view(grad, o->out);
    const float loss_f = float(loss);
    Tensor t;
    t.shape = {1};
    t.data = reinterpret_cast<const uint8_t*>(&loss_f);
    t.nbytes = 4;
    TensorMap result;
    result.metadata["loss"] = fmt::format("{:.9g}", loss);
    result.add("loss", t);
    for (const std::string& name : out.names()) result.add(name, out.at(name));
    write_safetensors(result, o->out);
    fmt::print("loss {:.6f} over {} positions (forward + backward {:.2f} s, {:.1f} tokens/s, "
               "{:.2f} s CPU); gradients of {} tensors written to {}\n",
               loss, T, secs, double(T) / secs, cpu_secs, out.size(), o->out);
  });
}

}  // namespace rwkv::cli
