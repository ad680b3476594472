#include "server/adapters/adapter_files.h"

#include "absl/strings/str_cat.h"
#include "server/model/default_model.h"
#include "server/model/file_util.h"
#include "server/model/safetensors.h"

namespace loracle::adapters {
namespace {

struct Linear {
  std::string path;
  int64_t in, out;
};

std::vector<Linear> BertLinears(const model::ModelConfig& c) {
  std::vector<Linear> out;
  const int64_t h = c.hidden_size, i = c.intermediate_size;
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    const std::string p = absl::StrCat("encoder.layer.", l, ".");
    out.push_back({p + "attention.self.query", h, h});
    out.push_back({p + "attention.self.key", h, h});
    out.push_back({p + "attention.self.value", h, h});
    out.push_back({p + "attention.output.dense", h, h});
    out.push_back({p + "intermediate.dense", h, i});
    out.push_back({p + "output.dense", i, h});
  }
  out.push_back({"pooler.dense", h, h});
  return out;
}

}  // namespace

std::vector<std::string> BertLinearModules(const model::ModelConfig& base) {
  std::vector<std::string> out;
  for (const Linear& l : BertLinears(base)) out.push_back(l.path);
  return out;
}

absl::Status WriteRandomAdapter(const std::string& dir, const model::ModelConfig& base,
                                const RandomAdapterSpec& spec) {
  if (absl::Status s = model::MakeDirs(dir); !s.ok()) return s;
  ServingConfig serving = spec.serving;
  if (absl::Status s =
          model::WriteFileAtomically(dir + "/" + kServingConfigFile, ServingConfigToJson(serving));
      !s.ok()) {
    return s;
  }
  const int64_t labels = static_cast<int64_t>(serving.labels.size());
  for (int m = 0; m < serving.members; ++m) {
    const std::string member_dir = serving.members == 1 ? dir : absl::StrCat(dir, "/member-", m);
    if (absl::Status s = model::MakeDirs(member_dir); !s.ok()) return s;
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
    for (const Linear& l : BertLinears(base)) {
      if (!MatchesTarget(l.path, spec.lora.target_modules)) continue;
      const std::string prefix = "base_model.model.bert." + l.path;
      add(prefix + ".lora_A.weight", {spec.lora.rank, l.in}, spec.lora_std);
      add(prefix + ".lora_B.weight", {l.out, spec.lora.rank}, spec.lora_std);
    }
    add("base_model.model.classifier.weight", {labels, base.hidden_size}, spec.head_std);
    add("base_model.model.classifier.bias", {labels}, spec.head_std);
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
    if (absl::Status s = model::WriteFileAtomically(member_dir + "/" + kPeftConfigFile,
                                                    PeftConfigToJson(spec.lora));
        !s.ok()) {
      return s;
    }
  }
  return absl::OkStatus();
}

}  // namespace loracle::adapters
