#ifndef LORACLE_SERVER_ADAPTERS_ADAPTER_H_
#define LORACLE_SERVER_ADAPTERS_ADAPTER_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "server/adapters/adapter_config.h"
#include "server/model/checkpoint.h"
#include "server/model/encoder.h"

namespace loracle::adapters {

// One loaded adapter version: M members' LoRA weights and heads, immutable once loaded. Requests
// hold it by shared_ptr, so a version retires when its last in-flight request lets go.
struct Adapter {
  std::string name;
  int64_t version = 0;
  std::string path;
  ServingConfig serving;
  PeftLoraConfig lora;  // member 0's
  std::vector<model::LoraMember> members;
  int num_labels() const { return static_cast<int>(serving.labels.size()); }
};

// Loads the adapter directory `dir` (layout in adapter_config.h) against `base`. Head tensors the
// adapter lacks come from the base checkpoint's own head when it has one. Errors name the file
// and tensor: NOT_FOUND (missing file), INVALID_ARGUMENT (bad config, missing or
// mis-shaped tensor, labels that disagree with the head), DATA_LOSS (corrupt safetensors).
absl::StatusOr<std::shared_ptr<const Adapter>> LoadAdapter(const std::string& dir,
                                                           const std::string& name, int64_t version,
                                                           const model::BaseModel& base);

// The base checkpoint's own classification head (*ForSequenceClassification) as a head-only
// adapter named `name`: no LoRA layers, labels from config.json's id2label, version 0, path = the
// model directory. NOT_FOUND when the checkpoint has no head.
absl::StatusOr<std::shared_ptr<const Adapter>> BaseHeadAdapter(const model::BaseModel& base,
                                                               const std::string& name);

// Writes `adapter` into `dir` (created if needed) as PEFT saves a LoRA sequence-classification
// adapter of `base`'s architecture: adapter_config.json (adapter.lora, with the head modules as
// modules_to_save) and adapter_model.safetensors per member (member-<i>/ when M > 1), plus
// loracle.json. F32 tensors; `base_model.model.<prefix>.<module>.lora_{A,B}.weight` and
// `base_model.model.<head module>.{weight,bias}` keys.
absl::Status SaveAdapter(const std::string& dir, const Adapter& adapter,
                         const model::BaseModel& base);

}  // namespace loracle::adapters

#endif  // LORACLE_SERVER_ADAPTERS_ADAPTER_H_
