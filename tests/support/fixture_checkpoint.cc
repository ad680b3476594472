#include "tests/support/fixture_checkpoint.h"

#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "nlohmann/json.hpp"
#include "server/model/architecture.h"
#include "server/model/default_model.h"
#include "server/util/file_util.h"

namespace loracle::testing {
namespace {

using absl::EndsWith;
using model::DeterministicNormal;
using model::DType;
using model::ModelConfig;
using model::RandomInitValues;
using model::SeedFor;
using model::TensorShapes;
using model::TensorToWrite;

}  // namespace

absl::Status WriteRandomCheckpoint(const std::string& dir, const ModelConfig& config, uint64_t seed,
                                   const CheckpointLayout& layout) {
  if (layout.dtype != DType::kF32 && layout.dtype != DType::kF16 && layout.dtype != DType::kBF16) {
    return absl::InvalidArgumentError("checkpoint dtype must be F32, F16 or BF16");
  }
  if (layout.shards < 1) return absl::InvalidArgumentError("shards must be >= 1");
  if (layout.num_labels > 0 && !config.id2label.empty() &&
      static_cast<int64_t>(config.id2label.size()) != layout.num_labels) {
    return absl::InvalidArgumentError("id2label and num_labels disagree");
  }
  if (absl::Status s = util::MakeDirs(dir); !s.ok()) return s;
  TensorShapes shapes;
  const std::string prefix =
      layout.num_labels > 0 ? model::LayoutFor(config.architecture()).base_prefix + "." : "";
  for (auto& [name, shape] : model::BaseTensorShapes(config))
    shapes.push_back({prefix + name, shape});
  if (layout.num_labels > 0) {
    for (auto& t : model::HeadTensorShapes(config, layout.num_labels)) shapes.push_back(t);
  }
  std::vector<std::vector<uint8_t>> data;
  data.reserve(shapes.size());
  for (const auto& [name, shape] : shapes) {
    std::vector<float> values = RandomInitValues(name, shape, config, seed, layout.weight_std);
    if (layout.bias_std > 0 && (EndsWith(name, "LayerNorm.weight") ||
                                EndsWith(name, "norm.weight") || EndsWith(name, ".bias"))) {
      const float base = EndsWith(name, ".bias") ? 0.0f : 1.0f;
      values = DeterministicNormal(SeedFor(seed, name), values.size(), layout.bias_std);
      for (float& v : values) v += base;
    }
    data.push_back(model::EncodeFloats(values, layout.dtype));
  }
  std::vector<TensorToWrite> tensors;
  for (size_t k = 0; k < shapes.size(); ++k) {
    tensors.push_back({shapes[k].first, layout.dtype, shapes[k].second,
                       absl::Span<const uint8_t>(data[k].data(), data[k].size())});
  }
  ModelConfig written = config;
  if (layout.num_labels > 0 && written.architectures.empty()) {
    written.architectures = {model::SpecFor(config.architecture()).classification_class};
  }
  if (layout.num_labels > 0 && written.id2label.empty()) {
    for (int64_t i = 0; i < layout.num_labels; ++i) {
      written.id2label.push_back(absl::StrCat("LABEL_", i));
    }
  }
  if (absl::Status s =
          util::WriteFileAtomically(dir + "/config.json", model::ModelConfigToJson(written));
      !s.ok()) {
    return s;
  }
  if (layout.shards == 1) {
    return model::WriteSafetensors(dir + "/model.safetensors", tensors, {{"format", "pt"}});
  }
  // Contiguous runs of tensors, about equal in bytes, one file each.
  size_t total = 0;
  for (const auto& d : data) total += d.size();
  const size_t per_shard = (total + static_cast<size_t>(layout.shards) - 1) / layout.shards;
  nlohmann::json index = {{"metadata", {{"total_size", total}}},
                          {"weight_map", nlohmann::json::object()}};
  size_t k = 0;
  for (int shard = 1; shard <= layout.shards; ++shard) {
    const std::string file =
        absl::StrFormat("model-%05d-of-%05d.safetensors", shard, layout.shards);
    std::vector<TensorToWrite> part;
    size_t bytes = 0;
    while (k < tensors.size() && (shard == layout.shards || bytes < per_shard || part.empty())) {
      bytes += data[k].size();
      index["weight_map"][tensors[k].name] = file;
      part.push_back(tensors[k++]);
    }
    if (absl::Status s = model::WriteSafetensors(dir + "/" + file, part, {{"format", "pt"}});
        !s.ok()) {
      return s;
    }
  }
  return util::WriteFileAtomically(dir + "/model.safetensors.index.json", index.dump(2) + "\n");
}

}  // namespace loracle::testing
