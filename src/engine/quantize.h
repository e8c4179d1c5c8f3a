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
  std::optional<DType> emb;    // ... for emb.weight
  std::optional<DType> lora;   // ... for the LoRA matrices of RWKV-6/7
  ThreadPool* pool = nullptr;  // nullptr: the calling thread does everything
  // Called on the calling thread as work proceeds, with elements done and in total.
  std::function<void(uint64_t done, uint64_t total)> progress;
};

// Models under this many parameters (the byte-level test models, 0.7-3M) get TYPE for their
// block matrices only; see policy_dtype.
constexpr int64_t kSmallModelParams = int64_t(1) << 23;

// The type `rwkv quantize ... TYPE` stores tensor `name` as (measurements in
// docs/BENCHMARKS.md):
// - the 2-D matrices of the blocks (att/ffn key, value, receptance, output, gate): TYPE;
//   (I8, int8 per output channel, counts as quantized below, like Q8_0);
// - head.weight: Q8_0 when TYPE is a 4- or 5-bit type (the head is the most sensitive matrix,
//   and with a real vocabulary the largest), else TYPE;
// - emb.weight: F16 when TYPE is quantized (one row is read per token, so its size costs no
//   speed, and Q8_0 there cost more KL than a Q8_0 head), else TYPE;
// - LoRA matrices of RWKV-6/7: I8 when TYPE is a 4- or 5-bit type, F16 when it is Q8_0 or I8,
//   else TYPE (read every token: F16 halves their F32 bytes for a KL of 6e-8; I8 quarters them,
//   making RWKV-7 1.5B Q4_0 generation 6-12% faster, for a KL of 8e-5 on a random RWKV-7
//   768 x 12: under 0.5% of what 4/5-bit weights cost, but 14% of Q8_0's);
// - in a small model (`small_model`: under kSmallModelParams) the head, embedding and LoRA are
//   kept as they are for a quantized TYPE: they are a few hundred KB, and any rounding of them
//   shows in KL on such models;
// - everything else (time_* and other vectors, LayerNorm/GroupNorm): F32, being tiny and
//   converted to float32 at load anyway;
// - a matrix whose rows are not whole blocks of 32 gets F16 instead of a quantized type.
// options.head / emb / lora override the head, embedding and LoRA types.
DType policy_dtype(const std::string& name, const Tensor& t, DType type, bool small_model,
                   const QuantizeOptions& options = {});

// Whether a model counts as small for the policy: under kSmallModelParams parameters.
bool is_small_model(const TensorMap& map);

// A copy of `in` with every tensor converted per the policy. Tensors whose type does not change
// are not copied: they point into `in`, which the result keeps alive. Names, order and metadata
// are kept (notably `ln_x_eps`), plus `quantization` = TYPE. Throws rwkv::Error naming the
// tensor for non-finite values, or values beyond the fp16 range for quantized types.
TensorMap quantize_model(std::shared_ptr<const TensorMap> in, DType type,
                         const QuantizeOptions& options = {});

}  // namespace rwkv
