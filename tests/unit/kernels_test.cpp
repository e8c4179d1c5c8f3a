// Every SIMD variant of every kernel against the scalar reference, for every stored type, with a
// bound derived from float32 summation: reordering a K-term sum of products changes it by at
// most about K * 2^-24 * sum |w_i x_i| (we allow twice that).
#include "kernels/kernels.h"

#include <gtest/gtest.h>

#include <cstring>
#include <random>

#include "core/cpu.h"
#include "core/quant.h"
#include "io/tensor_map.h"
#include "kernels/half_table.h"
#include "kernels/int8.h"
#include "rwkv/error.h"
#include "rwkv/model.h"
#include "rwkv/thread_pool.h"

namespace rwkv::kernels {
namespace {

// A (rows, cols) tensor of `dtype` with random contents that decode to finite values.
Tensor& random_tensor(TensorMap& map, DType dtype, int64_t rows, int64_t cols, unsigned seed) {
  Tensor& t = map.add_owned("w" + std::to_string(map.size()), dtype, {rows, cols});
  std::mt19937 rng(seed);
  auto* p = const_cast<uint8_t*>(t.data);
  if (dtype == DType::F32 || dtype == DType::F16 || dtype == DType::BF16) {
    std::normal_distribution<float> normal(0.0f, 1.0f);
    for (int64_t i = 0; i < t.numel(); ++i) {
      const float v = normal(rng);
      if (dtype == DType::F32) {
        std::memcpy(p + 4 * i, &v, 4);
      } else {
        const uint16_t h = dtype == DType::F16 ? fp32_to_fp16(v) : fp32_to_bf16(v);
        std::memcpy(p + 2 * i, &h, 2);
      }
    }
    return t;
  }
  // Blocks: random bytes, then every 16-bit scale/min replaced by a small finite half.
  for (uint64_t i = 0; i < t.nbytes; ++i) p[i] = uint8_t(rng());
  if (dtype == DType::I8) {
    // Random int8 values (-128 included) and a positive scale per row, kept in the map.
    Tensor& scales = map.add_owned("s" + std::to_string(map.size()), DType::F32, {rows});
    auto* s = reinterpret_cast<float*>(const_cast<uint8_t*>(scales.data));
    std::uniform_real_distribution<float> scale(0.001f, 0.01f);
    for (int64_t r = 0; r < rows; ++r) s[r] = scale(rng);
    t.row_scale = s;  // the map's elements stay where they are when it grows
    return t;
  }
  const DTypeInfo& info = dtype_info(dtype);
  const bool has_min = dtype == DType::Q4_1 || dtype == DType::Q5_1;
  std::uniform_real_distribution<float> scale(-0.1f, 0.1f);
  for (uint64_t b = 0; b < t.nbytes / uint64_t(info.block_bytes); ++b) {
    uint8_t* blk = p + b * uint64_t(info.block_bytes);
    for (int j = 0; j < (has_min ? 2 : 1); ++j) {
      const uint16_t h = fp32_to_fp16(scale(rng));
      std::memcpy(blk + 2 * j, &h, 2);
    }
  }
  return t;
}

// Over K inputs, the sum of a(i) * b(i) where each a(i) is rounded to int8 per block of 32 (to
// within half a step, max |a| / 127, of its block): the exact sum, the sum of |a b|, and the most
// the rounding can move the sum.
struct Int8Rounding {
  double exact = 0, magnitude = 0, bound = 0;
};
template <typename A, typename B>
Int8Rounding int8_rounding(int64_t K, const A& a, const B& b) {
  Int8Rounding r;
  for (int64_t block = 0; block < K / 32; ++block) {
    double amax = 0, bsum = 0;
    for (int64_t i = 32 * block; i < 32 * block + 32; ++i) {
      amax = std::max(amax, std::abs(a(i)));
      bsum += std::abs(b(i));
      r.exact += a(i) * b(i);
      r.magnitude += std::abs(a(i) * b(i));
    }
    r.bound += amax / 127 / 2 * bsum;
  }
  return r;
}

// w stored transposed for matmul() (transpose_for_matmul) in a buffer the map owns, or w
// itself where it cannot be.
const Tensor& transposed_in(TensorMap& map, const Tensor& w) {
  if (!can_transpose_for_matmul(w)) return w;
  Tensor& buffer =
      map.add_owned("t" + std::to_string(map.size()), DType::F32, {int64_t(w.nbytes + 3) / 4});
  Tensor& out = map.add_owned("v" + std::to_string(map.size()), DType::F32, {0});
  transpose_for_matmul(w, const_cast<uint8_t*>(buffer.data));
  out = transposed_view(w, buffer.data);
  return out;
}

const DType kAllTypes[] = {DType::F32,  DType::F16,  DType::BF16, DType::Q4_0, DType::Q4_1,
                           DType::Q5_0, DType::Q5_1, DType::Q8_0, DType::I8};
// The types whose rows are blocks of 32 in the kernels (I8 included), and take int8 activations.
const DType kBlockTypes[] = {DType::Q4_0, DType::Q4_1, DType::Q5_0,
                             DType::Q5_1, DType::Q8_0, DType::I8};

class KernelVariants : public ::testing::TestWithParam<KernelVariant> {
 protected:
  void SetUp() override {
    const auto available = available_variants();
    if (std::find(available.begin(), available.end(), GetParam()) == available.end())
      GTEST_SKIP() << "SKIPPED: " << variant_name(GetParam()) << " not supported by this CPU";
  }
};

TEST_P(KernelVariants, LinearMatchesReferenceForEveryTypeAndShape) {
  for (DType dtype : kAllTypes) {
    for (int64_t K : {32, 64, 96, 160, 2048}) {
      for (int64_t cols : {K, K + (is_integer(dtype) ? 0 : 7)}) {
        for (int64_t rows : {1, 5, 67}) {
          TensorMap map;
          const Tensor& w = random_tensor(map, dtype, rows, cols, unsigned(rows * 131 + cols));
          for (int64_t T : {1, 2, 3, 4, 5, 9, 70}) {
            std::vector<float> x(size_t(T * cols)), want(size_t(T * rows)), got(want.size());
            std::mt19937 rng{static_cast<unsigned>(T)};
            std::normal_distribution<float> normal;
            for (float& v : x) v = normal(rng);
            linear(w, x.data(), T, want.data(), nullptr, KernelVariant::kScalar);
            linear(w, x.data(), T, got.data(), nullptr, GetParam());
            std::vector<float> wf = to_f32(w);
            for (int64_t t = 0; t < T; ++t)
              for (int64_t r = 0; r < rows; ++r) {
                double mag = 0, exact = 0;
                for (int64_t c = 0; c < cols; ++c) {
                  const double p = double(wf[size_t(r * cols + c)]) * x[size_t(t * cols + c)];
                  mag += std::abs(p);
                  exact += p;
                }
                const double bound = 2.0 * double(cols) * std::ldexp(1.0, -24) * mag + 1e-30;
                // The reference itself is the product with the decoded weights (for I8, the row
                // scales applied), and the variant is the reference up to summation order.
                ASSERT_LE(std::abs(want[size_t(t * rows + r)] - exact), bound)
                    << dtype_name(dtype) << " rows=" << rows << " cols=" << cols << " T=" << T;
                ASSERT_LE(std::abs(double(got[size_t(t * rows + r)]) - want[size_t(t * rows + r)]),
                          bound)
                    << dtype_name(dtype) << " rows=" << rows << " cols=" << cols << " T=" << T
                    << " r=" << r << " t=" << t;
              }
          }
        }
      }
    }
  }
}

TEST_P(KernelVariants, MatmulMatchesReference) {
  // 300 inputs: two segments of rows (kernels.h), summed apart and then added; 320 and 64: I8
  // that can be stored transposed (a multiple of 32 rows), 300 and 40 cannot.
  for (DType dtype : kAllTypes)
    for (int64_t I : {40, 64, 300, 320})
      for (bool transposed : {false, true}) {
        TensorMap map;
        const int64_t O = is_integer(dtype) ? 96 : 75;
        const Tensor& stored = random_tensor(map, dtype, I, O, 5);
        const Tensor& w = transposed ? transposed_in(map, stored) : stored;
        if (transposed && !w.transposed) {
          EXPECT_FALSE(dtype == DType::F32 || dtype == DType::F16 || dtype == DType::BF16 ||
                       (dtype == DType::I8 && I % 32 == 0));
          EXPECT_THROW(transpose_for_matmul(stored, nullptr), Error);
          continue;
        }
        for (int64_t T : {1, 3, 8}) {
          std::vector<float> x(size_t(T * I)), want(size_t(T * O)), got(want.size());
          std::mt19937 rng(7);
          std::normal_distribution<float> normal;
          for (float& v : x) v = normal(rng);
          matmul(x.data(), T, stored, want.data(), nullptr, KernelVariant::kScalar);
          matmul(x.data(), T, w, got.data(), nullptr, GetParam());
          const std::vector<float> wf = to_f32(stored);
          for (int64_t t = 0; t < T; ++t)
            for (int64_t o = 0; o < O; ++o) {
              double exact = 0;
              for (int64_t i = 0; i < I; ++i)
                exact += double(x[size_t(t * I + i)]) * wf[size_t(i * O + o)];
              const size_t k = size_t(t * O + o);
              ASSERT_NEAR(want[k], exact, 1e-4 * (1 + std::abs(exact))) << dtype_name(dtype);
              ASSERT_NEAR(got[k], want[k], 1e-4 * (1 + std::abs(want[k])))
                  << dtype_name(dtype) << " I=" << I << " transposed=" << transposed;
            }
        }
      }
}

// The SIMD kernels take ggml block scales from a table built at compile time: it must hold
// fp16_to_fp32() (checked against known values in quant_test) at every index, as evaluated at
// run time, subnormals, infinities and NaNs included.
TEST(Kernels, HalfTableIsTheScalarConversionOfEveryFp16) {
  for (uint32_t h = 0; h < 65536; ++h) {
    const float table = kHalfToFloat[h], scalar = fp16_to_fp32(uint16_t(h));
    ASSERT_EQ(std::memcmp(&table, &scalar, 4), 0) << "fp16 bits " << h;
  }
}

// The kernels read activations with 64-byte loads; from a buffer 16 bytes past a line (where
// malloc puts large blocks) each load touches two lines, and a multi-token tile ran at half
// speed. Sizes from one float to well past malloc's mmap threshold.
TEST(Kernels, ScratchAndInt8ActivationsAreCacheLineAligned) {
  Scratch scratch;
  for (size_t n : {size_t(1), size_t(1000), size_t(1) << 16, size_t(1) << 22}) {
    for (int slot = 0; slot < 2; ++slot)
      EXPECT_EQ(reinterpret_cast<uintptr_t>(scratch.get(n, slot)) % 64, 0u) << n << " " << slot;
  }
  for (int64_t T : {1, 64}) {
    Int8Activations a;
    a.reset(DType::Q4_0, T, 2048);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(a.q.data()) % 64, 0u) << T;
  }
}

// A product over no inputs (a zero-rank matrix from a file) is zero, not a crash.
TEST(Kernels, MatmulOverNoRowsIsZero) {
  ThreadPool pool(2);
  for (KernelVariant v : available_variants()) {
    TensorMap map;
    Tensor& w = map.add_owned("w", DType::F32, {0, 64});
    std::vector<float> y(2 * 64, std::nanf(""));
    matmul(nullptr, 2, w, y.data(), &pool, v);
    for (float e : y) ASSERT_EQ(e, 0.0f) << variant_name(v);
  }
}

// A LoRA product split over threads by column blocks (or, stored transposed, by rows), or over
// tokens, gives the very same bits: every output is one fixed-order sum over the inputs.
TEST(Kernels, MatmulDoesNotDependOnTokensOrThreads) {
  ThreadPool pool(3);
  for (KernelVariant v : available_variants()) {
    for (DType dtype : kAllTypes)
      for (bool transposed : {false, true}) {
        TensorMap map;
        const int64_t I = is_integer(dtype) ? 320 : 300, O = is_integer(dtype) ? 320 : 333, T = 6;
        const Tensor& stored = random_tensor(map, dtype, I, O, 9);
        const Tensor& w = transposed ? transposed_in(map, stored) : stored;
        std::vector<float> x(size_t(T * I)), all(size_t(T * O)), threaded(all.size());
        std::vector<float> alone(static_cast<size_t>(O));
        std::mt19937 rng(5);
        std::normal_distribution<float> normal;
        for (float& e : x) e = normal(rng);
        matmul(x.data(), T, w, all.data(), nullptr, v);
        matmul(x.data(), T, w, threaded.data(), &pool, v);
        ASSERT_EQ(0, std::memcmp(all.data(), threaded.data(), all.size() * 4))
            << variant_name(v) << " " << dtype_name(dtype) << " transposed=" << w.transposed;
        for (int64_t t = 0; t < T; ++t) {
          matmul(x.data() + t * I, 1, w, alone.data(), &pool, v);
          ASSERT_EQ(0, std::memcmp(alone.data(), all.data() + t * O, size_t(O) * 4))
              << variant_name(v) << " " << dtype_name(dtype) << " t=" << t
              << " transposed=" << w.transposed;
        }
      }
  }
}

// An I8 LoRA marked for int8 activations (stored transposed): x scaled by the row scales, then
// rounded to int8 per 32 inputs, meets the integers exactly. Every variant gives the scalar
// reference's bits, packed or not, one token or several, on a pool or not; and the result is
// the exact product up to the rounding of the inputs (half a step of each block's scale).
TEST(Kernels, Int8MatmulRoundsTheScaledInput) {
  ThreadPool pool(2);
  for (const auto& [I, O] : {std::pair<int64_t, int64_t>{64, 96}, {2048, 96}, {96, 2048}}) {
    TensorMap map;
    const Tensor& stored = random_tensor(map, DType::I8, I, O, unsigned(I + O));
    Tensor w = transposed_in(map, stored);
    w.int8_activations = true;
    const int64_t T = 3;
    std::vector<float> x(size_t(T * I));
    std::mt19937 rng(3);
    std::normal_distribution<float> normal;
    for (float& e : x) e = normal(rng);
    std::vector<float> want(size_t(T * O));
    matmul(x.data(), T, w, want.data(), nullptr, KernelVariant::kScalar);
    // What is rounded is x times the row scales; it meets the stored integers.
    const std::vector<float> wf = to_f32(stored);
    for (int64_t t = 0; t < T; ++t)
      for (int64_t o = 0; o < O; ++o) {
        const Int8Rounding r = int8_rounding(
            I, [&](int64_t i) { return double(x[size_t(t * I + i)]) * stored.row_scale[i]; },
            [&](int64_t i) { return double(wf[size_t(i * O + o)]) / stored.row_scale[i]; });
        ASSERT_NEAR(want[size_t(t * O + o)], r.exact, 1.01 * r.bound + 1e-5 * r.magnitude)
            << "I=" << I << " O=" << O;
      }
    EXPECT_NE(want, [&] {  // the int8 path was taken
      Tensor exact_w = w;
      exact_w.int8_activations = false;
      std::vector<float> y(want.size());
      matmul(x.data(), T, exact_w, y.data(), nullptr, KernelVariant::kScalar);
      return y;
    }());
    std::vector<uint8_t> groups(size_t(int8_groups_bytes(stored_rows(w))));
    pack_int8_groups(stored_rows(w), 0, (O + 15) / 16, groups.data());
    for (KernelVariant v : available_variants())
      for (bool packed : {false, true}) {
        if (packed && !packs_int8_groups(v)) continue;
        Tensor wv = w;
        wv.int8_groups = packed ? groups.data() : nullptr;
        std::vector<float> got(want.size()), alone(static_cast<size_t>(O));
        matmul(x.data(), T, wv, got.data(), &pool, v);
        ASSERT_EQ(got, want) << variant_name(v) << " packed=" << packed << " I=" << I;
        for (int64_t t = 0; t < T; ++t) {
          matmul(x.data() + t * I, 1, wv, alone.data(), &pool, v);
          ASSERT_EQ(0, std::memcmp(alone.data(), want.data() + t * O, size_t(O) * 4))
              << variant_name(v) << " packed=" << packed << " t=" << t;
        }
      }
  }
}

// The LoRAs of a layer run together (matmul_many) exactly as they would one by one, whatever
// the shapes (one segment or several, fewer columns than a block), the storage (by columns or
// transposed, mixed in one call) and the pool.
TEST(Kernels, MatmulManyEqualsOneByOne) {
  ThreadPool pool(2);
  const int64_t shapes[][2] = {{300, 96},  {64, 333},  {2048, 32},
                               {96, 2048}, {2048, 96}, {2048, 64}};
  for (KernelVariant v : available_variants()) {
    for (DType dtype : {DType::F32, DType::BF16, DType::I8, DType::Q8_0}) {
      for (int64_t T : {1, 5}) {
        TensorMap map;
        std::vector<std::vector<float>> xs, alone, together;
        std::vector<MatmulJob> jobs;
        std::vector<const Tensor*> ws;  // the map keeps them in place
        std::mt19937 rng(11);
        std::normal_distribution<float> normal;
        for (size_t j = 0; j < std::size(shapes); ++j) {
          const int64_t I = shapes[j][0],
                        O = shapes[j][1] == 333 && is_integer(dtype) ? 320 : shapes[j][1];
          // Every other job stored transposed where it can be: both paths in one call.
          const Tensor& stored = random_tensor(map, dtype, I, O, unsigned(20 + j));
          const Tensor& w = j % 2 == 1 ? transposed_in(map, stored) : stored;
          xs.emplace_back(size_t(T * I));
          for (float& e : xs.back()) e = normal(rng);
          alone.emplace_back(size_t(T * O));
          together.emplace_back(size_t(T * O), std::nanf(""));
          matmul(xs.back().data(), T, w, alone.back().data(), &pool, v);
          ws.push_back(&w);
        }
        for (size_t j = 0; j < std::size(shapes); ++j)
          jobs.push_back({xs[j].data(), ws[j], together[j].data()});
        matmul_many(jobs, T, &pool, v);
        for (size_t j = 0; j < jobs.size(); ++j)
          ASSERT_EQ(0, std::memcmp(alone[j].data(), together[j].data(), alone[j].size() * 4))
              << variant_name(v) << " " << dtype_name(dtype) << " T=" << T << " job " << j;
      }
    }
  }
}

// A layer's products in one call give what linear() and matmul() give one by one, bit for bit:
// int8-activation, plain and I8 linear()s (row counts off the 16-row groups) with matmul()s
// stored transposed and by columns.
TEST(Kernels, ProductsEqualOneByOne) {
  ThreadPool pool(2);
  struct Shape {
    DType dtype;
    int64_t rows, cols;
    bool int8_activations;
  };
  const Shape linear_shapes[] = {{DType::Q4_0, 200, 256, true},
                                 {DType::Q8_0, 96, 512, false},
                                 {DType::BF16, 70, 160, false},
                                 {DType::I8, 40, 256, true}};
  for (KernelVariant v : available_variants())
    for (int64_t T : {1, 5, 20}) {  // 20: the AMX kernel's tiles, where it runs
      TensorMap map;
      std::vector<std::vector<float>> xs, alone, together;
      std::mt19937 rng(13);
      std::normal_distribution<float> normal;
      const auto add = [&](int64_t x_size, int64_t y_size) {
        xs.emplace_back(size_t(T * x_size));
        for (float& e : xs.back()) e = normal(rng);
        alone.emplace_back(size_t(T * y_size));
        together.emplace_back(size_t(T * y_size), std::nanf(""));
      };
      std::vector<Tensor> linear_ws;
      for (const Shape& shape : linear_shapes) {
        Tensor w = random_tensor(map, shape.dtype, shape.rows, shape.cols, unsigned(shape.rows));
        w.int8_activations = shape.int8_activations;
        linear_ws.push_back(w);
        add(shape.cols, shape.rows);
        linear(w, xs.back().data(), T, alone.back().data(), &pool, v);
      }
      std::vector<const Tensor*> matmul_ws;
      for (int j = 0; j < 3; ++j) {
        const Tensor& stored =
            random_tensor(map, DType::I8, j == 1 ? 96 : 2048, j == 1 ? 2048 : 64, unsigned(30 + j));
        matmul_ws.push_back(j == 2 ? &stored : &transposed_in(map, stored));
        add(stored.rows(), stored.cols());
        matmul(xs.back().data(), T, *matmul_ws.back(), alone.back().data(), &pool, v);
      }
      std::vector<LinearJob> linears;
      for (size_t j = 0; j < linear_ws.size(); ++j)
        linears.push_back({&linear_ws[j], xs[j].data(), together[j].data()});
      std::vector<MatmulJob> matmuls;
      for (size_t j = 0; j < matmul_ws.size(); ++j) {
        const size_t k = linear_ws.size() + j;
        matmuls.push_back({xs[k].data(), matmul_ws[j], together[k].data()});
      }
      products(linears, matmuls, T, &pool, v);
      for (size_t j = 0; j < alone.size(); ++j)
        ASSERT_EQ(0, std::memcmp(alone[j].data(), together[j].data(), alone[j].size() * 4))
            << variant_name(v) << " T=" << T << " product " << j;
    }
}

// Sequence mode and batches rely on this: a token's outputs are bit-identical whether it is
// multiplied alone (generation) or inside a chunk of any size, at any position of a tile.
TEST(Kernels, LinearOfAChunkEqualsLinearOfEachTokenAlone) {
  for (KernelVariant v : available_variants()) {
    for (DType dtype : kAllTypes) {
      // T covers every token group of the kernels (6, 4, 3, 2, 1 at a time) and the few
      // tokens that stream rows as one token does (2, 3, 4); at 2055 F32
      // columns the 37 rows span two of the AVX-512 kernel's row blocks; 8192 (8199) is the
      // FFN value matrix's row length.
      for (int64_t cols : {int64_t(160), int64_t(is_integer(dtype) ? 2048 : 2055),
                           int64_t(is_integer(dtype) ? 8192 : 8199)})
        for (int64_t T : {2, 3, 4, 5, 8, 9, 10, 13}) {
          TensorMap map;
          const int64_t rows = 37;
          Tensor w = random_tensor(map, dtype, rows, cols, 11);
          std::vector<float> x(size_t(T * cols)), chunk(size_t(T * rows)),
              alone(static_cast<size_t>(rows));
          std::mt19937 rng(3);
          std::normal_distribution<float> normal;
          for (float& e : x) e = normal(rng);
          for (bool int8 : {false, true}) {
            if (int8 && !is_integer(dtype)) continue;
            w.int8_activations = int8;
            linear(w, x.data(), T, chunk.data(), nullptr, v);
            for (int64_t t = 0; t < T; ++t) {
              linear(w, x.data() + t * cols, 1, alone.data(), nullptr, v);
              ASSERT_EQ(0, std::memcmp(alone.data(), chunk.data() + t * rows, size_t(rows) * 4))
                  << variant_name(v) << " " << dtype_name(dtype) << (int8 ? " int8" : "")
                  << " cols=" << cols << " T=" << T << " t=" << t;
            }
          }
        }
    }
  }
}

// The int8-activation path (kernels/int8.h) for every block type and shape, including an odd
// number of blocks and row counts that leave part of a 16-row group, and token counts on both
// sides of the AVX2 kernel's switch from streamed rows to a panel and of the switch to AMX tiles
// (whole tiles of 16 tokens and a padded last one). The VNNI, AMX and AVX2 kernels follow the
// scalar reference's arithmetic and order, so they must equal it bit for bit.
// Against exact float decoding the reference differs by at most the activation rounding: half a
// step d_x of each block times sum |w| over the block.
TEST(Kernels, Int8ActivationsMatchTheirReferenceAndStayWithinRoundingOfExact) {
  for (KernelVariant v : available_variants()) {
    const bool equals_reference = v == KernelVariant::kAvx2 || v == KernelVariant::kAmx ||
                                  (v == KernelVariant::kAvx512 && cpu_features().avx512_vnni);
    for (DType dtype : kBlockTypes) {
      for (auto [rows, K] :
           {std::pair<int64_t, int64_t>{67, 32}, {67, 96}, {20, 160}, {67, 2048}}) {
        TensorMap map;
        Tensor w = random_tensor(map, dtype, rows, K, unsigned(K + int(dtype)));
        w.int8_activations = true;
        const std::vector<float> wf = to_f32(w);
        // As the loader gives it to the VNNI kernel: packed once (int8.h), not as it goes.
        std::vector<uint8_t> groups(size_t(int8_groups_bytes(w)));
        pack_int8_groups(w, 0, (rows + 15) / 16, groups.data());
        Tensor packed = w;
        packed.int8_groups = groups.data();
        for (int64_t T : {1, 2, 3, 4, 6, 9, 16, 35}) {
          std::vector<float> x(size_t(T * K)), exact(size_t(T * rows)), ref(exact.size()),
              got(exact.size());
          std::mt19937 rng{static_cast<unsigned>(T + K)};
          std::normal_distribution<float> normal;
          for (float& e : x) e = normal(rng);
          x[0] = 0;  // an exact zero, and a block of zeros when there is more than one
          if (K > 32) std::fill(x.begin() + 32, x.begin() + 64, 0.0f);
          Tensor plain = w;
          plain.int8_activations = false;
          linear(plain, x.data(), T, exact.data(), nullptr, KernelVariant::kScalar);
          linear(w, x.data(), T, ref.data(), nullptr, KernelVariant::kScalar);
          linear(w, x.data(), T, got.data(), nullptr, v);
          if (packs_int8_groups(v)) {
            std::vector<float> from_packed(got.size());
            linear(packed, x.data(), T, from_packed.data(), nullptr, v);
            ASSERT_EQ(0, std::memcmp(from_packed.data(), got.data(), got.size() * 4))
                << dtype_name(dtype) << " K=" << K << " T=" << T << " packed at load";
          }
          if (equals_reference) {
            ASSERT_EQ(0, std::memcmp(got.data(), ref.data(), got.size() * 4))
                << dtype_name(dtype) << " K=" << K << " T=" << T;
          }
          for (int64_t t = 0; t < T; ++t)
            for (int64_t r = 0; r < rows; ++r) {
              const Int8Rounding b = int8_rounding(
                  K, [&](int64_t i) { return double(x[size_t(t * K + i)]); },
                  [&](int64_t i) { return double(wf[size_t(r * K + i)]); });
              const double mag = b.magnitude, rounding = b.bound;
              const size_t o = size_t(t * rows + r);
              // |w| * |x_rounded| <= mag + rounding; products and sums in float32.
              const double order = 4.0 * double(K) * std::ldexp(1.0, -24) * (mag + rounding);
              ASSERT_LE(std::abs(double(got[o]) - ref[o]), order + 1e-30)
                  << variant_name(v) << " " << dtype_name(dtype) << " K=" << K << " T=" << T;
              ASSERT_LE(std::abs(double(ref[o]) - exact[o]), 1.001 * rounding + 2 * order + 1e-30)
                  << dtype_name(dtype) << " K=" << K << " T=" << T;
            }
        }
      }
    }
  }
}

// The VNNI activation rounding writes exactly the reference's bytes, ties to even included.
TEST(Kernels, VnniActivationRoundingEqualsTheReference) {
  if (!cpu_features().avx512_vnni) GTEST_SKIP() << "SKIPPED: no AVX-512 VNNI on this CPU";
  for (DType dtype : kBlockTypes) {
    for (int64_t K : {32, 96, 2048}) {
      const int64_t T = 3;
      std::vector<float> x(size_t(T * K));
      std::mt19937 rng(static_cast<unsigned>(K));
      std::normal_distribution<float> normal;
      for (float& e : x) e = normal(rng);
      // A block whose scale is 1: x = n + 0.5 lands on ties; and an all-zero block.
      for (int i = 0; i < 32; ++i) x[size_t(i)] = i == 0 ? 127.0f : float(i % 9) - 4.5f;
      std::fill(x.begin() + K, x.begin() + K + 32, 0.0f);
      Int8Activations want, got;
      scalar::quantize_activations(dtype, x.data(), T, K, want);
      vnni::quantize_activations(dtype, x.data(), T, K, got);
      EXPECT_EQ(want.q, got.q) << dtype_name(dtype) << " K=" << K;
      EXPECT_EQ(want.scale, got.scale);
      EXPECT_EQ(want.block_bias, got.block_bias);
      EXPECT_EQ(want.block_qsum, got.block_qsum);
      EXPECT_EQ(want.q[1], -4);  // -3.5 rounds to the even -4
      EXPECT_EQ(want.q[2], -2);  // -2.5 to -2
    }
  }
}

// Splitting rows over threads changes nothing: each output is computed by one thread.
TEST_P(KernelVariants, ThreadedLinearIsIdentical) {
  ThreadPool pool(3);
  for (DType dtype : {DType::F32, DType::BF16, DType::Q5_1, DType::Q4_0, DType::I8}) {
    TensorMap map;
    Tensor w = random_tensor(map, dtype, 1000, 128, 3);
    w.int8_activations = dtype == DType::Q4_0 || dtype == DType::I8;
    std::vector<float> x(4 * 128, 0.25f), one(4 * 1000), many(4 * 1000);
    linear(w, x.data(), 4, one.data(), nullptr, GetParam());
    linear(w, x.data(), 4, many.data(), &pool, GetParam());
    EXPECT_EQ(one, many) << dtype_name(dtype);
  }
}

// Rows as long as the FFN's value matrix (K = 4 x 2048): one token equals the reference up to
// summation order (LinearMatchesReferenceForEveryTypeAndShape stops at K = 2055, where its
// exhaustive shapes stay cheap; LinearOfAChunkEqualsLinearOfEachTokenAlone covers chunks).
TEST_P(KernelVariants, OneTokenLongRowsMatchTheReference) {
  for (DType dtype : kAllTypes) {
    const int64_t rows = 37, cols = is_integer(dtype) ? 8192 : 8199;
    TensorMap map;
    const Tensor& w = random_tensor(map, dtype, rows, cols, 5);
    const std::vector<float> wf = to_f32(w);
    std::vector<float> x(static_cast<size_t>(cols)), want(static_cast<size_t>(rows)),
        got(static_cast<size_t>(rows));
    std::mt19937 rng(9);
    std::normal_distribution<float> normal;
    for (float& v : x) v = normal(rng);
    linear(w, x.data(), 1, want.data(), nullptr, KernelVariant::kScalar);
    linear(w, x.data(), 1, got.data(), nullptr, GetParam());
    for (int64_t r = 0; r < rows; ++r) {
      double mag = 0;
      for (int64_t c = 0; c < cols; ++c) mag += std::abs(double(wf[size_t(r * cols + c)]) * x[c]);
      ASSERT_LE(std::abs(double(got[size_t(r)]) - want[size_t(r)]),
                2.0 * double(cols) * std::ldexp(1.0, -24) * mag + 1e-30)
          << dtype_name(dtype) << " r=" << r;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(All, KernelVariants,
                         ::testing::Values(KernelVariant::kAvx2, KernelVariant::kAvx512,
                                           KernelVariant::kAmx),
                         [](const auto& info) { return std::string(variant_name(info.param)); });

}  // namespace
}  // namespace rwkv::kernels
