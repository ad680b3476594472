#include "server/adapters/adapter_files.h"

#include "absl/strings/str_cat.h"
#include "server/model/architecture.h"
#include "server/model/default_model.h"
#include "server/model/safetensors.h"
#include "server/util/file_util.h"

namespace loracle::adapters {

std::vector<std::string> LinearModules(const model::ModelConfig& base) {
  std::vector<std::string> out;
  for (const model::LinearSpec& l : model::AdaptableLinears(base)) out.push_back(l.path);
  return out;
}

absl::Status WriteRandomAdapter(const std::string& dir, const model::ModelConfig& base,
                                const RandomAdapterSpec& spec) {
  if (absl::Status s = util::MakeDirs(dir); !s.ok()) return s;
  ServingConfig serving = spec.serving;
  PeftLoraConfig lora = spec.lora;
  lora.modules_to_save = model::HeadModules(base.architecture());
  if (absl::Status s =
          util::WriteFileAtomically(dir + "/" + kServingConfigFile, ServingConfigToJson(serving));
      !s.ok()) {
    return s;
  }
  const int64_t labels = static_cast<int64_t>(serving.labels.size());
  for (int m = 0; m < serving.members; ++m) {
    const std::string member_dir = serving.members == 1 ? dir : absl::StrCat(dir, "/member-", m);
    if (absl::Status s = util::MakeDirs(member_dir); !s.ok()) return s;
    const uint64_t seed = spec.seed + static_cast<uint64_t>(m);
    std::vector<std::string> names;
    std::vector<std::vector<int64_t>> shapes;
    std::vector<std::vector<float>> data;
    auto add = [&](std::string name, std::vector<int64_t> shape, float stddev) {
      size_t n = 1;
      for (int64_t d : shape) n *= static_cast<size_t>(d);
      data.push_back(model::DeterministicNormal(model::SeedFor(seed, name), n, stddev));
      names.push_back(std::move(name));
      shapes.push_back(std::move(shape));
    };
    const std::string base_prefix = model::LayoutFor(base.architecture()).base_prefix;
    for (const model::LinearSpec& l : model::AdaptableLinears(base)) {
      if (!spec.lora.Targets(l.path, base_prefix)) continue;
      const std::string prefix = "base_model.model." + base_prefix + "." + l.path;
      const int rank = spec.lora.RankFor(l.path);
      add(prefix + ".lora_A.weight", {rank, l.in}, spec.lora_std);
      add(prefix + ".lora_B.weight", {l.out, rank}, spec.lora_std);
    }
    for (const auto& [name, shape] : model::HeadTensorShapes(base, labels)) {
      add("base_model.model." + name, shape, spec.head_std);
    }
    std::vector<model::TensorToWrite> tensors;
    for (size_t k = 0; k < names.size(); ++k) {
      tensors.push_back({names[k], model::DType::kF32, shapes[k],
                         absl::Span<const uint8_t>(reinterpret_cast<const uint8_t*>(data[k].data()),
                                                   data[k].size() * sizeof(float))});
    }
    if (absl::Status s = model::WriteSafetensors(member_dir + "/" + kPeftWeightsFile, tensors,
                                                 {{"format", "pt"}});
        !s.ok()) {
      return s;
    }
    if (absl::Status s =
            util::WriteFileAtomically(member_dir + "/" + kPeftConfigFile, PeftConfigToJson(lora));
        !s.ok()) {
      return s;
    }
  }
  return absl::OkStatus();
}

}  // namespace loracle::adapters
