// Whole-model quantization: decide each tensor's type, then convert rows in parallel straight
// into one buffer owned by the result. Work is split into fixed pieces of rows, so the output
// does not depend on the thread count.
#include "engine/quantize.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <string_view>
#include <vector>

#include "core/weight_memory.h"
#include "rwkv/error.h"

namespace rwkv {

namespace {

constexpr int64_t kTaskElems = 1 << 16;

// blocks.<n>.(att|ffn).<projection>.weight: the large matrices of a layer.
bool is_block_matrix(const std::string& name, const Tensor& t) {
  if (t.shape.size() != 2) return false;
  std::string_view s = name;
  if (s.substr(0, 7) != "blocks.") return false;
  s.remove_prefix(7);
  size_t digits = 0;
  while (digits < s.size() && s[digits] >= '0' && s[digits] <= '9') ++digits;
  if (digits == 0 || digits >= s.size() || s[digits] != '.') return false;
  s.remove_prefix(digits + 1);
  for (std::string_view m :
       {"att.key.weight", "att.value.weight", "att.receptance.weight", "att.output.weight",
        "att.gate.weight", "ffn.key.weight", "ffn.value.weight", "ffn.receptance.weight"})
    if (s == m) return true;
  return false;
}

// The low-rank matrices of RWKV-6 (token-shift and decay LoRA) and RWKV-7 (w, a, v, g).
bool is_lora(const std::string& name) {
  const size_t dot = name.rfind('.');
  if (name.rfind("blocks.", 0) != 0 || dot == std::string::npos) return false;
  const std::string_view last = std::string_view(name).substr(dot + 1);
  for (std::string_view m : {"w1", "w2", "a1", "a2", "v1", "v2", "g1", "g2", "time_maa_w1",
                             "time_maa_w2", "time_decay_w1", "time_decay_w2"})
    if (last == m) return true;
  return false;
}

bool is_low_bit(DType t) {
  return t == DType::Q4_0 || t == DType::Q4_1 || t == DType::Q5_0 || t == DType::Q5_1;
}

}  // namespace

DType policy_dtype(const std::string& name, const Tensor& t, DType type, bool small_model,
                   const QuantizeOptions& options) {
  const bool quantized = is_integer(type);
  DType want = DType::F32;
  if (is_block_matrix(name, t)) {
    want = type;
  } else if (name == "head.weight" || name == "emb.weight" || is_lora(name)) {
    const bool head = name == "head.weight", emb = name == "emb.weight";
    const std::optional<DType>& override = head ? options.head : emb ? options.emb : options.lora;
    if (override)
      want = *override;
    else if (!quantized)
      want = type;
    else if (small_model)
      want = t.dtype;
    else
      want = head  ? (is_low_bit(type) ? DType::Q8_0 : type)
             : emb ? DType::F16
                   : (is_low_bit(type) ? DType::I8 : DType::F16);
  }
  if (is_integer(want) && t.cols() % 32 != 0) want = DType::F16;
  return want;
}

bool is_small_model(const TensorMap& map) {
  int64_t n = 0;
  for (const std::string& name : map.names()) n += map.at(name).numel();
  return n < kSmallModelParams;
}

TensorMap quantize_model(std::shared_ptr<const TensorMap> in, DType type,
                         const QuantizeOptions& o) {
  TensorMap out;
  out.path = in->path;
  out.format = "safetensors";
  out.metadata = in->metadata;
  out.metadata["quantization"] = std::string(dtype_name(type));
  out.metadata["quantized_from"] = in->format;

  struct Job {
    std::string name;
    const Tensor* src;
    DType dtype;
    uint64_t offset;
    uint64_t scale_offset = 0;  // I8: where its row scales go
  };
  std::vector<Job> jobs;
  const bool small = is_small_model(*in);
  uint64_t total_bytes = 0, total_elems = 0;
  for (const std::string& name : in->names()) {
    const Tensor& t = in->at(name);
    const DType want = policy_dtype(name, t, type, small, o);
    if (want == t.dtype) continue;
    jobs.push_back({name, &t, want, total_bytes});
    total_bytes += (*dtype_bytes(want, uint64_t(t.numel())) + 63) / 64 * 64;
    if (want == DType::I8) {
      jobs.back().scale_offset = total_bytes;
      total_bytes += (uint64_t(t.rows()) * 4 + 63) / 64 * 64;
    }
    total_elems += uint64_t(t.numel());
  }
  std::shared_ptr<uint8_t> storage;
  if (total_bytes > 0) storage = allocate_weights(total_bytes);

  // Pieces of whole rows, about kTaskElems elements each.
  struct Task {
    size_t job;
    int64_t row, rows;
  };
  std::vector<Task> tasks;
  for (size_t j = 0; j < jobs.size(); ++j) {
    const Tensor& t = *jobs[j].src;
    const int64_t per = std::max<int64_t>(1, kTaskElems / std::max<int64_t>(1, t.cols()));
    for (int64_t r = 0; r < t.rows(); r += per)
      tasks.push_back({j, r, std::min(per, t.rows() - r)});
  }

  // The first offending tensor (job index << 1 | 1 if the values are finite but too large for
  // fp16), reported after the pass.
  std::atomic<uint64_t> bad{UINT64_MAX};
  auto run = [&](int64_t i) {
    const Task& task = tasks[size_t(i)];
    const Job& job = jobs[task.job];
    const Tensor& t = *job.src;
    const int64_t n = task.rows * t.cols();
    thread_local std::vector<float> buf;
    buf.resize(size_t(n));
    dequantize_rows(t, task.row, task.rows, buf.data());
    // fp16 and the fp16 block scales; F32, BF16 and I8 (float32 row scales) reach further.
    const bool limited = job.dtype == DType::F16 || is_quantized(job.dtype);
    for (int64_t k = 0; k < n; ++k) {
      const float v = buf[size_t(k)];
      if (!std::isfinite(v) || (limited && std::fabs(v) > 65504.0f)) {
        const uint64_t code = uint64_t(task.job) << 1 | (std::isfinite(v) ? 1 : 0);
        uint64_t prev = bad.load();
        while (code < prev && !bad.compare_exchange_weak(prev, code)) {
        }
        return;
      }
    }
    const uint64_t row_bytes = *dtype_bytes(job.dtype, uint64_t(t.cols()));
    uint8_t* dst = storage.get() + job.offset + uint64_t(task.row) * row_bytes;
    if (job.dtype == DType::I8) {
      float* scale = reinterpret_cast<float*>(storage.get() + job.scale_offset) + task.row;
      quantize_rows_i8(buf.data(), task.rows, t.cols(), reinterpret_cast<int8_t*>(dst), scale);
    } else {
      quantize(job.dtype, buf.data(), n, dst, o.method);
    }
  };
  uint64_t done = 0;
  for (size_t first = 0; first < tasks.size();) {
    size_t last = first;
    uint64_t batch = 0;
    while (last < tasks.size() && (batch == 0 || batch < total_elems / 100)) {
      batch += uint64_t(tasks[last].rows * jobs[tasks[last].job].src->cols());
      ++last;
    }
    auto fn = [&, first](int64_t k) { run(int64_t(first) + k); };
    if (o.pool)
      o.pool->parallel_for(int64_t(last - first), fn);
    else
      for (int64_t k = 0; k < int64_t(last - first); ++k) fn(k);
    done += batch;
    if (o.progress) o.progress(done, total_elems);
    first = last;
  }
  if (const uint64_t code = bad.load(); code != UINT64_MAX) {
    const Job& job = jobs[size_t(code >> 1)];
    throw Error(in->path + ": tensor " + job.name +
                (code & 1 ? " has values beyond the fp16 range, which " +
                                std::string(dtype_name(job.dtype)) + " cannot store"
                          : " has non-finite values (NaN or infinity)"));
  }

  size_t next = 0;
  for (const std::string& name : in->names()) {
    if (next < jobs.size() && jobs[next].name == name) {
      const Job& job = jobs[next++];
      Tensor t;
      t.dtype = job.dtype;
      t.shape = job.src->shape;
      t.data = storage.get() + job.offset;
      t.nbytes = *dtype_bytes(job.dtype, uint64_t(job.src->numel()));
      if (job.dtype == DType::I8)
        t.row_scale = reinterpret_cast<const float*>(storage.get() + job.scale_offset);
      out.add(name, std::move(t));
    } else {
      out.add(name, in->at(name));
    }
  }
  if (storage) out.keep_alive(std::shared_ptr<const void>(storage, storage.get()));
  out.keep_alive(std::shared_ptr<const void>(in, in.get()));
  return out;
}

}  // namespace rwkv
