// Micro-benchmarks: one-token forward of real models, and linear() for every stored type, as a
// matrix-vector product (T = 1) and over several tokens. Kernels follow RWKV_KERNELS. Run:
// build/rwkv_bench --benchmark_repetitions=5 --benchmark_report_aggregates_only=true (CPU-time
// medians go to docs/BENCHMARKS.md).
#include <benchmark/benchmark.h>

#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <random>

#include "core/dtype.h"
#include "io/tensor_map.h"
#include "kernels/int8.h"
#include "kernels/kernels.h"
#include "kernels/wkv.h"
#include "rwkv/aligned.h"
#include "rwkv/model.h"
#include "rwkv/thread_pool.h"

namespace {

std::filesystem::path shared_dir() {
  const char* env = std::getenv("RWKV_SHARED");
  return env ? env : RWKV_DEFAULT_SHARED;
}

void BM_Forward(benchmark::State& st, const std::string& rel_path) {
  const auto path = shared_dir() / rel_path;  // an absolute rel_path stands for itself
  if (!std::filesystem::exists(path)) {
    st.SkipWithError(("missing " + path.string()).c_str());
    return;
  }
  auto model = rwkv::Model::load(path.string());
  std::vector<float> state(model->state_size()), logits(size_t(model->info().n_vocab));
  model->init_state(state);
  rwkv::Scratch scratch;
  int token = 0;
  for (auto _ : st) {
    model->forward(token, state, logits, scratch);
    token = (token + 7) % model->info().n_vocab;
  }
  st.SetItemsProcessed(st.iterations());  // tokens
}

// A rows x cols matrix of `dtype` filled with random bytes that decode to finite values.
rwkv::TensorMap random_matrix(rwkv::DType dtype, int64_t rows, int64_t cols) {
  rwkv::TensorMap map;
  rwkv::Tensor& t = map.add_owned("w", dtype, {rows, cols});
  std::mt19937 rng(42);
  auto* p = const_cast<uint8_t*>(t.data);
  for (uint64_t i = 0; i < t.nbytes; ++i) p[i] = uint8_t(rng());
  // Make every fp16 value (elements, block scales) a small finite number, and every fp32 or bf16
  // element a normal one of magnitude 2^-7 to 2^-5: subnormal weights (which a mask alone
  // leaves in fp32 and bf16) cost Intel CPUs a microcode assist per FMA, 15x slower.
  if (dtype == rwkv::DType::F32 || dtype == rwkv::DType::BF16) {
    const uint64_t element = dtype == rwkv::DType::F32 ? 4 : 2;
    for (uint64_t i = element - 1; i < t.nbytes; i += element) p[i] = (p[i] & 0x80) | 0x3c;
  } else {
    for (uint64_t i = 1; i < t.nbytes; i += 2) p[i] &= 0x3b;
  }
  return map;
}

void BM_Matvec(benchmark::State& st, rwkv::DType dtype) {
  const int64_t n = st.range(0);
  rwkv::TensorMap map = random_matrix(dtype, n, n);
  const rwkv::Tensor& w = map.at("w");
  rwkv::AlignedVector<float> x(static_cast<size_t>(n), 0.5f), y(static_cast<size_t>(n));
  for (auto _ : st) {
    rwkv::kernels::linear(w, x.data(), 1, y.data());
    benchmark::DoNotOptimize(y.data());
  }
  st.SetBytesProcessed(int64_t(st.iterations()) * int64_t(w.nbytes));
}

// Prefill of 64 tokens in sequence mode (one chunk), tokens per CPU second.
void BM_Prefill64(benchmark::State& st, const std::string& path) {
  auto model = rwkv::Model::load(path);
  std::vector<float> state(model->state_size()), logits(size_t(model->info().n_vocab));
  std::vector<int> tokens(64);
  for (size_t i = 0; i < tokens.size(); ++i)
    tokens[i] = int(i * 7919 % size_t(model->info().n_vocab));
  rwkv::Scratch scratch;
  for (auto _ : st) {
    model->init_state(state);
    model->forward_seq(tokens, state, logits, false, scratch, {.chunk = 64});
  }
  st.SetItemsProcessed(int64_t(st.iterations()) * 64);
}

// RWKV_BENCH_MODELS=a.safetensors:b.bin adds one-token forward and 64-token prefill benchmarks
// of those files (e.g. the 2048 x 24 models of docs/BENCHMARKS.md, which are too big to keep).
const bool kModelsRegistered = [] {
  const char* env = std::getenv("RWKV_BENCH_MODELS");
  std::string list = env ? env : "";
  for (size_t start = 0; start < list.size();) {
    size_t end = list.find(':', start);
    if (end == std::string::npos) end = list.size();
    const std::string path = list.substr(start, end - start);
    const std::string name = std::filesystem::path(path).filename().string();
    if (!path.empty()) {
      benchmark::RegisterBenchmark(("BM_Forward/" + name).c_str(), BM_Forward, path);
      benchmark::RegisterBenchmark(("BM_Prefill64/" + name).c_str(), BM_Prefill64, path);
    }
    start = end + 1;
  }
  return true;
}();

// linear() over T token rows of an n x n matrix (T = 1 is generation, larger T prefill); the
// GFLOPS counter is 2 n^2 T per CPU second. A third argument of 1 takes the int8-activation path
// (block types), with the weights packed as the loader packs them for that kernel.
void BM_Linear(benchmark::State& st, rwkv::DType dtype) {
  const int64_t n = st.range(0), T = st.range(1);
  rwkv::TensorMap map = random_matrix(dtype, n, n);
  rwkv::Tensor w = map.at("w");
  std::vector<uint8_t> groups;
  if (st.range(2) != 0) {
    w.int8_activations = true;
    if (rwkv::kernels::packs_int8_groups()) {
      groups.resize(size_t(rwkv::kernels::int8_groups_bytes(w)));
      rwkv::kernels::pack_int8_groups(w, 0, (n + 15) / 16, groups.data());
      w.int8_groups = groups.data();
    }
  }
  rwkv::AlignedVector<float> x(static_cast<size_t>(n * T), 0.5f), y(static_cast<size_t>(n * T));
  for (auto _ : st) {
    rwkv::kernels::linear(w, x.data(), T, y.data());
    benchmark::DoNotOptimize(y.data());
  }
  st.SetBytesProcessed(int64_t(st.iterations()) * int64_t(w.nbytes));
  st.counters["GFLOPS"] =
      benchmark::Counter(2e-9 * double(n * n * T), benchmark::Counter::kIsIterationInvariantRate);
}

// Generation's access pattern: one token against matrices that together are larger than the
// last-level cache, so the weights stream from DRAM, on a pool of `threads` (wall clock).
// Arguments: threads, int8 activations (ggml block types only), rows of each matrix (65536:
// one matrix the size of a 1.6B model's head; 2048: a 2048 x 2048 layer matrix, 32 of them
// taken in turn, as a forward pass does).
void BM_Stream(benchmark::State& st, rwkv::DType dtype) {
  const int threads = int(st.range(0));
  const int64_t rows = st.range(2), cols = 2048, n_matrices = 65536 / rows;
  std::vector<rwkv::TensorMap> maps;
  std::vector<rwkv::Tensor> ws;
  for (int64_t i = 0; i < n_matrices; ++i) maps.push_back(random_matrix(dtype, rows, cols));
  std::vector<std::vector<uint8_t>> groups;  // as the loader repacks them for the int8 kernel
  for (const rwkv::TensorMap& map : maps) {
    rwkv::Tensor w = map.at("w");
    w.int8_activations = st.range(1) != 0;
    if (w.int8_activations && rwkv::kernels::packs_int8_groups()) {
      groups.emplace_back(size_t(rwkv::kernels::int8_groups_bytes(w)));
      rwkv::kernels::pack_int8_groups(w, 0, (rows + 15) / 16, groups.back().data());
      w.int8_groups = groups.back().data();
    }
    ws.push_back(w);
  }
  rwkv::ThreadPool pool(threads);
  rwkv::AlignedVector<float> x(static_cast<size_t>(cols), 0.5f), y(static_cast<size_t>(rows));
  for (auto _ : st) {
    for (const rwkv::Tensor& w : ws) rwkv::kernels::linear(w, x.data(), 1, y.data(), &pool);
    benchmark::DoNotOptimize(y.data());
  }
  st.SetBytesProcessed(int64_t(st.iterations()) * n_matrices * int64_t(ws[0].nbytes));
}

// One token through the LoRAs of an RWKV-7 2048 x 24 model as `rwkv init` makes them (I8,
// ranks 96, 96, 64 and 256: x @ w1, then @ w2), 50 MB in all, so they stream from DRAM as in
// generation; pool of `threads`, wall clock. Arguments: threads, layers, whether a layer's
// four LoRAs go through matmul_many() together (as the model runs them) or one matmul() each,
// and whether the matrices are stored transposed (as the loader stores them) or as in the file.
void BM_Lora(benchmark::State& st) {
  const int threads = int(st.range(0));
  const int64_t C = 2048, ranks[] = {96, 96, 64, 256};
  std::vector<rwkv::TensorMap> maps;
  std::vector<float> scales(size_t(C), 1.0f / 64);
  for (int64_t layer = 0; layer < st.range(1); ++layer)
    for (int64_t r : ranks) {
      maps.push_back(random_matrix(rwkv::DType::I8, C, r));
      maps.push_back(random_matrix(rwkv::DType::I8, r, C));
    }
  std::vector<rwkv::Tensor> ws;
  uint64_t bytes = 0;
  std::vector<std::vector<uint8_t>> transposed;
  for (rwkv::TensorMap& map : maps) {
    rwkv::Tensor w = map.at("w");
    w.row_scale = scales.data();
    if (st.range(3) != 0) {
      transposed.emplace_back(w.nbytes);
      rwkv::kernels::transpose_for_matmul(w, transposed.back().data());
      w = rwkv::kernels::transposed_view(w, transposed.back().data());
    }
    ws.push_back(w);
    bytes += w.nbytes;
  }
  rwkv::ThreadPool pool(threads);
  rwkv::AlignedVector<float> x(static_cast<size_t>(C), 0.5f), hidden(512),
      y(static_cast<size_t>(4 * C));
  const bool together = st.range(2) != 0;
  for (auto _ : st) {
    for (size_t i = 0; i < ws.size(); i += 8) {
      rwkv::kernels::MatmulJob down[4], up[4];
      float* h = hidden.data();
      for (size_t j = 0; j < 4; ++j) {
        down[j] = {x.data(), &ws[i + 2 * j], h};
        up[j] = {h, &ws[i + 2 * j + 1], y.data() + j * C};
        h += ws[i + 2 * j].cols();
      }
      if (together) {
        rwkv::kernels::matmul_many(down, 1, &pool);
        rwkv::kernels::matmul_many(up, 1, &pool);
      } else {
        for (size_t j = 0; j < 4; ++j) {
          rwkv::kernels::matmul(down[j].x, 1, *down[j].w, down[j].y, &pool);
          rwkv::kernels::matmul(up[j].x, 1, *up[j].w, up[j].y, &pool);
        }
      }
    }
    benchmark::DoNotOptimize(y.data());
  }
  st.SetBytesProcessed(int64_t(st.iterations()) * int64_t(bytes));
}

// One parallel_for of 8 empty tasks on a pool of 2: what a fork/join costs a forward pass,
// which makes several per layer (wall clock).
void BM_ForkJoin(benchmark::State& st) {
  rwkv::ThreadPool pool(2);
  std::atomic<int64_t> sum{0};
  for (auto _ : st)
    pool.parallel_for(8, [&](int64_t i) { sum.fetch_add(i, std::memory_order_relaxed); });
  benchmark::DoNotOptimize(sum.load());
}

// One token through RWKV-7's WKV at 2048 channels (32 heads of 64) over `layers` states in
// turn (1: 0.5 MB, in L2; 24: 12.6 MB, in L3; 240: from DRAM, as in generation, where the
// weights streamed since the state was last used have evicted it), on a pool of `threads`.
void BM_Wkv7(benchmark::State& st) {
  const int threads = int(st.range(0)), layers = int(st.range(1));
  constexpr int64_t H = 32, N = 64, C = H * N;
  std::mt19937 rng(1);
  std::uniform_real_distribution<float> u(0.1f, 0.9f);
  std::vector<float> in(static_cast<size_t>(6 * C)), y(static_cast<size_t>(C)),
      state(static_cast<size_t>(layers * C * N));
  for (float& x : in) x = u(rng);
  for (float& x : state) x = u(rng) - 0.5f;
  const float* p = in.data();
  rwkv::ThreadPool pool(threads);
  for (auto _ : st)
    for (int l = 0; l < layers; ++l)
      rwkv::kernels::wkv7(p, p + C, p + 2 * C, p + 3 * C, p + 4 * C, p + 5 * C, 1, H, N,
                          state.data() + int64_t(l) * C * N, y.data(), &pool);
  benchmark::DoNotOptimize(y.data());
  st.SetBytesProcessed(int64_t(st.iterations()) * layers * C * N * 4);
}

}  // namespace

BENCHMARK(BM_Wkv7)
    ->ArgsProduct({{1, 2}, {1, 24, 240}})
    ->UseRealTime()
    ->Unit(benchmark::kMicrosecond);
BENCHMARK_CAPTURE(BM_Forward, rwkv4_ref_fp32, "testdata/reference/models/rwkv4-ref-fp32.pth");
BENCHMARK_CAPTURE(BM_Forward, rwkv5v2_ref_fp32, "testdata/reference/models/rwkv5v2-ref-fp32.pth");
BENCHMARK_CAPTURE(BM_Forward, rwkv6_ref_fp32, "testdata/reference/models/rwkv6-ref-fp32.pth");
BENCHMARK_CAPTURE(BM_Forward, rwkv7_ref_fp32, "testdata/reference/models/rwkv7-ref-fp32.pth");
BENCHMARK_CAPTURE(BM_Forward, rwkv7_ref_bf16, "testdata/reference/models/rwkv7-ref-bf16.pth");
BENCHMARK_CAPTURE(BM_Forward, tiny_6v0_3m_Q5_1, "testdata/tiny-rwkv/tiny-rwkv-6v0-3m-Q5_1.bin");
BENCHMARK_CAPTURE(BM_Matvec, F32, rwkv::DType::F32)->Arg(1024);
BENCHMARK_CAPTURE(BM_Matvec, F16, rwkv::DType::F16)->Arg(1024);
BENCHMARK_CAPTURE(BM_Matvec, BF16, rwkv::DType::BF16)->Arg(1024);
BENCHMARK_CAPTURE(BM_Matvec, Q8_0, rwkv::DType::Q8_0)->Arg(1024);
BENCHMARK_CAPTURE(BM_Matvec, Q5_1, rwkv::DType::Q5_1)->Arg(1024);
BENCHMARK_CAPTURE(BM_Matvec, Q4_0, rwkv::DType::Q4_0)->Arg(1024);
BENCHMARK_CAPTURE(BM_Matvec, Q4_1, rwkv::DType::Q4_1)->Arg(1024);
BENCHMARK_CAPTURE(BM_Matvec, Q5_0, rwkv::DType::Q5_0)->Arg(1024);
#define RWKV_LINEAR_BENCH(type, int8)                   \
  BENCHMARK_CAPTURE(BM_Linear, type, rwkv::DType::type) \
      ->ArgsProduct({{256, 1024, 2048}, {1, 4, 16, 64}, int8})
RWKV_LINEAR_BENCH(F32, {0});
RWKV_LINEAR_BENCH(F16, {0});
RWKV_LINEAR_BENCH(BF16, {0});
RWKV_LINEAR_BENCH(Q8_0, benchmark::CreateDenseRange(0, 1, 1));
RWKV_LINEAR_BENCH(Q5_1, benchmark::CreateDenseRange(0, 1, 1));
RWKV_LINEAR_BENCH(Q4_0, benchmark::CreateDenseRange(0, 1, 1));
#define RWKV_STREAM_BENCH(type, int8)                   \
  BENCHMARK_CAPTURE(BM_Stream, type, rwkv::DType::type) \
      ->ArgsProduct({{1, 2}, int8, {65536, 2048}})      \
      ->UseRealTime()                                   \
      ->Unit(benchmark::kMillisecond)
RWKV_STREAM_BENCH(F32, {0});
RWKV_STREAM_BENCH(F16, {0});
RWKV_STREAM_BENCH(BF16, {0});
RWKV_STREAM_BENCH(Q8_0, benchmark::CreateDenseRange(0, 1, 1));
RWKV_STREAM_BENCH(Q5_1, benchmark::CreateDenseRange(0, 1, 1));
RWKV_STREAM_BENCH(Q4_0, benchmark::CreateDenseRange(0, 1, 1));
BENCHMARK(BM_ForkJoin)->UseRealTime();
BENCHMARK(BM_Lora)
    ->ArgsProduct({{1, 2}, {1, 24}, {0, 1}, {0, 1}})
    ->UseRealTime()
    ->Unit(benchmark::kMicrosecond);

BENCHMARK_MAIN();
