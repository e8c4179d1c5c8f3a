#include "io/tensor_map.h"

#include <algorithm>
#include <cstring>

#include "core/quant.h"
#include "io/readers.h"
#include "rwkv/error.h"

namespace rwkv {

std::string shape_string(const std::vector<int64_t>& shape) {
  std::string s = "(";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + (shape.size() == 1 ? ",)" : ")");
}

void TensorMap::add(const std::string& name, Tensor t) {
  if (tensors_.count(name)) throw Error(path + ": duplicate tensor " + name);
  names_.push_back(name);
  tensors_.emplace(name, std::move(t));
}

Tensor& TensorMap::add_owned(const std::string& name, DType dtype, std::vector<int64_t> shape) {
  Tensor t;
  t.dtype = dtype;
  t.shape = std::move(shape);
  auto bytes = dtype_bytes(dtype, uint64_t(t.numel()));
  if (!bytes) throw Error(path + ": tensor " + name + " is not a whole number of blocks");
  buffers_.emplace_back(*bytes, 0);
  t.data = buffers_.back().data();
  t.nbytes = *bytes;
  if (tensors_.count(name)) {
    tensors_[name] = std::move(t);
  } else {
    add(name, std::move(t));
  }
  return tensors_[name];
}

float* TensorMap::replace_with_f32(const std::string& name, std::vector<int64_t> shape) {
  std::vector<float> values = to_f32(at(name));
  Tensor& t = add_owned(name, DType::F32, std::move(shape));
  if (size_t(t.numel()) != values.size())
    throw Error(path + ": tensor " + name + " cannot take shape " + shape_string(t.shape));
  float* dst = reinterpret_cast<float*>(const_cast<uint8_t*>(t.data));
  std::memcpy(dst, values.data(), values.size() * 4);
  return dst;
}

void TensorMap::keep_alive(const Bytes& file) {
  keep_alive(file.owner);
  if (file.mapped) mappings_.push_back(file);
}

namespace {
bool inside(const Tensor& t, const Bytes& m) {
  return uintptr_t(t.data) >= uintptr_t(m.data.data()) &&
         uintptr_t(t.data) + t.nbytes <= uintptr_t(m.data.data()) + m.data.size();
}
}  // namespace

void TensorMap::drop_pages(const Tensor& t) const {
  for (const Bytes& m : mappings_)
    if (inside(t, m)) {
      drop_mapped_pages({t.data, size_t(t.nbytes)});
      return;
    }
}

void TensorMap::copy_out(const uint8_t* from, size_t n, uint8_t* to) const {
  for (const Bytes& m : mappings_)
    if (read_mapped(m, from, n, to)) return;
  std::memcpy(to, from, n);
}

void TensorMap::drop_pages_outside(const std::vector<Tensor>& kept) const {
  for (const Bytes& m : mappings_) {
    std::vector<std::span<const uint8_t>> ranges;
    for (const Tensor& t : kept)
      if (inside(t, m)) ranges.push_back({t.data, size_t(t.nbytes)});
    drop_mapped_pages_outside(m, std::move(ranges));
  }
}

uint64_t TensorMap::map_by_huge_pages(const std::vector<Tensor>& tensors) const {
  uint64_t huge = 0;
  for (const Bytes& m : mappings_) {
    std::vector<std::span<const uint8_t>> ranges;
    for (const Tensor& t : tensors)
      if (inside(t, m)) ranges.push_back({t.data, size_t(t.nbytes)});
    if (!ranges.empty()) huge += rwkv::map_by_huge_pages(m, std::move(ranges));
  }
  return huge;
}

void TensorMap::erase(const std::string& name) {
  stored_transposed_.erase(name);
  if (tensors_.erase(name)) names_.erase(std::find(names_.begin(), names_.end(), name));
}

void TensorMap::add_stored_transposed(const std::string& name, Tensor stored) {
  stored.transposed = true;
  stored_transposed_.insert_or_assign(name, std::move(stored));
}

const Tensor* TensorMap::stored_transposed(const std::string& name) const {
  auto it = stored_transposed_.find(name);
  return it == stored_transposed_.end() ? nullptr : &it->second;
}

void TensorMap::release(const std::string& name) {
  if (const Tensor* t = find(name))
    for (std::vector<uint8_t>& b : buffers_)
      if (b.data() == t->data) {
        std::vector<uint8_t>().swap(b);
        break;
      }
  erase(name);
}

const Tensor* TensorMap::find(const std::string& name) const {
  auto it = tensors_.find(name);
  return it == tensors_.end() ? nullptr : &it->second;
}

const Tensor& TensorMap::at(const std::string& name) const {
  const Tensor* t = find(name);
  if (!t) throw Error(path + ": missing tensor " + name);
  return *t;
}

std::vector<float> to_f32(const Tensor& t) {
  std::vector<float> out(size_t(t.numel()));
  dequantize_rows(t, 0, t.rows(), out.data());
  return out;
}

TensorMap cast_tensor_map(const TensorMap& map, DType dtype) {
  if (is_integer(dtype))
    throw Error("casting to " + std::string(dtype_name(dtype)) + " is not supported");
  TensorMap out;
  out.path = map.path;
  out.format = map.format;
  out.metadata = map.metadata;
  for (const std::string& name : map.names()) {
    std::vector<float> v = to_f32(map.at(name));
    Tensor& t = out.add_owned(name, dtype, map.at(name).shape);
    uint8_t* dst = const_cast<uint8_t*>(t.data);
    for (size_t i = 0; i < v.size(); ++i) {
      if (dtype == DType::F32) {
        std::memcpy(dst + 4 * i, &v[i], 4);
      } else {
        const uint16_t h = dtype == DType::F16 ? fp32_to_fp16(v[i]) : fp32_to_bf16(v[i]);
        std::memcpy(dst + 2 * i, &h, 2);
      }
    }
  }
  return out;
}

TensorMap read_tensor_map(const std::string& path) {
  // Weights used in place are streamed once per token: by 2 MiB pages, a TLB miss and a stop of
  // the hardware prefetcher every 2 MiB instead of every 4 KiB (TensorMap::map_by_huge_pages).
  Bytes file = map_file(path, /*huge_pages=*/true);
  auto d = file.data;
  if (d.size() >= 4 && d[0] == 'P' && d[1] == 'K' && d[2] == 3 && d[3] == 4)
    return read_pth(file, path);
  if (d.size() >= 4 && d[0] == 0x66 && d[1] == 0x6d && d[2] == 0x67 && d[3] == 0x67)
    return read_rwkv_cpp_bin(file, path);
  // safetensors starts with a little-endian u64 header length followed by '{'.
  if (d.size() >= 9 && d[8] == '{') return read_safetensors(file, path);
  throw Error(path +
              ": unknown file format (expected a PyTorch .pth zip, safetensors or an "
              "rwkv.cpp .bin)");
}

}  // namespace rwkv
