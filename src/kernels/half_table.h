// Every fp16 value as float32, indexed by its bits. Kernels that unpack ggml blocks take each
// block's fp16 scale from here: one broadcast load, where converting it in a vector register
// costs two or three more operations on the shuffle port (on Intel that port bounds exact
// unpacking).
#pragma once

#include <array>
#include <cstdint>

namespace rwkv::kernels {

extern const std::array<float, 65536> kHalfToFloat;

}  // namespace rwkv::kernels
