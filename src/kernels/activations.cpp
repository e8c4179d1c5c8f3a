#include "kernels/activations.h"

#include <algorithm>
#include <cstring>

#include "core/simd.h"

namespace rwkv::kernels {

namespace {

constexpr int kW = 16;
using V = simd::Lanes<kW>::type;
using VI = int32_t __attribute__((vector_size(4 * kW)));

// exp(x) = 2^n exp(r), n = round(x / ln 2), r = x - n ln 2 (in two parts, so r is exact), and
// exp(r) on [-ln2/2, ln2/2] by Cephes' degree-7 polynomial.
[[gnu::always_inline]] inline V exp_lanes(V x) {
  const V hi = V{} + 87.3f, lo = V{} - 87.3f;
  x = x > hi ? hi : x;
  x = x < lo ? lo : x;
  // Round to nearest by the float32 magic number (|x / ln 2| < 2^22).
  const V magic = V{} + 12582912.0f;
  const V n = (x * 1.44269504088896341f + magic) - magic;
  const V r = (x - n * 0.693359375f) - n * -2.12194440e-4f;
  V p = V{} + 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * (r * r) + r + 1.0f;
  // 2^n as a float's exponent bits (n in [-126, 126]).
  const VI e = (__builtin_convertvector(n, VI) + 127) << 23;
  V scale;
  std::memcpy(&scale, &e, sizeof scale);
  return p * scale;
}

enum class Fn { kExp, kSigmoid, kSilu, kReluSquared };
template <Fn kFn>
[[gnu::always_inline]] inline V lanes(V v) {
  if constexpr (kFn == Fn::kExp)
    return exp_lanes(v);
  else if constexpr (kFn == Fn::kSigmoid)
    return 1.0f / (1.0f + exp_lanes(-v));
  else if constexpr (kFn == Fn::kSilu)
    return v / (1.0f + exp_lanes(-v));
  else {
    const V r = v > 0.0f ? v : V{} - V{};
    return r * r;
  }
}
// y = fn(x) for n elements.
template <Fn kFn>
[[gnu::always_inline]] inline void map(const float* x, float* y, int64_t n) {
  int64_t i = 0;
  for (; i + kW <= n; i += kW) simd::store<kW>(y + i, lanes<kFn>(simd::load<kW>(x + i)));
  if (i == n) return;
  // The tail through the same lanes, padded with zeros.
  float in[kW] = {}, out[kW];
  std::copy(x + i, x + n, in);
  simd::store<kW>(out, lanes<kFn>(simd::load<kW>(in)));
  std::copy(out, out + (n - i), y + i);
}

// The index of the first largest of x[0, n): the largest value by lanes (a NaN never passes the
// compare), then its first position.
[[gnu::always_inline]] inline int64_t first_largest(const float* x, int64_t n) {
  V top = V{} - __builtin_inff();
  int64_t i = 0;
  for (; i + kW <= n; i += kW) {
    const V v = simd::load<kW>(x + i);
    top = v > top ? v : top;
  }
  float best = -__builtin_inff();
  for (int j = 0; j < kW; ++j) best = top[j] > best ? top[j] : best;
  for (; i < n; ++i) best = x[i] > best ? x[i] : best;
  for (int64_t k = 0; k < n; ++k)
    if (x[k] == best) return k;
  return 0;
}

// exp(x - shift), 0 where x - shift <= -87 (or is NaN).
[[gnu::always_inline]] inline V numerator_lanes(V x, float shift) {
  const V d = x - shift;
  return d > -87.0f ? exp_lanes(d) : V{} - V{};
}
// The sum of numerator_lanes() over x[0, n), in double lanes so that 65536 terms keep float32's
// precision each; with kStore, each term also goes to y.
template <bool kStore>
[[gnu::always_inline]] inline double softmax_numerators(const float* x, int64_t n, float shift,
                                                        float* y) {
  using D = double __attribute__((vector_size(8 * kW)));
  D total = D{};
  int64_t i = 0;
  for (; i + kW <= n; i += kW) {
    const V e = numerator_lanes(simd::load<kW>(x + i), shift);
    if constexpr (kStore) simd::store<kW>(y + i, e);
    total += __builtin_convertvector(e, D);
  }
  double sum = 0;
  for (int j = 0; j < kW; ++j) sum += total[j];
  if (i < n) {
    float in[kW] = {}, out[kW];
    std::copy(x + i, x + n, in);
    simd::store<kW>(out, numerator_lanes(simd::load<kW>(in), shift));
    if constexpr (kStore) std::copy(out, out + (n - i), y + i);
    for (int64_t j = 0; j < n - i; ++j) sum += double(out[j]);
  }
  return sum;
}

}  // namespace

// Each public function, compiled once per ISA level.
#define RWKV_ACTIVATION(name, fn)                                                          \
  __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default"))) void name( \
      const float* x, float* y, int64_t n) {                                               \
    map<fn>(x, y, n);                                                                      \
  }
RWKV_ACTIVATION(exp_of, Fn::kExp)
RWKV_ACTIVATION(sigmoid_of, Fn::kSigmoid)
RWKV_ACTIVATION(silu_of, Fn::kSilu)
RWKV_ACTIVATION(relu_squared_of, Fn::kReluSquared)
#undef RWKV_ACTIVATION

__attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default"))) int64_t argmax(
    const float* x, int64_t n) {
  return first_largest(x, n);
}

__attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default"))) double sum_exp(
    const float* x, int64_t n, float shift) {
  return softmax_numerators<false>(x, n, shift, nullptr);
}

__attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default"))) double
softmax_numerators_of(const float* x, int64_t n, float shift, float* y) {
  return softmax_numerators<true>(x, n, shift, y);
}

}  // namespace rwkv::kernels
