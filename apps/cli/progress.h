// A one-line progress bar on stderr for the long-running commands (init, quantize, kl). It
// draws only when stderr is a terminal, so logs and tests see just the final summary lines.
#pragma once

#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>

namespace rwkv::cli {

class ProgressBar {
 public:
  explicit ProgressBar(std::string label) : label_(std::move(label)), enabled_(isatty(2) != 0) {}
  ~ProgressBar() { finish(); }

  // Redraws at most ten times a second (and always at 100%).
  void update(double done, double total, const std::string& detail = "") {
    if (!enabled_ || total <= 0) return;
    const auto now = std::chrono::steady_clock::now();
    if (done < total && drawn_ && now - last_ < std::chrono::milliseconds(100)) return;
    last_ = now;
    drawn_ = true;
    const double f = std::min(1.0, done / total);
    constexpr int kWidth = 30;
    const int filled = int(f * kWidth);
    fmt::print(stderr, "\r{} [{}{}] {:3.0f}% {}\x1b[K", label_, std::string(size_t(filled), '#'),
               std::string(size_t(kWidth - filled), '.'), 100 * f, detail);
    std::fflush(stderr);
  }
  // Ends the line so later output starts on its own.
  void finish() {
    if (enabled_ && drawn_) fmt::print(stderr, "\n");
    drawn_ = false;
  }

 private:
  std::string label_;
  bool enabled_;
  bool drawn_ = false;
  std::chrono::steady_clock::time_point last_;
};

inline std::string human_bytes(double bytes) {
  if (bytes >= 1e9) return fmt::format("{:.2f} GB", bytes / 1e9);
  if (bytes >= 1e6) return fmt::format("{:.1f} MB", bytes / 1e6);
  return fmt::format("{:.0f} KB", bytes / 1e3);
}

}  // namespace rwkv::cli
