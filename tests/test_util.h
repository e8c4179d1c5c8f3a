// Shared helpers for tests: locating ../shared test data, reading reference outputs, temp files.
#pragma once

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <sstream>
#include <string>
#include <vector>

namespace rwkv::test {

// ../shared beside the repository root (RWKV_SHARED set by CMake), or empty if absent.
inline std::filesystem::path shared_dir() {
  const char* env = std::getenv("RWKV_SHARED");
  std::filesystem::path p = env ? env : RWKV_DEFAULT_SHARED;
  return std::filesystem::exists(p / "testdata") ? p : std::filesystem::path();
}

// Skips the current test loudly when the shared test data is missing.
#define RWKV_REQUIRE_SHARED()                                                                \
  do {                                                                                       \
    if (::rwkv::test::shared_dir().empty())                                                  \
      GTEST_SKIP() << "SKIPPED: ../shared/testdata not found (set RWKV_SHARED to its path)"; \
  } while (0)

inline std::vector<uint8_t> read_bytes(const std::filesystem::path& p) {
  std::ifstream f(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
}

inline void write_bytes(const std::filesystem::path& p, const std::vector<uint8_t>& b) {
  std::ofstream f(p, std::ios::binary);
  f.write(reinterpret_cast<const char*>(b.data()), std::streamsize(b.size()));
}

// Writes `bytes` to `path` 4 KiB at a time (over what it held, then cut to size) and syncs it: the
// page cache then holds the file in 4 KiB folios, the case map_by_huge_pages() reads back
// (dirty pages could not be dropped from the page cache).
inline void write_by_small_pages(const std::filesystem::path& path,
                                 const std::vector<uint8_t>& bytes) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT, 0644);
  ASSERT_GE(fd, 0) << path;
  for (size_t at = 0; at < bytes.size(); at += 4096) {
    const size_t n = std::min<size_t>(4096, bytes.size() - at);
    ASSERT_EQ(::write(fd, bytes.data() + at, n), ssize_t(n));
  }
  ASSERT_EQ(::ftruncate(fd, off_t(bytes.size())), 0);
  ASSERT_EQ(::fsync(fd), 0);
  ::close(fd);
}

inline std::string read_text(const std::filesystem::path& p) {
  const std::vector<uint8_t> b = read_bytes(p);
  return {b.begin(), b.end()};
}

inline std::vector<float> read_f32(const std::filesystem::path& p) {
  std::vector<uint8_t> b = read_bytes(p);
  std::vector<float> out(b.size() / 4);
  std::memcpy(out.data(), b.data(), out.size() * 4);
  return out;
}

inline std::vector<int> read_tokens(const std::filesystem::path& p) {
  std::ifstream f(p);
  std::vector<int> out;
  for (int t; f >> t;) out.push_back(t);
  return out;
}

// The `rwkv` binary under test.
inline std::string cli_path() {
  const char* env = std::getenv("RWKV_CLI");
  return env ? env : RWKV_DEFAULT_CLI;
}

// One path component per test: parameterized names ("Suite/Fixture", "Name/0") lose their '/'.
inline std::filesystem::path temp_dir_of(const ::testing::TestInfo& info) {
  std::string name =
      "rwkv-test-" + std::to_string(::getpid()) + "-" + info.test_suite_name() + "-" + info.name();
  std::replace(name.begin(), name.end(), '/', '_');
  return std::filesystem::temp_directory_path() / name;
}

// A fresh directory under the system temp dir, unique per test. It is removed when the test
// passes or is skipped and kept, for inspection, when it fails.
inline std::filesystem::path temp_dir() {
  const std::filesystem::path p =
      temp_dir_of(*::testing::UnitTest::GetInstance()->current_test_info());
  std::filesystem::remove_all(p);
  std::filesystem::create_directories(p);
  return p;
}

// Also points the repack cache (LoadOptions::repack_cache_dir) of every test, and of the CLI
// it runs, into that directory, so tests never write to the user's cache.
class TempDirCleaner : public ::testing::EmptyTestEventListener {
  void OnTestStart(const ::testing::TestInfo& info) override {
    ::setenv("RWKV_CACHE_DIR", (temp_dir_of(info) / "repack-cache").c_str(), 1);
  }
  void OnTestEnd(const ::testing::TestInfo& info) override {
    std::error_code ignored;  // most tests made no directory
    // Skipped tests count too (Passed() is false for them).
    if (!info.result()->Failed()) std::filesystem::remove_all(temp_dir_of(info), ignored);
  }
};

// Registered once per test binary, before main() runs the tests.
inline const bool kTempDirCleanerRegistered = [] {
  ::testing::UnitTest::GetInstance()->listeners().Append(new TempDirCleaner);
  return true;
}();

struct CommandResult {
  int exit_code = -1;
  std::string out, err;
};

// Runs a shell command line (it may hold pipes and redirections) with `input` on stdin,
// capturing stdout and stderr through files in `dir`.
inline CommandResult run_shell(const std::string& command, const std::filesystem::path& dir,
                               const std::string& input = "") {
  const auto in = dir / "stdin", out = dir / "stdout", err = dir / "stderr";
  write_bytes(in, std::vector<uint8_t>(input.begin(), input.end()));
  const int status = std::system(
      ("(" + command + ") <" + in.string() + " >" + out.string() + " 2>" + err.string()).c_str());
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, read_text(out), read_text(err)};
}

}  // namespace rwkv::test

#include "rwkv/model.h"

namespace rwkv::test {

// Logits after every token (row-major, tokens.size() x n_vocab) and the final state, feeding
// `tokens` one by one from the initial state.
struct RunResult {
  std::vector<float> logits;
  std::vector<float> state;
};

inline RunResult run_tokens(const Model& model, const std::vector<int>& tokens) {
  RunResult out;
  out.state.resize(model.state_size());
  model.init_state(out.state);
  std::vector<float> logits(static_cast<size_t>(model.info().n_vocab));
  Scratch scratch;
  for (int t : tokens) {
    model.forward(t, out.state, logits, scratch);
    out.logits.insert(out.logits.end(), logits.begin(), logits.end());
  }
  return out;
}

struct DiffStats {
  double max_abs = 0;
  double mean_abs = 0;
  double sum = 0;
};

inline DiffStats diff(const float* a, const float* b, size_t n) {
  DiffStats s;
  for (size_t i = 0; i < n; ++i) {
    const double d = double(a[i]) - double(b[i]);
    s.max_abs = std::max(s.max_abs, std::abs(d));
    s.mean_abs += std::abs(d);
    s.sum += d;
  }
  if (n) s.mean_abs /= double(n);
  return s;
}

// Largest |a - b| / max(1, |b|): the reference README's state tolerance is 1e-3 of this.
inline double max_rel_diff(const std::vector<float>& a, const std::vector<float>& b) {
  double m = 0;
  for (size_t i = 0; i < std::min(a.size(), b.size()); ++i)
    m = std::max(m, std::abs(double(a[i]) - b[i]) / std::max(1.0, std::abs(double(b[i]))));
  return m;
}

}  // namespace rwkv::test
