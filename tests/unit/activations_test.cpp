// The vectorized exp, sigmoid and silu against double-precision libm and at saturation, relu^2
// exactly, and the same bits for a value wherever it sits in the array (body or padded tail).
#include "kernels/activations.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

namespace rwkv::kernels {
namespace {

// 2 float32 ulps, relative.
constexpr double kTolerance = 2.0 * 0x1p-23;

std::vector<float> sweep() {
  std::vector<float> x;
  for (double v = -87.0; v <= 87.0; v += 0.00731) x.push_back(float(v));
  for (float v : {0.0f, -0.0f, 1e-30f, -1e-30f, 1e-7f, 0.5f, -0.5f, 0.34657359f, 87.0f, -87.0f})
    x.push_back(v);
  return x;
}

TEST(Activations, MatchDoublePrecisionWithinTwoUlps) {
  const std::vector<float> x = sweep();
  std::vector<float> e(x.size()), s(x.size()), u(x.size());
  exp_of(x.data(), e.data(), int64_t(x.size()));
  sigmoid_of(x.data(), s.data(), int64_t(x.size()));
  silu_of(x.data(), u.data(), int64_t(x.size()));
  for (size_t i = 0; i < x.size(); ++i) {
    const double xi = x[i], want_e = std::exp(xi), want_s = 1 / (1 + std::exp(-xi));
    ASSERT_LE(std::abs(e[i] - want_e), kTolerance * want_e) << "exp(" << xi << ")";
    ASSERT_LE(std::abs(s[i] - want_s), kTolerance * want_s) << "sigmoid(" << xi << ")";
    ASSERT_LE(std::abs(u[i] - xi * want_s), kTolerance * std::abs(xi * want_s) + 1e-45)
        << "silu(" << xi << ")";
  }
}

// The same float32 arithmetic as the plain loop it replaced: exact, and 0 for NaN.
TEST(Activations, ReluSquaredIsExact) {
  std::vector<float> x = sweep();
  x.push_back(std::nanf(""));
  x.push_back(-std::numeric_limits<float>::infinity());
  std::vector<float> y(x.size());
  relu_squared_of(x.data(), y.data(), int64_t(x.size()));
  for (size_t i = 0; i < x.size(); ++i) {
    const float want = x[i] > 0 ? x[i] * x[i] : 0.0f;
    ASSERT_EQ(0, std::memcmp(&want, &y[i], 4)) << "relu^2(" << x[i] << ") = " << y[i];
  }
}

TEST(Activations, SaturateInsteadOfOverflowing) {
  const float x[] = {-1e4f, -100.0f, 100.0f, 1e4f};
  float e[4], s[4];
  exp_of(x, e, 4);
  sigmoid_of(x, s, 4);
  for (int i = 0; i < 4; ++i) ASSERT_TRUE(std::isfinite(e[i]) && std::isfinite(s[i])) << x[i];
  EXPECT_LT(e[0], 1e-37f);
  EXPECT_GT(e[3], 1e37f);
  EXPECT_LT(s[0], 1e-37f);
  EXPECT_GE(s[0], 0.0f);
  EXPECT_EQ(s[3], 1.0f);
}

// Sequence mode relies on this: a channel's value is the same bits in a row of one token and
// at any offset of a longer call, including the padded tail.
TEST(Activations, ResultDoesNotDependOnPosition) {
  std::vector<float> x(37);
  for (size_t i = 0; i < x.size(); ++i) x[i] = 0.37f * float(i) - 6.0f;
  for (auto fn : {exp_of, sigmoid_of, silu_of, relu_squared_of}) {
    std::vector<float> all(x.size());
    fn(x.data(), all.data(), int64_t(x.size()));
    for (size_t i = 0; i < x.size(); ++i) {
      float alone;
      fn(&x[i], &alone, 1);
      ASSERT_EQ(0, std::memcmp(&alone, &all[i], 4)) << "element " << i;
    }
  }
}

}  // namespace
}  // namespace rwkv::kernels
