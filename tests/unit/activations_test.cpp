// The vectorized exp, sigmoid and silu against double-precision libm and at saturation, relu^2
// exactly, and the same bits for a value wherever it sits in the array (body or padded tail).
#include "kernels/activations.h"

#include <gtest/gtest.h>

#include <algorithm>
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

TEST(Activations, ArgmaxIsTheFirstLargestAndSkipsNaN) {
  for (int64_t n : {1, 15, 16, 17, 65536}) {
    std::vector<float> x(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) x[size_t(i)] = std::sin(0.37f * float(i));
    const int64_t want = int64_t(std::max_element(x.begin(), x.end()) - x.begin());
    EXPECT_EQ(argmax(x.data(), n), want) << n;
    // A tie later on, and a NaN: still the first largest.
    x.back() = x[size_t(want)];
    x[0] = n > 1 ? std::numeric_limits<float>::quiet_NaN() : x[0];
    EXPECT_EQ(argmax(x.data(), n), n > 1 && want == 0 ? n - 1 : want) << n;
  }
  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = INFINITY;
  const float all_nan[] = {nan, nan, nan}, with_inf[] = {-inf, 3.0f, inf, inf};
  EXPECT_EQ(argmax(all_nan, 3), 0);
  EXPECT_EQ(argmax(with_inf, 4), 2);
}

TEST(Activations, SumExpMatchesDouble) {
  for (int64_t n : {1, 7, 16, 33, 65536}) {
    std::vector<float> x(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) x[size_t(i)] = 8.0f * std::sin(1.7f * float(i)) - 2.0f;
    const float top = *std::max_element(x.begin(), x.end());
    double want = 0;
    for (float v : x) want += std::exp(double(v) - double(top));
    EXPECT_NEAR(sum_exp(x.data(), n, top), want, want * 3e-7) << n;
  }
}

TEST(Activations, SoftmaxNumeratorsAreZeroFarBelowTheShift) {
  for (int64_t n : {3, 16, 37}) {
    std::vector<float> x(static_cast<size_t>(n)), y(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) x[size_t(i)] = 5.0f - 3.1f * float(i);
    x[1] = -INFINITY;
    double want_sum = 0;
    const double sum = softmax_numerators_of(x.data(), n, 5.0f, y.data());
    for (int64_t i = 0; i < n; ++i) {
      const double d = double(x[size_t(i)]) - 5.0, want = d > -87 ? std::exp(d) : 0.0;
      if (want == 0)
        EXPECT_EQ(y[size_t(i)], 0.0f) << i;
      else
        EXPECT_NEAR(y[size_t(i)], want, want * 3e-7) << i;
      want_sum += want;
    }
    EXPECT_NEAR(sum, want_sum, want_sum * 3e-7);
  }
}

}  // namespace
}  // namespace rwkv::kernels
