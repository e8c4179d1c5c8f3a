#include "model/weights.h"

#include <algorithm>
#include <atomic>
#include <cstring>
#include <functional>
#include <thread>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include "core/mapped_file.h"
#include "core/quant.h"
#include "kernels/activations.h"
#include "kernels/int8.h"
#include "kernels/kernels.h"
#include "rwkv/error.h"

namespace rwkv {

namespace {
// fn(i) for i in [0, n) on every core, each taking the next i: loading's one-off repacking.
void for_each_on_cores(int64_t n, const std::function<void(int64_t)>& fn) {
  std::atomic<int64_t> next{0};
  const auto work = [&] {
    for (int64_t i; (i = next.fetch_add(1)) < n;) fn(i);
  };
  std::vector<std::jthread> helpers;
  const int64_t threads = std::min<int64_t>(std::thread::hardware_concurrency(), n);
  for (int64_t i = 1; i < threads; ++i) helpers.emplace_back(work);
  work();
}

std::vector<int64_t> without_unit_axes(const std::vector<int64_t>& shape) {
  std::vector<int64_t> out;
  for (int64_t d : shape)
    if (d != 1) out.push_back(d);
  return out;
}
}  // namespace

WeightLoader::WeightLoader(TensorMap& map, const ModelInfo& info)
    : map_(map),
      int8_activations_(info.int8_activations),
      cache_path_(info.repack_cache),
      map_cache_(info.map_repack_cache) {
  if (cache_path_.empty()) return;
  try {
    source_ = repack_source(map.path, info.fingerprint, kernels::kInt8GroupsLayout);
  } catch (const Error& e) {
    cache_problem_ = std::string("repacked weights not cached: ") + e.what();
    cache_path_.clear();
    return;
  }
  cache_ = RepackCache::open(cache_path_, source_, &cache_problem_);
  // Faulted in now rather than by the first tokens, by 2 MiB pages where the kernel can (what
  // the page cache holds in small folios is read back once, as for the model file).
  if (map_cache_ && !cache_.empty())
    huge_bytes_ = map_by_huge_pages(cache_.file(), {cache_.file().data});
}

Tensor WeightLoader::tensor(const std::string& name, const std::vector<int64_t>& shape) {
  Tensor t = checked(name, shape);
  read_from_file_.push_back(t);
  return t;
}

Tensor WeightLoader::checked(const std::string& name, const std::vector<int64_t>& shape) {
  Tensor t = map_.at(name);
  if (without_unit_axes(t.shape) != without_unit_axes(shape))
    throw Error(map_.path + ": tensor " + name + " has shape " + shape_string(t.shape) +
                ", expected " + shape_string(shape));
  used_.insert(name);
  // An I8 tensor's row scales are read by every product. Read from the file, each read faults
  // in the file pages around them (a whole large folio on file systems that cache in those),
  // mostly pages of matrices that are used repacked or transposed and never read in place:
  // RWKV-7 2048 x 24 Q4_0 with int8 activations held 40 MB of them while generating, past its
  // memory budget. So the loader keeps its own copy, and the file's pages are dropped.
  if (t.row_scale) {
    const uint64_t bytes = uint64_t(t.rows()) * 4;
    uint8_t* copy = arena_.allocate(bytes);
    map_.copy_out(reinterpret_cast<const uint8_t*>(t.row_scale), size_t(bytes), copy);
    t.row_scale = reinterpret_cast<const float*>(copy);
  }
  return t;
}

Tensor WeightLoader::matrix(const std::string& name, const std::vector<int64_t>& shape) {
  Tensor t = checked(name, shape);
  t.int8_activations = int8_activations_ && is_integer(t.dtype);
  if (!t.int8_activations || !kernels::packs_int8_groups()) {
    in_place_.push_back(t);
    read_from_file_.push_back(t);
    return t;
  }
  const uint64_t bytes = kernels::int8_groups_bytes(t);
  const uint8_t* cached = cache_.find(name, t.dtype, t.rows(), t.cols(), bytes);
  if (cached && map_cache_) {
    t.int8_groups = cached;
    cached_.push_back({name, t.dtype, t.rows(), t.cols(), {cached, size_t(bytes)}});
    return t;
  }
  uint8_t* packed = arena_.allocate(bytes);
  t.int8_groups = packed;
  if (cached) {
    cached_.push_back({name, t.dtype, t.rows(), t.cols(), {packed, size_t(bytes)}});
    cache_reads_.push_back({cached, packed, bytes});
    return t;
  }
  // Packing is most of a first load's time: spread the groups over the cores, 64 at a time.
  constexpr int64_t kGroupsPerTask = 64;
  const int64_t groups = (t.rows() + 15) / 16;
  for_each_on_cores((groups + kGroupsPerTask - 1) / kGroupsPerTask, [&](int64_t i) {
    const int64_t g0 = i * kGroupsPerTask, g1 = std::min(groups, g0 + kGroupsPerTask);
    kernels::pack_int8_groups(t, g0, g1, packed + uint64_t(g0) * 16 * t.row_bytes());
  });
  map_.drop_pages(t);
  packed_.push_back({name, t.dtype, t.rows(), t.cols(), {packed, size_t(bytes)}});
  return t;
}

Tensor WeightLoader::lora(const std::string& name, const std::vector<int64_t>& shape) {
  return loras(name, shape, 1)[0];
}

std::vector<Tensor> WeightLoader::loras(const std::string& name, const std::vector<int64_t>& shape,
                                        int parts) {
  const Tensor t = checked(name, shape);
  const int64_t rows = t.rows() / parts;
  std::vector<Tensor> out;
  // Stored transposed in the file (rwkv.cpp's LoRAs), which is the layout matmul() runs; the
  // reader's canonical copy is freed by finish(). (Transposing that copy back, they were held
  // twice, and rwkv.cpp's RWKV-6 1.6B files ran 60-100 MB past the memory budget.) Float types
  // are read in place where the matrices beside them are too (without int8 activations);
  // otherwise copied out, since reading them in place maps the file pages around them, or,
  // quantized (rwkv.cpp quantizes them with the other matrices), decoded row by row.
  if (const Tensor* stored = map_.stored_transposed(name)) {
    Tensor view = *stored;
    const bool floats = view.dtype == DType::F32 || view.dtype == DType::F16;
    if (floats && !int8_activations_) {
      in_place_.push_back(view);
      read_from_file_.push_back(view);
    } else if (floats) {
      uint8_t* copy = arena_.allocate(view.nbytes);
      map_.copy_out(view.data, size_t(view.nbytes), copy);
      view.data = copy;
    } else {
      const std::vector<float> values = copied_f32(view);
      uint8_t* copy = arena_.allocate(values.size() * 4);
      std::memcpy(copy, values.data(), values.size() * 4);
      view.dtype = DType::F32;
      view.data = copy;
      view.nbytes = values.size() * 4;
    }
    for (int i = 0; i < parts; ++i) {
      Tensor part = slice_rows(view, i * rows, rows);
      part.transposed = true;
      out.push_back(part);
    }
    released_.push_back(name);
    return out;
  }
  for (int i = 0; i < parts; ++i) out.push_back(transposed_copy(slice_rows(t, i * rows, rows)));
  if (out[0].transposed)
    drop_after_transposing_.push_back(t);
  else
    read_from_file_.push_back(t);
  return out;
}

Tensor WeightLoader::transposed_copy(const Tensor& t) {
  if (!kernels::can_transpose_for_matmul(t)) return t;
  // With int8 activations, I8 LoRAs take the int8 path too (x scaled by the row scales, then
  // rounded): widening their bytes to floats held a core to ~36 GB/s even in cache. Where that
  // kernel reads packed rows, only those are kept (it never reads the plain ones).
  const bool int8 = int8_activations_ && t.dtype == DType::I8;
  if (int8 && kernels::packs_int8_groups()) {
    Tensor view = kernels::transposed_view(t, nullptr);
    view.int8_activations = true;
    uint8_t* groups = arena_.allocate(kernels::int8_groups_bytes(kernels::stored_rows(view)));
    view.int8_groups = groups;
    transposes_.push_back({t, nullptr, groups});
    return view;
  }
  uint8_t* copy = arena_.allocate(t.nbytes);
  transposes_.push_back({t, copy, nullptr});
  Tensor view = kernels::transposed_view(t, copy);
  view.int8_activations = int8;
  return view;
}

std::vector<std::shared_ptr<const void>> WeightLoader::finish(ModelInfo& info) {
  // The cache is read in pieces, on every core, into huge pages; through the mapping (its pages
  // dropped at once) only where the file cannot be read.
  constexpr uint64_t kPieceBytes = uint64_t(4) << 20;
  std::vector<std::pair<size_t, uint64_t>> pieces;  // (read, offset)
  for (size_t i = 0; i < cache_reads_.size(); ++i)
    for (uint64_t at = 0; at < cache_reads_[i].bytes; at += kPieceBytes) pieces.push_back({i, at});
  for_each_on_cores(int64_t(pieces.size()), [&](int64_t p) {
    const auto [i, at] = pieces[size_t(p)];
    const PendingRead& read = cache_reads_[i];
    const size_t n = size_t(std::min(kPieceBytes, read.bytes - at));
    if (cache_.read_into(read.from + at, n, read.to + at)) return;
    std::memcpy(read.to + at, read.from + at, n);
    drop_mapped_pages({read.from + at, n});
  });
  // Hundreds of small matrices: each core takes the next one.
  for_each_on_cores(int64_t(transposes_.size()), [&](int64_t i) {
    const PendingTranspose& p = transposes_[size_t(i)];
    if (!p.groups) {
      kernels::transpose_for_matmul(p.from, p.to);
      return;
    }
    std::vector<uint8_t> rows(p.from.nbytes);
    kernels::transpose_for_matmul(p.from, rows.data());
    const Tensor stored = kernels::stored_rows(kernels::transposed_view(p.from, rows.data()));
    kernels::pack_int8_groups(stored, 0, (stored.rows() + 15) / 16, p.groups);
  });
  for (const Tensor& t : drop_after_transposing_) map_.drop_pages(t);
  map_.drop_pages_outside(read_from_file_);
  // Faulted in now rather than by the first tokens, by 2 MiB pages where the kernel can.
  info.file_huge_bytes = map_.map_by_huge_pages(in_place_);
  info.repack_cache = cache_path_;
  info.repack_huge_bytes = cached_.empty() ? 0 : huge_bytes_;  // set only when mapping
  if (!cache_problem_.empty()) info.warnings.push_back(cache_problem_);
  for (const std::string& name : released_) map_.release(name);
#if defined(__GLIBC__)
  // Those copies were many ~1 MB blocks, which glibc keeps in its heap once freed.
  if (!released_.empty()) malloc_trim(0);
#endif
  std::vector<std::shared_ptr<const void>> owners = arena_.owners();
  if (map_cache_ && !cached_.empty()) owners.push_back(cache_.owner());
  if (packed_.empty()) {
    info.repacked = cached_.empty() ? "" : map_cache_ ? "mapped" : "cached";
    return owners;
  }
  info.repacked = "built";
  if (cache_path_.empty()) return owners;
  // The whole set is written (with what an older cache held), so the file stays one model's
  // complete layout.
  std::vector<RepackEntry> all = packed_;
  all.insert(all.end(), cached_.begin(), cached_.end());
  try {
    write_repack_cache(cache_path_, source_, all);
  } catch (const Error& e) {
    info.warnings.push_back(std::string("repacked weights not cached: ") + e.what());
    info.repack_cache.clear();
  }
  return owners;
}

std::vector<float> WeightLoader::f32(const std::string& name, const std::vector<int64_t>& shape) {
  return copied_f32(checked(name, shape));
}

std::vector<float> WeightLoader::copied_f32(Tensor t) const {
  std::vector<uint8_t> bytes(size_t(t.nbytes));
  map_.copy_out(t.data, bytes.size(), bytes.data());
  t.data = bytes.data();
  return to_f32(t);
}

std::vector<std::string> WeightLoader::unused() const {
  std::vector<std::string> out;
  for (const std::string& name : map_.names())
    if (!used_.count(name)) out.push_back(name);
  return out;
}

std::string layer_prefix(int layer) { return "blocks." + std::to_string(layer) + "."; }

void Norm::load(WeightLoader& w, const std::string& name, int64_t n) {
  weight = w.f32(name + ".weight", {n});
  bias = w.f32(name + ".bias", {n});
}

void for_token_rows(int64_t T, ThreadPool* pool, const std::function<void(int64_t, int64_t)>& fn) {
  const int threads = pool ? pool->size() : 1;
  if (threads == 1 || T < 2) {
    fn(0, T);
    return;
  }
  // Two shares per thread, so a thread slowed by a busy core takes fewer rows.
  const int64_t shares = std::min<int64_t>(T, 2 * threads), rows = (T + shares - 1) / shares;
  pool->parallel_for(shares, [&](int64_t i) {
    if (i * rows < T) fn(i * rows, std::min(T, (i + 1) * rows));
  });
}

void time_mix(const float* x, const float* prev, int64_t T, int64_t C,
              std::span<const MixTarget> targets, ThreadPool* pool) {
  for_token_rows(T, pool, [&](int64_t t0, int64_t t1) {
    for (const MixTarget& m : targets)
      for (int64_t t = t0; t < t1; ++t)
        for (int64_t c = 0; c < C; ++c) {
          const int64_t j = t * C + c;
          m.out[j] = x[j] * m.mix[size_t(c)] + prev[j] * (1 - m.mix[size_t(c)]);
        }
  });
}

void Norm::layer_norm(const float* x, int64_t T, int64_t n, float* y, ThreadPool* pool) const {
  for_token_rows(T, pool, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t)
      kernels::layer_norm(x + t * n, weight.data(), bias.data(), n, kLayerNormEps, y + t * n);
  });
}

void Norm::add_then_layer_norm(float* x, const float* delta, int64_t T, int64_t n, float* y,
                               ThreadPool* pool) const {
  for_token_rows(T, pool, [&](int64_t t0, int64_t t1) {
    for (int64_t j = t0 * n; j < t1 * n; ++j) x[j] += delta[j];
    layer_norm(x + t0 * n, t1 - t0, n, y + t0 * n);
  });
}

void Norm::group_norm(const float* x, int64_t T, int64_t H, int64_t N, float eps, float* y) const {
  for (int64_t t = 0; t < T; ++t)
    kernels::group_norm(x + t * H * N, weight.data(), bias.data(), H, N, eps, y + t * H * N);
}

void EmbeddingHead::load(WeightLoader& w, int64_t n_vocab, int64_t n_embd) {
  emb = w.tensor("emb.weight", {n_vocab, n_embd});
  ln0.load(w, "blocks.0.ln0", n_embd);
  ln_out.load(w, "ln_out", n_embd);
  head = w.matrix("head.weight", {n_vocab, n_embd});
}

void EmbeddingHead::embed(int token, float* x) const {
  if (token < 0 || token >= emb.rows())
    throw Error("token " + std::to_string(token) + " is outside the vocabulary [0, " +
                std::to_string(emb.rows()) + ")");
  const int64_t n = emb.cols();
  dequantize_rows(emb, token, 1, x);
  ln0.layer_norm(x, 1, n, x);
}

void ChannelMix::load(WeightLoader& w, const std::string& prefix, int64_t n_embd, int64_t ffn_dim) {
  key = w.matrix(prefix + "key.weight", {ffn_dim, n_embd});
  value = w.matrix(prefix + "value.weight", {n_embd, ffn_dim});
  receptance = w.matrix(prefix + "receptance.weight", {n_embd, n_embd});
}

void ChannelMix::add_to(const float* xk, const float* xr, int64_t T, float* tmp, float* x,
                        ThreadPool* pool) const {
  const int64_t C = receptance.rows(), F = key.rows();
  float* r = tmp;
  float* k = r + T * C;
  float* out = k + T * F;
  const kernels::LinearJob key_receptance[] = {{&key, xk, k}, {&receptance, xr, r}};
  kernels::products(key_receptance, {}, T, pool);
  for_token_rows(T, pool, [&](int64_t t0, int64_t t1) {
    kernels::relu_squared_of(k + t0 * F, k + t0 * F, (t1 - t0) * F);
  });
  kernels::linear(value, k, T, out, pool);
  for_token_rows(T, pool, [&](int64_t t0, int64_t t1) {
    kernels::sigmoid_of(r + t0 * C, r + t0 * C, (t1 - t0) * C);
    for (int64_t j = t0 * C; j < t1 * C; ++j) x[j] += r[j] * out[j];
  });
}

}  // namespace rwkv
