// Version detection and the table of per-version model builders.
// Adding a version: write src/model/vN.cpp with a build_vN function and add one line to kVersions.
#pragma once

#include <memory>
#include <string>

#include "io/tensor_map.h"
#include "rwkv/model.h"

namespace rwkv {

// Detects the architecture from tensor names and shapes the way the official code does:
// "4", "5.0" (no gate), "5.1" (gate, per-head decay), "5.2" (per-channel decay), "6.0", "7.0".
std::string detect_version(const TensorMap& map);

// Each builder reads its tensors from `map` (kept alive by the model; tensors it reads from
// elsewhere are released from it) and completes `info`.
using ModelBuilder = std::unique_ptr<Model> (*)(std::shared_ptr<TensorMap> map, ModelInfo info);
std::unique_ptr<Model> build_v4(std::shared_ptr<TensorMap> map, ModelInfo info);
std::unique_ptr<Model> build_v5(std::shared_ptr<TensorMap> map, ModelInfo info);
std::unique_ptr<Model> build_v6(std::shared_ptr<TensorMap> map, ModelInfo info);
std::unique_ptr<Model> build_v7(std::shared_ptr<TensorMap> map, ModelInfo info);

// Builds a model from an already read tensor map (used by Model::load and by tests).
std::unique_ptr<Model> build_model(std::shared_ptr<TensorMap> map, const LoadOptions& options);

}  // namespace rwkv
