// Chooses the kernel variant for this CPU (or RWKV_KERNELS=scalar|avx2|avx512) and spreads
// linear() over the thread pool by blocks of weight rows.
#include <algorithm>
#include <cstdlib>
#include <string>
#include <vector>

#include "core/cpu.h"
#include "kernels/kernels.h"
#include "kernels/variants.h"
#include "rwkv/error.h"

namespace rwkv::kernels {

namespace {

struct VariantFns {
  void (*linear_rows)(const Tensor&, const float*, int64_t, float*, int64_t, int64_t);
  void (*matmul_cols)(const float*, int64_t, const Tensor&, float*, int64_t, int64_t);
};

const VariantFns& fns(KernelVariant v) {
  static const VariantFns table[] = {
      {scalar::linear_rows, scalar::matmul_cols},
      {avx2::linear_rows, avx2::matmul_cols},
      {avx512::linear_rows, avx512::matmul_cols},
  };
  return table[static_cast<int>(v)];
}

}  // namespace

const char* variant_name(KernelVariant v) {
  switch (v) {
    case KernelVariant::kScalar:
      return "scalar";
    case KernelVariant::kAvx2:
      return "avx2";
    case KernelVariant::kAvx512:
      return "avx512";
  }
  return "?";
}

std::vector<KernelVariant> available_variants() {
  std::vector<KernelVariant> out = {KernelVariant::kScalar};
  if (cpu_features().avx2_fma) out.push_back(KernelVariant::kAvx2);
  if (cpu_features().avx512) out.push_back(KernelVariant::kAvx512);
  return out;
}

KernelVariant active_variant() {
  static const KernelVariant chosen = [] {
    const std::vector<KernelVariant> available = available_variants();
    if (const char* env = std::getenv("RWKV_KERNELS")) {
      for (KernelVariant v : available)
        if (std::string(env) == variant_name(v)) return v;
      throw Error(std::string("RWKV_KERNELS=") + env + " is not available on this CPU");
    }
    return available.back();
  }();
  return chosen;
}

void linear(const Tensor& w, const float* x, int64_t T, float* y, ThreadPool* pool,
            KernelVariant v) {
  const VariantFns& f = fns(v);
  const int64_t rows = w.rows();
  const int threads = pool ? pool->size() : 1;
  if (threads == 1 || rows < 64) {
    f.linear_rows(w, x, T, y, 0, rows);
    return;
  }
  // Several blocks per thread, so a thread slowed by a busy core takes fewer of them.
  int64_t block = std::max<int64_t>(16, rows / (8 * threads));
  block = (block + 3) / 4 * 4;
  const int64_t n_blocks = (rows + block - 1) / block;
  pool->parallel_for(n_blocks, [&](int64_t b) {
    f.linear_rows(w, x, T, y, b * block, std::min(rows, (b + 1) * block));
  });
}

void matmul(const float* x, int64_t T, const Tensor& w, float* y, ThreadPool* pool,
            KernelVariant v) {
  const VariantFns& f = fns(v);
  const int64_t cols = w.cols();
  const int threads = pool ? pool->size() : 1;
  // LoRA matrices are small: below about 64K multiply-adds a fork/join costs more than it saves.
  if (threads == 1 || cols < 64 || T * w.rows() * cols < (int64_t(1) << 16)) {
    f.matmul_cols(x, T, w, y, 0, cols);
    return;
  }
  // Column blocks are whole ggml blocks (multiples of 32), several per thread.
  const int64_t block = std::max<int64_t>(32, (cols / (4 * threads) + 31) / 32 * 32);
  const int64_t n_blocks = (cols + block - 1) / block;
  pool->parallel_for(n_blocks, [&](int64_t b) {
    f.matmul_cols(x, T, w, y, b * block, std::min(cols, (b + 1) * block));
  });
}

}  // namespace rwkv::kernels
