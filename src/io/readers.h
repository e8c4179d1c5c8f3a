// One reader per file format; each turns the bytes of a file into the canonical TensorMap.
// `path` is used only in error messages. Readers never trust a length, offset or shape read
// from the file: every one is checked against the file's size before use.
#pragma once

#include <string>

#include "core/mapped_file.h"
#include "io/tensor_map.h"

namespace rwkv {

// PyTorch `torch.save` zip archive (BlinkDL's official `.pth`), read with a restricted unpickler.
TensorMap read_pth(const Bytes& file, const std::string& path);
// Hugging Face safetensors.
TensorMap read_safetensors(const Bytes& file, const std::string& path);
// rwkv.cpp's ggml-based `.bin` (file versions 100 and 101); undoes its converter's transforms.
TensorMap read_rwkv_cpp_bin(const Bytes& file, const std::string& path);

// Writes the tensors of `map` (any dtype; quantized ones under our type names) as safetensors,
// atomically.
void write_safetensors(const TensorMap& map, const std::string& path);

}  // namespace rwkv
