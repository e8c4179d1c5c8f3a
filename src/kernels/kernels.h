// Model-agnostic math used by every RWKV version. This is the scalar reference; SIMD variants
// will sit behind the same functions. Shapes use PyTorch order: a matrix is (rows, cols).
#pragma once

#include <cmath>
#include <cstdint>
#include <map>
#include <span>
#include <vector>

#include "core/tensor.h"
#include "rwkv/thread_pool.h"

namespace rwkv::kernels {

// kAmx: the AVX-512 kernels, with AMX tiles for BF16 weights (every token count) and for
// several tokens on the int8-activation path.
enum class KernelVariant { kScalar, kAvx2, kAvx512, kAmx };
const char* variant_name(KernelVariant v);
// The variants this CPU can run, scalar first.
std::vector<KernelVariant> available_variants();
// The best available variant, unless RWKV_KERNELS=scalar|avx2|avx512|amx says otherwise.
KernelVariant active_variant();
// How `variant` prefetches the weights it streams (kernels/prefetch.h): "nta" (non-temporal),
// "t1" (into L2), or "none" (the scalar reference).
const char* prefetch_hint(KernelVariant variant = active_variant());

// Whether linear()'s int8-activation path (Tensor::int8_activations) has a SIMD kernel for
// `variant` on this CPU (AVX2, AVX-512 with VNNI, AMX); otherwise it runs the scalar reference.
bool has_fast_int8(KernelVariant variant = active_variant());
// Whether that kernel reads its weights repacked (Tensor::int8_groups, kernels/int8.h), which
// the loader then makes once.
bool packs_int8_groups(KernelVariant variant = active_variant());

// A Linear layer over T rows: y[t][o] = sum_i w[o][i] * x[t][i] for w of shape (O, I), x (T, I),
// y (T, O), any stored dtype, spread over `pool` by blocks of weight rows. Each weight row is
// read once per call, and every output is the same dot product whatever T is, so one token
// and a sequence agree exactly.
void linear(const Tensor& w, const float* x, int64_t T, float* y, ThreadPool* pool = nullptr,
            KernelVariant variant = active_variant());
// The reference's `x @ W` over T rows, for LoRA matrices stored (I, O): y[t][o] =
// sum_i x[t][i] * w[i][o], x (T, I), y (T, O), spread over `pool` by segments of 256 rows and
// blocks of columns. Each output sums each segment in order, then adds the segments' sums in
// order, so the result does not depend on T or the thread count. W stored transposed
// (transpose_for_matmul) goes through linear()'s kernels instead.
void matmul(const float* x, int64_t T, const Tensor& w, float* y, ThreadPool* pool = nullptr,
            KernelVariant variant = active_variant());
// A matmul() weight stored transposed: one token then reads W's columns as contiguous rows
// (a linear() over them) instead of short pieces of every row, which streams at about twice the
// bandwidth from DRAM. Possible for F32, F16, BF16, and I8 with a multiple of 32 rows (I8 rows
// are read in blocks of 32). transpose_for_matmul() writes the nbytes bytes of W's transpose to
// `out`; transposed_view() is W stored there (transposed set), which matmul() sums in linear()'s
// order instead of its own (still independent of T and of the threads).
// With int8_activations set on an I8 view, matmul() scales x by the row scales and rounds it
// to int8 like linear()'s int8 path, reading int8_groups when set (stored_rows() packed).
bool can_transpose_for_matmul(const Tensor& w);
void transpose_for_matmul(const Tensor& w, uint8_t* out);
Tensor transposed_view(const Tensor& w, const uint8_t* out);
// The (O, I) rows a transposed view stores, as a plain matrix (no row scales: those scale x),
// written into `rows` (its shape's storage reused: products() makes these for every call).
void stored_rows(const Tensor& view, Tensor& rows);
Tensor stored_rows(const Tensor& view);
// Several independent matmul()s over the same T rows, spread over `pool` together (each result
// exactly as matmul() gives it): one token's LoRA products are too small to share out one at a
// time.
struct MatmulJob {
  const float* x;
  const Tensor* w;
  float* y;
};
void matmul_many(std::span<const MatmulJob> jobs, int64_t T, ThreadPool* pool = nullptr,
                 KernelVariant variant = active_variant());
// Several independent linear()s and matmul()s over the same T rows, spread over `pool` as one
// sequence of weight rows (each result exactly as linear() or matmul() alone gives it): the
// products of a layer whose inputs are ready together share one fork/join. Only matmul()
// weights that are not stored transposed take a second one.
struct LinearJob {
  const Tensor* w;
  const float* x;
  float* y;
};
void products(std::span<const LinearJob> linears, std::span<const MatmulJob> matmuls, int64_t T,
              ThreadPool* pool = nullptr, KernelVariant variant = active_variant());

// Where one thread's products() calls spend their time (`rwkv bench --profile`): kept only while
// a ProductProfile is installed on the calling thread, and a pointer test otherwise.
struct ProductProfile {
  struct Calls {
    int64_t calls = 0;
    double setup_s = 0;  // on the caller before the other threads start (job lists)
    double total_s = 0;
  };
  std::map<uint64_t, Calls> by_bytes;  // by the weight bytes (with I8 row scales) a call reads
};
// Installs `profile` (nullptr: none) on the calling thread.
void set_product_profile(ProductProfile* profile);

// LayerNorm over n values (population variance), then the affine `weight`, `bias`.
// Returns the mean and 1 / sqrt(var + eps) it used (the training backward needs them).
struct NormStats {
  float mean, rstd;
};
NormStats layer_norm(const float* x, const float* weight, const float* bias, int64_t n, float eps,
                     float* y);
// GroupNorm with one group per head of `group_size` channels, then the per-channel affine.
void group_norm(const float* x, const float* weight, const float* bias, int64_t n_groups,
                int64_t group_size, float eps, float* y);

inline float sigmoid(float x) { return 1.0f / (1.0f + std::exp(-x)); }

}  // namespace rwkv::kernels
