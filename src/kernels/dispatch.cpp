// Chooses the kernel variant for this CPU (or RWKV_KERNELS=scalar|avx2|avx512) and spreads
// linear() over the thread pool by blocks of weight rows.
#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <string>
#include <vector>

#include "core/cpu.h"
#include "kernels/int8.h"
#include "kernels/kernels.h"
#include "kernels/variants.h"
#include "rwkv/error.h"

namespace rwkv::kernels {

namespace {

struct VariantFns {
  void (*linear_rows)(const Tensor&, const float*, int64_t, float*, int64_t, int64_t);
  void (*matmul_cols)(const float*, int64_t, int64_t, const Tensor&, float*, int64_t, int64_t);
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

namespace {

// Runs rows(r0, r1) over all weight rows, spread over `pool`. Each thread owns a contiguous
// share and takes it from the front, a few 16-row groups at a time, so that its rows stream as
// one sequence; a thread done with its own share takes single groups from the back of the
// others'. A thread slowed by a busy core so ends up with fewer rows, and the two threads finish
// within about one group of each other.
template <typename Rows>
void split_rows(int64_t rows, ThreadPool* pool, const Rows& run_rows) {
  const int threads = pool ? pool->size() : 1;
  if (threads == 1 || rows < 64) {
    run_rows(0, rows);
    return;
  }
  constexpr int64_t kGroup = 16, kOwnerGroups = 4;
  constexpr int kMaxThreads = 64;
  const int shares = std::min(threads, kMaxThreads);
  // (begin << 32 | end) of each share, in rows.
  std::atomic<uint64_t> range[kMaxThreads];
  const int64_t groups = (rows + kGroup - 1) / kGroup;
  for (int i = 0; i < shares; ++i) {
    const uint64_t b = uint64_t(std::min(rows, groups * i / shares * kGroup));
    const uint64_t e = uint64_t(std::min(rows, groups * (i + 1) / shares * kGroup));
    range[i].store(b << 32 | e, std::memory_order_relaxed);
  }
  // Takes up to n rows from the front (or the back) of share i; false when it is empty.
  const auto take = [&](int i, int64_t n, bool front, int64_t& r0, int64_t& r1) {
    uint64_t v = range[i].load(std::memory_order_acquire);
    for (;;) {
      const int64_t b = int64_t(v >> 32), e = int64_t(v & 0xffffffffu);
      if (b >= e) return false;
      r0 = front ? b : std::max(b, e - n);
      r1 = front ? std::min(e, b + n) : e;
      const uint64_t next =
          front ? uint64_t(r1) << 32 | uint64_t(e) : uint64_t(b) << 32 | uint64_t(r0);
      if (range[i].compare_exchange_weak(v, next, std::memory_order_acq_rel)) return true;
    }
  };
  pool->parallel_for(shares, [&](int64_t own) {
    int64_t r0, r1;
    while (take(int(own), kOwnerGroups * kGroup, true, r0, r1)) run_rows(r0, r1);
    for (int k = 1; k < shares; ++k) {
      const int other = int((own + k) % shares);
      while (take(other, kGroup, false, r0, r1)) run_rows(r0, r1);
    }
  });
}

// matmul() sums each output over this many rows in order before adding the next segment's
// sum: one token then has independent chains to overlap and to share out between threads, and
// each segment is a contiguous piece of the matrix. Fixed, so no result depends on T or threads.
constexpr int64_t kMatmulSegmentRows = 256;

bool use_vnni(KernelVariant v) { return v == KernelVariant::kAvx512 && cpu_features().avx512_vnni; }

// The kernels multiply I8 weights as their stored integers; each row's scale is applied here,
// once per output, while the outputs are still in cache.
void apply_row_scales(const Tensor& w, int64_t T, float* y, int64_t r0, int64_t r1) {
  if (w.dtype != DType::I8) return;
  const int64_t O = w.rows();
  for (int64_t t = 0; t < T; ++t)
    for (int64_t r = r0; r < r1; ++r) y[t * O + r] *= w.row_scale[r];
}

}  // namespace

bool has_fast_int8(KernelVariant v) { return use_vnni(v) || v == KernelVariant::kAvx2; }

void linear(const Tensor& w, const float* x, int64_t T, float* y, ThreadPool* pool,
            KernelVariant v) {
  if (w.int8_activations && is_integer(w.dtype)) {
    // The activations are rounded once, here, and read by every thread.
    thread_local Int8Activations buffer;
    // A reference: inside the lambda, `buffer` would name each worker's own thread_local.
    Int8Activations& qx = buffer;
    const bool vnni = use_vnni(v);
    (vnni ? vnni::quantize_activations : scalar::quantize_activations)(w.dtype, x, T, w.cols(), qx);
    const auto rows_int8 = vnni                        ? vnni::linear_rows_int8
                           : v == KernelVariant::kAvx2 ? avx2::linear_rows_int8
                                                       : scalar::linear_rows_int8;
    split_rows(w.rows(), pool, [&](int64_t r0, int64_t r1) {
      rows_int8(w, qx, y, r0, r1);
      apply_row_scales(w, T, y, r0, r1);
    });
    return;
  }
  const VariantFns& f = fns(v);
  split_rows(w.rows(), pool, [&](int64_t r0, int64_t r1) {
    f.linear_rows(w, x, T, y, r0, r1);
    apply_row_scales(w, T, y, r0, r1);
  });
}

void matmul(const float* x, int64_t T, const Tensor& w, float* y, ThreadPool* pool,
            KernelVariant v) {
  const VariantFns& f = fns(v);
  const int64_t I = w.rows(), O = w.cols();
  if (w.dtype == DType::I8) {
    // Row i of w (input i) has scale s_i: x_i * s_i then meets the stored integers.
    thread_local std::vector<float> scaled;
    scaled.resize(size_t(T * I));
    for (int64_t t = 0; t < T; ++t)
      for (int64_t i = 0; i < I; ++i) scaled[size_t(t * I + i)] = x[t * I + i] * w.row_scale[i];
    x = scaled.data();
  }
  // Segment 0 sums into y; each later segment into its own slice here, added to y in order.
  thread_local std::vector<float> partial_buffer;
  // At least one, so that no rows (I = 0) still writes y = 0.
  const int64_t n_segments =
      std::max<int64_t>(1, (I + kMatmulSegmentRows - 1) / kMatmulSegmentRows);
  partial_buffer.resize(size_t((n_segments - 1) * T * O));
  float* partials = partial_buffer.data();  // inside the lambdas, the caller's buffer
  const auto segment_cols = [&](int64_t s, int64_t c0, int64_t c1) {
    const int64_t i0 = s * kMatmulSegmentRows;
    const Tensor rows = slice_rows(w, i0, std::min(kMatmulSegmentRows, I - i0));
    f.matmul_cols(x + i0, I, T, rows, s == 0 ? y : partials + (s - 1) * T * O, c0, c1);
  };
  const auto add_partials = [&](int64_t t0, int64_t t1) {
    for (int64_t s = 1; s < n_segments; ++s) {
      const float* p = partials + (s - 1) * T * O;
      for (int64_t j = t0 * O; j < t1 * O; ++j) y[j] += p[j];
    }
  };
  const int threads = pool ? pool->size() : 1;
  // LoRA matrices are small: below about 64K multiply-adds a fork/join costs more than it saves.
  if (threads == 1 || T * I * O < (int64_t(1) << 16)) {
    for (int64_t s = 0; s < n_segments; ++s) segment_cols(s, 0, O);
    add_partials(0, T);
    return;
  }
  // About four tasks per thread: segments first (one token's down-projection then reads whole
  // contiguous segments), then column blocks of whole ggml blocks (multiples of 32).
  const int64_t n_col_tasks = std::max<int64_t>(1, (4 * threads + n_segments - 1) / n_segments);
  const int64_t block = std::max<int64_t>(32, (O / n_col_tasks + 31) / 32 * 32);
  const int64_t n_blocks = (O + block - 1) / block;
  pool->parallel_for(n_segments * n_blocks, [&](int64_t task) {
    const int64_t b = task % n_blocks;
    segment_cols(task / n_blocks, b * block, std::min(O, (b + 1) * block));
  });
  if (n_segments == 1) return;
  const int64_t token_tasks = std::min<int64_t>(T, 4 * threads);
  pool->parallel_for(token_tasks, [&](int64_t k) {
    add_partials(T * k / token_tasks, T * (k + 1) / token_tasks);
  });
}

}  // namespace rwkv::kernels
