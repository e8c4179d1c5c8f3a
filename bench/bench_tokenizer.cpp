// Tokenizer throughput: vocab load time, encode and decode MB/s and tokens/s of the World and NeoX
// tokenizers on a few MB of mixed text (every shared test text, concatenated, repeated 32 times:
// prose, code, JSON, CJK, Arabic, Hindi, emoji, whitespace runs; NeoX skips the inputs that are
// not valid UTF-8, as its reference does). Single thread. Run:
//   build/rwkv_bench --benchmark_filter=Tokenizer --benchmark_repetitions=5
//                    --benchmark_report_aggregates_only=true
// Medians go to docs/BENCHMARKS.md. (main() is in bench_forward.cpp.)
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "rwkv/tokenizer.h"
#include "tokenizer/unicode.h"

namespace {

std::filesystem::path tokenizer_shared_dir() {
  const char* env = std::getenv("RWKV_SHARED");
  return env ? env : RWKV_DEFAULT_SHARED;
}

std::string read_file(const std::filesystem::path& p) {
  std::ifstream f(p, std::ios::binary);
  std::ostringstream s;
  s << f.rdbuf();
  return std::move(s).str();
}

constexpr int kRepeat = 32;

// The shared test texts in name order, concatenated kRepeat times; valid UTF-8 ones only if asked.
const std::string& corpus(bool valid_utf8_only) {
  static std::string all[2];
  std::string& out = all[valid_utf8_only];
  if (!out.empty()) return out;
  std::vector<std::filesystem::path> files;
  const auto dir = tokenizer_shared_dir() / "testdata/tokenizer";
  if (!std::filesystem::exists(dir)) return out;
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    const std::string name = e.path().filename().string();
    if (name.ends_with(".txt") && name.find(".decoded") == std::string::npos)
      files.push_back(e.path());
  }
  std::sort(files.begin(), files.end());
  std::string once;
  for (const auto& f : files) {
    const std::string text = read_file(f);
    if (!valid_utf8_only || rwkv::unicode::is_valid_utf8(text)) once += text;
  }
  for (int i = 0; i < kRepeat; ++i) out += once;
  return out;
}

std::string vocab_path(const char* kind) {
  return (tokenizer_shared_dir() / "tokenizers" /
          (std::string(kind) == "world" ? "rwkv_vocab_v20230424.txt" : "20B_tokenizer.json"))
      .string();
}

bool missing(benchmark::State& st, const std::string& path) {
  if (std::filesystem::exists(path) && !corpus(false).empty()) return false;
  st.SkipWithError(("missing " + path + " or the shared test texts").c_str());
  return true;
}

void BM_TokenizerLoad(benchmark::State& st, const char* kind) {
  const std::string path = vocab_path(kind);
  if (missing(st, path)) return;
  for (auto _ : st) benchmark::DoNotOptimize(rwkv::Tokenizer::load(path));
}

void BM_TokenizerEncode(benchmark::State& st, const char* kind) {
  const std::string path = vocab_path(kind);
  if (missing(st, path)) return;
  const auto tok = rwkv::Tokenizer::load(path);
  const std::string& text = corpus(std::string(kind) == "neox");
  size_t tokens = 0;
  for (auto _ : st) {
    const auto ids = tok->encode(text);
    tokens = ids.size();
    benchmark::DoNotOptimize(ids.data());
  }
  st.SetBytesProcessed(int64_t(st.iterations()) * int64_t(text.size()));
  st.counters["tokens/s"] =
      benchmark::Counter(double(tokens), benchmark::Counter::kIsIterationInvariantRate);
  st.counters["MB"] = double(text.size()) / 1e6;
  st.counters["tokens"] = double(tokens);
}

void BM_TokenizerDecode(benchmark::State& st, const char* kind) {
  const std::string path = vocab_path(kind);
  if (missing(st, path)) return;
  const auto tok = rwkv::Tokenizer::load(path);
  const auto ids = tok->encode(corpus(std::string(kind) == "neox"));
  size_t bytes = 0;
  for (auto _ : st) {
    const std::string text = tok->decode(ids);
    bytes = text.size();
    benchmark::DoNotOptimize(text.data());
  }
  st.SetBytesProcessed(int64_t(st.iterations()) * int64_t(bytes));
  st.counters["tokens/s"] =
      benchmark::Counter(double(ids.size()), benchmark::Counter::kIsIterationInvariantRate);
}

}  // namespace

BENCHMARK_CAPTURE(BM_TokenizerLoad, world, "world")->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_TokenizerLoad, neox, "neox")->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_TokenizerEncode, world, "world")->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_TokenizerEncode, neox, "neox")->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_TokenizerDecode, world, "world")->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_TokenizerDecode, neox, "neox")->Unit(benchmark::kMillisecond);
