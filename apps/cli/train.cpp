// `rwkv train`: train an RWKV-7 or RWKV-6 model from scratch, or fine-tune one (whole model,
// initial state, or LoRA adapters), on raw text, jsonl or token data. Progress on a terminal,
// a CSV log of every step, a loss-curve PNG (gnuplot) at the end, checkpoints every N steps and
// on Ctrl-C, and --resume continuing bit-exactly.
#include <fmt/format.h>
#include <spawn.h>
#include <sys/wait.h>

#include <atomic>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <thread>

#include "cli.h"
#include "progress.h"
#include "rwkv/tokenizer.h"
#include "train/mpi.h"
#include "train/trainer.h"

extern char** environ;

namespace rwkv::cli {

namespace {

std::atomic<bool> g_stop{false};

void on_sigint(int) { g_stop.store(true); }

std::string eta(double secs) {
  const int s = int(secs);
  return s >= 3600 ? fmt::format("{}h{:02d}m", s / 3600, s / 60 % 60)
                   : fmt::format("{}m{:02d}s", s / 60, s % 60);
}

// The loss curve from the CSV log, if gnuplot is installed (run without a shell).
void plot(const std::string& csv, const std::string& png) {
  const std::string script = fmt::format(
      "set terminal png size 900,500; set output '{}'; set datafile separator ','; "
      "set key autotitle columnhead; set xlabel 'step'; set ylabel 'loss'; set grid; "
      "plot '{}' using 1:2 with lines lw 2 title 'training loss'",
      png, csv);
  if (png.find('\'') != std::string::npos || csv.find('\'') != std::string::npos) return;
  const char* argv[] = {"gnuplot", "-e", script.c_str(), nullptr};
  pid_t pid;
  if (posix_spawnp(&pid, "gnuplot", nullptr, nullptr, const_cast<char**>(argv), environ) != 0)
    return;
  int status = 0;
  waitpid(pid, &status, 0);
  if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
    fmt::print(stderr, "loss curve: {}\n", png);
}

}  // namespace

void add_train_command(CLI::App& app) {
  auto* cmd = app.add_subcommand(
      "train", "Train an RWKV-7/RWKV-6 model, or tune one's state or LoRA adapters");
  struct Opts {
    train::TrainerOptions t;
    std::string arch = "v7", tokenizer = "byte", data, log, png;
    bool merge = false;
  };
  auto o = std::make_shared<Opts>();
  train::TrainerOptions& t = o->t;
  t.init.n_embd = 256;
  t.init.n_layer = 4;
  cmd->add_option("--arch", o->arch, "Architecture to train from scratch: v7 (default) or v6")
      ->check(CLI::IsMember({"v7", "v6", "7", "6"}));
  cmd->add_option("--n-embd", t.init.n_embd, "Embedding size (default 256)")->check(kPositive);
  cmd->add_option("--n-layer", t.init.n_layer, "Layers (default 4)")->check(kPositive);
  cmd->add_option("--head-size", t.init.head_size, "Head size (default 64)")->check(kPositive);
  cmd->add_option("--vocab", t.init.n_vocab, "Vocabulary size (default: the tokenizer's)")
      ->check(kPositive);
  cmd->add_option("--tokenizer", o->tokenizer,
                  "Tokenizer for text data: byte (default), or a vocab file (World .txt, "
                  "tokenizer.json)");
  cmd->add_option("--data", o->data,
                  "Training data: .txt (raw text), .jsonl ({\"text\": ...} per line), .tok, or "
                  "RWKV-LM binidx (.bin/.idx)")
      ->required();
  cmd->add_option("--out", t.out,
                  "Output: the model (.safetensors), or the state file (--tune state), or the "
                  "adapters (--tune lora); the checkpoint is OUT.ckpt")
      ->required();
  cmd->add_option("--ctx-len", t.ctx_len, "Tokens per sequence (default 512)")->check(kPositive);
  cmd->add_option("--chunk-len", t.chunk_len,
                  "Tokens per chunk, the state carried between chunks (default: ctx-len)")
      ->check(kNonNegative);
  cmd->add_option("--batch", t.batch, "Sequences per step (default 1)")->check(kPositive);
  cmd->add_option("--steps", t.adam.steps, "Optimizer steps")->required()->check(kPositive);
  cmd->add_option("--lr", t.adam.lr, "Peak learning rate (default 1e-3)")->check(kPositive);
  cmd->add_option("--lr-final", t.adam.lr_final, "Learning rate at the end (default 1e-5)")
      ->check(kNonNegative);
  cmd->add_option("--warmup", t.adam.warmup, "Warm-up steps (default 0)")->check(kNonNegative);
  cmd->add_option("--weight-decay", t.adam.weight_decay,
                  "AdamW weight decay of the matrices (default 0)")
      ->check(kNonNegative);
  cmd->add_option("--grad-clip", t.adam.grad_clip, "Clip the gradient norm (default 1; 0 = off)")
      ->check(kNonNegative);
  cmd->add_option("--beta2", t.adam.beta2, "Adam beta2 (default 0.99)")->check(CLI::Range(0.0, 1.0));
  cmd->add_option("--l2wrap", t.l2wrap,
                  "RWKV-LM's L2Wrap: pull every position's largest logit towards 0 with this "
                  "coefficient (default 1e-4; 0 = off)")
      ->check(kNonNegative);
  cmd->add_option("--seed", t.seed, "Seed of the initial weights and the batches (default 0)");
  cmd->add_option("--save-every", t.save_every, "Checkpoint every N steps (default: at the end)")
      ->check(kNonNegative);
  cmd->add_flag("--resume", t.resume, "Continue from OUT.ckpt (same options)");
  cmd->add_option("--init", t.init_model, "Start from this model instead of a random one")
      ->check(CLI::ExistingFile);
  cmd->add_option("--tune", t.tune, "What to train: full (default), state or lora")
      ->check(CLI::IsMember({"full", "state", "lora"}));
  cmd->add_option("--lora-rank", t.lora_rank, "LoRA rank (default 8)")->check(kPositive);
  cmd->add_option("--merge", t.merge_out,
                  "With --tune lora: also write the model with the adapters merged here");
  cmd->add_option("--log", o->log, "CSV log of every step (default OUT.csv)");
  cmd->add_option("--threads", t.threads, "Threads (default: one per core)")
      ->check(CLI::Range(1, 1024));
  cmd->callback([o] {
    train::TrainerOptions& t = o->t;
    t.init.arch = o->arch;
    t.init.seed = t.seed;
    if (t.threads == 0) t.threads = int(std::max(1u, std::thread::hardware_concurrency()));
    train::Mpi& mpi = train::Mpi::instance();
    t.rank = mpi.rank();
    t.world = mpi.size();
    if (t.world > 1) {
      t.all_reduce = [&mpi](double* v, size_t n) { mpi.all_reduce_sum(v, n); };
    }

    // Data: token files are used as they are; text is tokenized into OUT.tok first.
    std::unique_ptr<Tokenizer> tok;
    if (o->tokenizer == "byte")
      tok = Tokenizer::byte_level();
    else
      tok = Tokenizer::load(o->tokenizer);
    if (t.init.n_vocab == 0) t.init.n_vocab = tok->vocab_size() > 65000 ? 65536 : tok->vocab_size();
    std::string data_path = o->data;
    if (!train::TokenData::is_token_data(o->data)) {
      data_path = t.out + ".tok";
      if (t.rank == 0) {
        const uint64_t n = train::tokenize_to_file(o->data, *tok, data_path);
        fmt::print(stderr, "tokenized {} ({}) into {} tokens: {}\n", o->data, tok->name(), n,
                   data_path);
      }
      mpi.barrier();
    }
    const train::TokenData data = train::TokenData::open(data_path);

    const std::string log = o->log.empty() ? t.out + ".csv" : o->log;
    std::ofstream csv;
    if (t.rank == 0) {
      csv.open(log, t.resume ? std::ios::app : std::ios::trunc);
      if (!csv) throw Error("cannot write the log " + log);
      if (!t.resume) csv << "step,loss,lr,grad_norm,tokens_per_s\n";
    }
    g_stop.store(false);
    auto previous = std::signal(SIGINT, on_sigint);
    ProgressBar bar("training");
    const auto start = std::chrono::steady_clock::now();
    int64_t first_step = -1;
    const train::TrainResult r = train::train(
        t, data,
        [&](const train::StepReport& s) {
          if (t.rank != 0) return;
          if (first_step < 0) first_step = s.step - 1;
          csv << fmt::format("{},{:.6f},{:.6g},{:.4f},{:.1f}\n", s.step, s.loss, s.lr,
                             s.grad_norm, s.tokens_per_s);
          csv.flush();
          const double secs =
              std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
          const double per_step = secs / double(s.step - first_step);
          bar.update(double(s.step), double(t.adam.steps),
                     fmt::format("step {}/{} loss {:.4f} {:.0f} tok/s ETA {}", s.step,
                                 t.adam.steps, s.loss, s.tokens_per_s,
                                 eta(per_step * double(t.adam.steps - s.step))));
        },
        g_stop);
    bar.finish();
    std::signal(SIGINT, previous);
    if (t.rank != 0) return;
    csv.close();
    const double secs =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    fmt::print(stderr, "{} {} steps in {:.1f} s: loss {:.4f} -> {:.4f}; wrote {} and {}\n",
               r.interrupted ? "interrupted after" : "trained", r.steps_done, secs, r.first_loss,
               r.last_loss, t.out, train::checkpoint_path(t.out));
    if (r.interrupted) throw CLI::RuntimeError(130);
    plot(log, o->png.empty() ? t.out + ".png" : o->png);
  });
}

}  // namespace rwkv::cli
