// The canonical tensor map every reader produces: official PyTorch checkpoint names and shapes
// (e.g. `blocks.0.att.time_decay` with shape (n_embd,)), whatever file format they came from.
// Tensors point into the mapped file where the stored layout is already canonical; tensors a
// writer transformed are rebuilt into buffers the map owns.
#pragma once

#include <deque>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/mapped_file.h"
#include "core/tensor.h"

namespace rwkv {

class TensorMap {
 public:
  TensorMap() = default;
  // Not copyable: a copy's tensors would still point into the original's owned buffers.
  TensorMap(const TensorMap&) = delete;
  TensorMap& operator=(const TensorMap&) = delete;
  TensorMap(TensorMap&&) = default;
  TensorMap& operator=(TensorMap&&) = default;

  std::string path;    // for error messages
  std::string format;  // "pth", "safetensors", "rwkv.cpp bin v101", ...
  std::map<std::string, std::string> metadata;

  // Adds a tensor whose bytes live in the source file (kept alive by `keep_alive`).
  void add(const std::string& name, Tensor t);
  // Adds a tensor with a fresh zeroed buffer owned by the map and returns it for filling.
  Tensor& add_owned(const std::string& name, DType dtype, std::vector<int64_t> shape);
  // Replaces a tensor by a float32 copy with `shape` (same element count) and returns its data.
  float* replace_with_f32(const std::string& name, std::vector<int64_t> shape);
  void erase(const std::string& name);
  // For a tensor the reader rebuilt in the canonical layout (an owned copy) whose bytes in the
  // file hold its transpose, as rwkv.cpp stores the RWKV-6/7 LoRA matrices: those file bytes
  // (the canonical shape with `transposed` set, any dtype; a stack of matrices is transposed
  // matrix by matrix), the layout kernels::matmul() runs, so that a model reads them rather
  // than transposing the copy again.
  void add_stored_transposed(const std::string& name, Tensor stored);
  const Tensor* stored_transposed(const std::string& name) const;
  // Forgets `name` and frees the bytes the map owns for it: for a tensor a model reads from
  // elsewhere (its stored_transposed() bytes).
  void release(const std::string& name);

  bool contains(const std::string& name) const { return tensors_.count(name) != 0; }
  const Tensor* find(const std::string& name) const;
  // Throws rwkv::Error "<path>: missing tensor <name>".
  const Tensor& at(const std::string& name) const;
  const std::vector<std::string>& names() const { return names_; }  // file order
  size_t size() const { return names_.size(); }

  void keep_alive(std::shared_ptr<const void> owner) { owners_.push_back(std::move(owner)); }
  // Keeps a source file's bytes alive, and remembers whether they are a read-only mapping.
  void keep_alive(const Bytes& file);
  // Drops the pages of `t` from resident memory when its bytes lie in a read-only file mapping
  // (they come back from the file if read again): for weights now used from another copy.
  void drop_pages(const Tensor& t) const;
  // Copies n bytes at `from` (a tensor's) into `to`, without touching their pages where they lie
  // in a read-only file mapping (read_mapped()), else from memory: touching a mapping by 2 MiB
  // pages maps a whole 2 MiB folio around a few bytes.
  void copy_out(const uint8_t* from, size_t n, uint8_t* to) const;
  // Drops from resident memory every read-only file mapping's pages except the 2 MiB blocks
  // holding `kept` (drop_mapped_pages_outside()): for the end of loading.
  void drop_pages_outside(const std::vector<Tensor>& kept) const;
  // Faults in those of `tensors` that lie in a read-only file mapping, by 2 MiB pages where the
  // kernel can (map_by_huge_pages()), and returns how many bytes are so mapped.
  uint64_t map_by_huge_pages(const std::vector<Tensor>& tensors) const;

 private:
  std::vector<std::string> names_;
  std::unordered_map<std::string, Tensor> tensors_;
  std::unordered_map<std::string, Tensor> stored_transposed_;
  std::deque<std::vector<uint8_t>> buffers_;
  std::vector<std::shared_ptr<const void>> owners_;
  std::vector<Bytes> mappings_;
};

// Dequantizes/upcasts any tensor to float32 (element count numel()).
std::vector<float> to_f32(const Tensor& t);

// Opens a model file of any supported format, chosen by its leading bytes.
TensorMap read_tensor_map(const std::string& path);

}  // namespace rwkv

namespace rwkv {

// A copy of `map` with every tensor stored as `dtype` (F32, F16 or BF16); quantized tensors
// are decoded first. Metadata, names and order are kept.
TensorMap cast_tensor_map(const TensorMap& map, DType dtype);

}  // namespace rwkv
