// Whole-model quantization for `rwkv quantize`: the per-tensor type policy and the conversion
// of a canonical tensor map, from any input format and type, to the chosen types.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "core/quant.h"
#include "io/tensor_map.h"
#include "rwkv/thread_pool.h"

namespace rwkv {

struct QuantizeOptions {
  QuantMethod method = QuantMethod::kReference;
  std::optional<DType> head;   // override the policy's type for head.weight
  std::optional<DType> emb;    // ... and for emb.weight
  ThreadPool* pool = nullptr;  // nullptr: the calling thread does everything
  // Called on the calling thread as work proceeds, with elements done and in total.
  std::function<void(uint64_t done, uint64_t total)> progress;
};

// The type `rwkv quantize ... TYPE` stores tensor `name` as:
// - the 2-D matrices of the blocks (att/ffn key, value, receptance, output, gate): TYPE;
// - head.weight: Q8_0 when TYPE is a 4- or 5-bit type (the head is the most sensitive matrix,
//   and for a small model with a real vocabulary most of the bytes read per token), else TYPE;
// - emb.weight: F16 when TYPE is quantized (one row is read per token, so its size costs no
//   speed, and Q8_0 there cost 10-20x the KL of a Q8_0 head on the tiny models), else TYPE;
// - for a quantized TYPE, a head or embedding under 2^20 weights (byte-level toy models) is kept
//   as it is: a few hundred KB at most, and any rounding of it shows in KL on such models;
// - everything else (LoRA matrices, time_* vectors, LayerNorm/GroupNorm, v7's k_k, r_k...) F32:
//   tiny, and read once into float32 at load anyway;
// - a matrix whose rows are not whole blocks of 32 gets F16 instead of a quantized type.
// options.head / options.emb override the head and embedding types.
DType policy_dtype(const std::string& name, const Tensor& t, DType type,
                   const QuantizeOptions& options = {});

// A copy of `in` with every tensor converted per the policy. Tensors whose type does not change
// are not copied: they point into `in`, which the result keeps alive. Names, order and metadata
// are kept (notably `ln_x_eps`), plus `quantization` = TYPE. Throws rwkv::Error naming the
// tensor for non-finite values, or values beyond the fp16 range for quantized types.
TensorMap quantize_model(std::shared_ptr<const TensorMap> in, DType type,
                         const QuantizeOptions& options = {});

}  // namespace rwkv
