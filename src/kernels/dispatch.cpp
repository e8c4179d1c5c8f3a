// Chooses the kernel variant for this CPU (or RWKV_KERNELS=scalar|avx2|avx512) and spreads
// linear() over the thread pool by blocks of weight rows.
#include <immintrin.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "core/cpu.h"
#include "kernels/amx_bf16.h"
#include "kernels/int8.h"
#include "kernels/kernels.h"
#include "kernels/prefetch.h"
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
      {avx512::linear_rows, avx512::matmul_cols},  // AMX's kernels are picked in products()
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
    case KernelVariant::kAmx:
      return "amx";
  }
  return "?";
}

std::vector<KernelVariant> available_variants() {
  std::vector<KernelVariant> out = {KernelVariant::kScalar};
  if (cpu_features().avx2_fma) out.push_back(KernelVariant::kAvx2);
  if (cpu_features().avx512) out.push_back(KernelVariant::kAvx512);
  if (cpu_features().amx_int8) out.push_back(KernelVariant::kAmx);
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

const char* prefetch_hint(KernelVariant v) {
  if (v == KernelVariant::kScalar) return "none";
  return kPrefetchNonTemporal ? "nta" : "t1";
}

namespace {

// Runs rows(r0, r1) over all weight rows, spread over `pool` (ThreadPool::parallel_ranges): each
// thread streams its own contiguous share, about kTakeBytes at a time, then helps with the
// others' by about kStealBytes. bytes_before(r): the bytes of rows [0, r), so that the shares
// are equal in what they stream; pieces start at multiples of `align` rows.
//
// Pieces are sized in bytes, not rows. A piece taken from another thread's share passes that
// share's counter between the cores twice (the thief's take, then the owner's next one), about
// a microsecond where the two cores sit far apart; sixteen rows of a one-token LoRA (1.5 KiB)
// stream in a few tens of nanoseconds, so stealing them cost more than reading them (RWKV-7's
// four second LoRA products, 1 MB: 21 us per call on 2 threads against 26 on one; 14 now).
constexpr int64_t kStealBytes = 64 << 10, kTakeBytes = 256 << 10;
void split_rows(int64_t rows, ThreadPool* pool,
                const std::function<void(int64_t, int64_t)>& run_rows,
                const std::function<int64_t(int64_t)>& bytes_before, int64_t align) {
  if (!pool || pool->size() == 1 || rows < 64) {
    run_rows(0, rows);
    return;
  }
  const int64_t row_bytes = std::max<int64_t>(1, bytes_before(rows) / rows);
  const auto rows_of = [&](int64_t bytes) {
    return std::max<int64_t>(1, (bytes / row_bytes + align - 1) / align) * align;
  };
  // Small calls (RWKV-6's LoRAs, 0.1-0.3 MB) in grains of at most an eighth of the call:
  // in 64 KiB grains, shares that start on grains left one thread 3 of 5.
  const int64_t grain =
      rows_of(std::min(kStealBytes, bytes_before(rows) / (4 * int64_t(pool->size()))));
  pool->parallel_ranges(rows, grain, std::max(grain, rows_of(kTakeBytes) / grain * grain), run_rows,
                        bytes_before);
}

// matmul() sums each output over this many rows in order before adding the next segment's
// sum: one token then has independent chains to overlap and to share out between threads, and
// each segment is a contiguous piece of the matrix. Fixed, so no result depends on T or threads.
constexpr int64_t kMatmulSegmentRows = 256;

bool use_vnni(KernelVariant v) {
  return v == KernelVariant::kAmx || (v == KernelVariant::kAvx512 && cpu_features().avx512_vnni);
}

// From how many tokens the AMX kernel beats VNNI's (it unpacks each group once per call).
constexpr int64_t kAmxMinTokens = 12;

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

bool packs_int8_groups(KernelVariant v) { return use_vnni(v); }

namespace {
// Segments of a matmul over I rows; at least one, so that no rows (I = 0) still writes y = 0.
int64_t matmul_segments(int64_t I) {
  return std::max<int64_t>(1, (I + kMatmulSegmentRows - 1) / kMatmulSegmentRows);
}

// run(j, r0, r1) over the rows of several jobs (weights `w[j]`) as one split_rows(): job j's rows
// start at a multiple of 16 of one row space, so with `align` 16 every piece handed out lies
// within one job's 16-row groups (as the int8 kernels read them). The shares split that space by
// bytes: one token's LoRA rows are 64-256 bytes against 1-2 KiB for a layer's big products, and
// shares equal in rows left one thread with up to 1.7x the other's bytes, the rest taken over 16
// rows at a time, each a cache line passed between the cores.
template <typename Run>
void split_jobs_rows(std::span<const Tensor* const> w, ThreadPool* pool, int64_t align,
                     const Run& run) {
  thread_local std::vector<int64_t> start_buffer, bytes_buffer;
  std::vector<int64_t>& start = start_buffer;  // inside the lambdas, the caller's buffers
  std::vector<int64_t>& bytes = bytes_buffer;  // bytes of the jobs before job j
  start.assign(w.size() + 1, 0);
  bytes.assign(w.size() + 1, 0);
  for (size_t j = 0; j < w.size(); ++j) {
    start[j + 1] = start[j] + (w[j]->rows() + 15) / 16 * 16;
    bytes[j + 1] = bytes[j] + int64_t(w[j]->nbytes);
  }
  const auto bytes_before = [&](int64_t r) {
    size_t j = 0;
    while (j + 1 < w.size() && start[j + 1] <= r) ++j;
    const int64_t rows = w[j]->rows();
    return bytes[j] +
           int64_t(w[j]->nbytes) * std::min(r - start[j], rows) / std::max<int64_t>(rows, 1);
  };
  split_rows(
      start.back(), pool,
      [&](int64_t r0, int64_t r1) {
        for (size_t j = 0; j < w.size(); ++j) {
          const int64_t b = std::max(r0, start[j]), e = std::min(r1, start[j] + w[j]->rows());
          if (b < e) run(j, b - start[j], e - start[j]);
        }
      },
      bytes_before, align);
}

// The matmul()s of weights stored by columns (I, O): segments of rows times blocks of columns.
void matmul_columns(std::span<const MatmulJob> jobs, int64_t T, ThreadPool* pool,
                    const VariantFns& f) {
  const int threads = pool ? pool->size() : 1;
  // Per job: where its segments' partial sums go, and its tasks.
  struct Plan {
    int64_t n_segments, block, n_blocks, first_task;
    size_t partials;
  };
  thread_local std::vector<Plan> plan_buffer;
  thread_local std::vector<float> partial_buffer;
  std::vector<Plan>& plans = plan_buffer;  // inside the lambdas, the caller's buffer
  size_t partial_size = 0;
  int64_t work = 0;
  for (const MatmulJob& job : jobs) {
    const int64_t I = job.w->rows(), O = job.w->cols();
    partial_size += size_t((matmul_segments(I) - 1) * T * O);
    work += T * I * O;
  }
  partial_buffer.resize(partial_size);
  // LoRA matrices are small: below about 64K multiply-adds a fork/join costs more than it saves.
  const bool serial = threads == 1 || work < (int64_t(1) << 16);
  plans.clear();
  size_t partials_at = 0;
  int64_t n_tasks = 0;
  for (const MatmulJob& job : jobs) {
    const int64_t I = job.w->rows(), O = job.w->cols();
    const int64_t n_segments = matmul_segments(I);
    // About four tasks per thread and job: segments first (one token's down-projection then
    // reads whole contiguous segments), then column blocks of whole ggml blocks (multiples of
    // 32). Alone, a job is one task per segment over all its columns.
    const int64_t n_col_tasks =
        serial ? 1 : std::max<int64_t>(1, (4 * threads + n_segments - 1) / n_segments);
    const int64_t block = std::max<int64_t>(32, (O / n_col_tasks + 31) / 32 * 32);
    const int64_t n_blocks = std::max<int64_t>(1, (O + block - 1) / block);
    plans.push_back({n_segments, block, n_blocks, n_tasks, partials_at});
    n_tasks += n_segments * n_blocks;
    partials_at += size_t((n_segments - 1) * T * O);
  }
  // Segment 0 of a job sums into its y; each later segment into its own slice of the partials,
  // added to y in order afterwards.
  float* partials = partial_buffer.data();  // inside the lambdas, the caller's buffer
  const auto run_task = [&](int64_t task) {
    size_t j = 0;
    while (j + 1 < plans.size() && plans[j + 1].first_task <= task) ++j;
    const Plan& plan = plans[j];
    const Tensor& w = *jobs[j].w;
    const int64_t I = w.rows(), O = w.cols(), local = task - plan.first_task;
    const int64_t s = local / plan.n_blocks, b = local % plan.n_blocks, i0 = s * kMatmulSegmentRows;
    const Tensor rows = slice_rows(w, i0, std::min(kMatmulSegmentRows, I - i0));
    float* out = s == 0 ? jobs[j].y : partials + plan.partials + (s - 1) * T * O;
    f.matmul_cols(jobs[j].x + i0, I, T, rows, out, b * plan.block,
                  std::min(O, (b + 1) * plan.block));
  };
  const auto add_partials = [&](size_t j, int64_t t0, int64_t t1) {
    const int64_t O = jobs[j].w->cols();
    for (int64_t s = 1; s < plans[j].n_segments; ++s) {
      const float* p = partials + plans[j].partials + (s - 1) * T * O;
      for (int64_t k = t0 * O; k < t1 * O; ++k) jobs[j].y[k] += p[k];
    }
  };
  if (serial) {
    for (int64_t task = 0; task < n_tasks; ++task) run_task(task);
    for (size_t j = 0; j < jobs.size(); ++j) add_partials(j, 0, T);
    return;
  }
  pool->parallel_for(n_tasks, run_task);
  if (partial_size == 0) return;
  const int64_t token_tasks = std::min<int64_t>(T, 4 * threads);
  pool->parallel_for(int64_t(jobs.size()) * token_tasks, [&](int64_t k) {
    const int64_t part = k % token_tasks;
    add_partials(size_t(k / token_tasks), T * part / token_tasks, T * (part + 1) / token_tasks);
  });
}

}  // namespace

bool can_transpose_for_matmul(const Tensor& w) {
  if (w.transposed || w.rows() == 0 || w.cols() == 0) return false;
  switch (w.dtype) {
    case DType::F32:
    case DType::F16:
    case DType::BF16:
      return true;
    case DType::I8:
      return w.rows() % 32 == 0;
    default:
      return false;
  }
}

namespace {
// out (O, I) = in (I, O), by tiles of 64 x 64 elements so both sides stay in L1.
template <typename Element>
void transpose(const uint8_t* in, int64_t I, int64_t O, uint8_t* out) {
  constexpr int64_t kTile = 64;
  Element* dst = reinterpret_cast<Element*>(out);
  for (int64_t i0 = 0; i0 < I; i0 += kTile)
    for (int64_t o0 = 0; o0 < O; o0 += kTile)
      for (int64_t o = o0; o < std::min(O, o0 + kTile); ++o)
        for (int64_t i = i0; i < std::min(I, i0 + kTile); ++i) {
          Element e;
          std::memcpy(&e, in + (uint64_t(i) * uint64_t(O) + uint64_t(o)) * sizeof(Element),
                      sizeof(Element));
          dst[uint64_t(o) * uint64_t(I) + uint64_t(i)] = e;
        }
}
}  // namespace

void transpose_for_matmul(const Tensor& w, uint8_t* out) {
  if (!can_transpose_for_matmul(w))
    throw Error("transpose_for_matmul: " + std::string(dtype_name(w.dtype)) + " " +
                shape_string(w.shape) + " cannot be stored transposed");
  const int64_t I = w.rows(), O = w.cols();
  if (w.dtype == DType::F32)
    transpose<uint32_t>(w.data, I, O, out);
  else if (w.dtype == DType::I8)
    transpose<uint8_t>(w.data, I, O, out);
  else
    transpose<uint16_t>(w.data, I, O, out);
}

Tensor transposed_view(const Tensor& w, const uint8_t* out) {
  Tensor t = w;
  t.data = out;
  t.transposed = true;
  return t;
}

void stored_rows(const Tensor& view, Tensor& rows) {
  rows.dtype = view.dtype;
  rows.shape.assign({view.cols(), view.rows()});
  rows.data = view.data;
  rows.nbytes = view.nbytes;
  rows.row_scale = nullptr;
  rows.int8_activations = view.int8_activations;
  rows.int8_groups = view.int8_groups;
}

Tensor stored_rows(const Tensor& view) {
  Tensor rows;
  stored_rows(view, rows);
  return rows;
}

namespace {
thread_local ProductProfile* product_profile = nullptr;

double seconds_now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}
}  // namespace

void set_product_profile(ProductProfile* profile) { product_profile = profile; }

namespace {
// Whether a job's input is ready: rounded to int8, or scaled by I8 row scales. The first thread
// to run a job's rows prepares it, so the caller does not prepare every input before the other
// threads may start, and each thread mostly prepares what it reads first. One token's r, k, v
// and LoRA inputs on RWKV-7 took ~9 us a layer on the caller alone, two thirds of it the LoRAs'
// row scales, cold from DRAM, which the thread that streams the LoRAs now scales: that call
// 114.6 -> 111.1 us (medians of 8 pairs at ~82 GB/s), RWKV-6 generation +1.8% (6 pairs). On
// its own cache line: a thread waiting on one does not take the line of another from its owner.
struct alignas(64) InputState {
  std::atomic<int> state{0};  // 0 not started, 1 being prepared, 2 ready
};

// scaled (T, I) = x (T, I) times scale (I) per column: an I8 matmul's inputs meet its rows'
// scales before its stored integers.
void scale_inputs(const float* x, const float* scale, int64_t T, int64_t I, float* scaled) {
  for (int64_t t = 0; t < T; ++t)
    for (int64_t i = 0; i < I; ++i) scaled[t * I + i] = x[t * I + i] * scale[i];
}

// prepare() once, on whichever thread gets here first; the others wait for it.
template <typename Prepare>
void ensure_ready(InputState& input, const Prepare& prepare) {
  if (input.state.load(std::memory_order_acquire) == 2) return;
  int expected = 0;
  if (input.state.compare_exchange_strong(expected, 1, std::memory_order_acq_rel)) {
    prepare();
    input.state.store(2, std::memory_order_release);
    return;
  }
  // Rare and short (the other thread is rounding or scaling one input); yields after a while
  // so that a thread whose core is busy with other work gets to finish.
  for (int spin = 0; input.state.load(std::memory_order_acquire) != 2; ++spin) {
    if (spin < 4000)
      _mm_pause();
    else
      std::this_thread::yield();
  }
}
}  // namespace

void products(std::span<const LinearJob> linears, std::span<const MatmulJob> matmuls, int64_t T,
              ThreadPool* pool, KernelVariant v) {
  ProductProfile* const profile = product_profile;
  const double start_s = profile ? seconds_now() : 0;
  const VariantFns& f = fns(v);
  const bool vnni = use_vnni(v);
  const bool amx_tiles = v == KernelVariant::kAmx && T >= kAmxMinTokens;
  const auto rows_int8 = amx_tiles                   ? amx::linear_rows_int8
                         : vnni                      ? vnni::linear_rows_int8
                         : v == KernelVariant::kAvx2 ? avx2::linear_rows_int8
                                                     : scalar::linear_rows_int8;
  // What runs by weight rows: each linear(), and each matmul() stored transposed as a view of
  // its (O, I) rows. The buffers are the caller's and reused, so a call allocates nothing once
  // warm (one token makes a few of these calls per layer).
  struct RowJob {
    const Tensor* w;
    const float* x;
    Int8Activations* qx;  // int8 path: x rounded once and read by every thread
    float* y;
    amx::Bf16Inputs* bx = nullptr;  // AMX BF16 path: x split once and read by every thread
    bool row_scales;  // I8 linear(): each output times its row's scale
    // I8 matmul stored transposed: x (= scaled) is `unscaled` times `input_scale` (the
    // matmul's row scales), made when first needed.
    const float* unscaled = nullptr;
    const float* input_scale = nullptr;
    float* scaled = nullptr;
  };
  thread_local std::vector<RowJob> row_buffer;
  thread_local std::vector<MatmulJob> column_buffer;
  thread_local std::vector<Tensor> view_buffer;
  thread_local std::vector<const Tensor*> weights_buffer;
  thread_local std::vector<Int8Activations> int8_buffers;  // one per linear() and matmul()
  thread_local std::vector<amx::Bf16Inputs> bf16_buffers;  // likewise
  thread_local std::vector<float> scaled;
  thread_local std::unique_ptr<InputState[]> input_buffer;
  thread_local size_t input_capacity = 0;
  std::vector<RowJob>& by_rows = row_buffer;  // inside the lambda, the caller's buffer
  std::vector<MatmulJob>& by_columns = column_buffer;
  by_rows.clear();
  by_columns.clear();
  // One per linear() and matmul(): I8 matmuls marked for int8 activations round x too.
  if (int8_buffers.size() < linears.size() + matmuls.size())
    int8_buffers.resize(linears.size() + matmuls.size());
  if (bf16_buffers.size() < linears.size() + matmuls.size())
    bf16_buffers.resize(linears.size() + matmuls.size());
  // The AMX BF16 kernel runs a matrix whatever T is, so one token equals it in a chunk.
  const auto bf16_inputs = [&](const Tensor& w, size_t j) {
    return v == KernelVariant::kAmx && T > 0 && amx::runs_bf16(w) ? &bf16_buffers[j] : nullptr;
  };
  if (view_buffer.size() < matmuls.size()) view_buffer.resize(matmuls.size());
  for (size_t j = 0; j < linears.size(); ++j) {
    const LinearJob& job = linears[j];
    Int8Activations* qx = nullptr;
    if (job.w->int8_activations && is_integer(job.w->dtype)) qx = &int8_buffers[j];
    by_rows.push_back({job.w, job.x, qx, job.y, bf16_inputs(*job.w, j), true});
  }
  // I8: row i of w (input i) has scale s_i, so x_i * s_i meets the stored integers.
  size_t scaled_size = 0;
  for (const MatmulJob& job : matmuls)
    if (job.w->dtype == DType::I8) scaled_size += size_t(T * job.w->rows());
  scaled.resize(scaled_size);
  size_t scaled_at = 0;
  for (size_t j = 0; j < matmuls.size(); ++j) {
    MatmulJob job = matmuls[j];
    const int64_t I = job.w->rows();
    const float* unscaled = nullptr;
    float* xs = nullptr;
    if (job.w->dtype == DType::I8) {
      xs = scaled.data() + scaled_at;
      unscaled = job.x;
      job.x = xs;
      scaled_at += size_t(T * I);
      if (!job.w->transposed)  // by columns, over parallel_for: scaled here
        scale_inputs(unscaled, job.w->row_scale, T, I, xs);
    }
    if (!job.w->transposed) {
      by_columns.push_back(job);
      continue;
    }
    Tensor& stored = view_buffer[j];  // no row scales: x carries them
    stored_rows(*job.w, stored);
    Int8Activations* qx = nullptr;
    if (job.w->int8_activations && job.w->dtype == DType::I8)
      qx = &int8_buffers[linears.size() + j];
    by_rows.push_back({&stored, job.x, qx, job.y, bf16_inputs(stored, linears.size() + j), false,
                       unscaled, job.w->row_scale, xs});
  }
  if (input_capacity < by_rows.size()) {
    input_capacity = by_rows.size();
    input_buffer = std::make_unique<InputState[]>(input_capacity);
  }
  InputState* inputs = input_buffer.get();  // inside the lambda, the caller's buffer
  for (size_t j = 0; j < by_rows.size(); ++j)
    inputs[j].state.store(by_rows[j].qx || by_rows[j].bx || by_rows[j].unscaled ? 0 : 2,
                          std::memory_order_relaxed);
  const auto prepare = [&](size_t j) {
    const RowJob& job = by_rows[j];
    // The view's columns are the matmul's inputs.
    if (job.unscaled) scale_inputs(job.unscaled, job.input_scale, T, job.w->cols(), job.scaled);
    if (job.qx) {
      (vnni ? vnni::quantize_activations : scalar::quantize_activations)(job.w->dtype, job.x, T,
                                                                         job.w->cols(), *job.qx);
      if (amx_tiles) amx::prepare_tiles(*job.qx);
    }
    if (job.bx) amx::split_inputs(job.x, T, job.w->cols(), *job.bx);
  };
  const double set_up_s = profile ? seconds_now() : 0;
  if (!by_rows.empty()) {
    weights_buffer.clear();
    // The int8 kernels read groups of 16 (VNNI) or 8 (AVX2) rows; the float ones any rows.
    int64_t align = 1;
    for (const RowJob& job : by_rows) {
      weights_buffer.push_back(job.w);
      if (job.qx) align = 16;
    }
    split_jobs_rows(weights_buffer, pool, align, [&](size_t j, int64_t r0, int64_t r1) {
      ensure_ready(inputs[j], [&] { prepare(j); });
      const RowJob& job = by_rows[j];
      if (job.qx)
        rows_int8(*job.w, *job.qx, job.y, r0, r1);
      else if (job.bx)
        amx::linear_rows_bf16(*job.w, *job.bx, job.y, r0, r1);
      else
        f.linear_rows(*job.w, job.x, T, job.y, r0, r1);
      if (job.row_scales) apply_row_scales(*job.w, T, job.y, r0, r1);
    });
  }
  if (!by_columns.empty()) matmul_columns(by_columns, T, pool, f);
  if (!profile) return;
  uint64_t bytes = 0;
  const auto add = [&](const Tensor& w) {
    bytes += w.nbytes + (w.dtype == DType::I8 ? uint64_t(w.rows()) * 4 : 0);
  };
  for (const LinearJob& job : linears) add(*job.w);
  for (const MatmulJob& job : matmuls) add(*job.w);
  ProductProfile::Calls& calls = profile->by_bytes[bytes];
  calls.calls++;
  calls.setup_s += set_up_s - start_s;
  calls.total_s += seconds_now() - start_s;
}

void linear(const Tensor& w, const float* x, int64_t T, float* y, ThreadPool* pool,
            KernelVariant v) {
  const LinearJob job{&w, x, y};
  products({&job, 1}, {}, T, pool, v);
}

void matmul_many(std::span<const MatmulJob> jobs, int64_t T, ThreadPool* pool, KernelVariant v) {
  products({}, jobs, T, pool, v);
}

void matmul(const float* x, int64_t T, const Tensor& w, float* y, ThreadPool* pool,
            KernelVariant v) {
  const MatmulJob job{x, &w, y};
  matmul_many({&job, 1}, T, pool, v);
}

}  // namespace rwkv::kernels
