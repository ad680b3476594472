#ifndef LORACLE_SERVER_ADAPTERS_ADAPTER_WEIGHTS_H_
#define LORACLE_SERVER_ADAPTERS_ADAPTER_WEIGHTS_H_

// An adapter's tensors, and reading and writing them in PEFT's format (torch). Layout on disk in
// adapter_config.h.

#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "server/adapters/adapter.h"
#include "server/model/lora.h"
#include "server/model/ood_detector.h"

namespace loracle::model {
struct BaseModel;
}

namespace loracle::adapters {

struct AdapterWeights {
  std::vector<model::LoraMember> members;  // M entries
  // The OOD detector ServingConfig::ood names; null without one.
  std::shared_ptr<const model::OodDetector> ood;
};

// The member weights of `adapter`; it must have weights (every adapter this file loads does).
const std::vector<model::LoraMember>& MembersOf(const Adapter& adapter);

// An adapter named `name` with `members` as its weights; adapter.members = members.size().
std::shared_ptr<Adapter> MakeAdapter(Adapter identity, std::vector<model::LoraMember> members,
                                     std::shared_ptr<const model::OodDetector> ood = nullptr);
// The OOD detector of `adapter`, or null.
const model::OodDetector* OodOf(const Adapter& adapter);

// Loads the adapter directory `dir` against `base`. Head tensors the adapter lacks come from the
// base checkpoint's own head when it has one. Errors name the file and tensor: NOT_FOUND
// (missing file), INVALID_ARGUMENT (bad config, missing or mis-shaped tensor, labels that
// disagree with the head), DATA_LOSS (corrupt safetensors), FAILED_PRECONDITION (loracle.json
// records another base's fingerprint: CheckBase). Thread-safe (reads `base` only).
absl::StatusOr<std::shared_ptr<Adapter>> LoadAdapter(const std::string& dir,
                                                     const std::string& name, int64_t version,
                                                     const model::BaseModel& base);

// OK when `serving` records `base`'s fingerprint, or none (logged as a warning: external PEFT
// adapters and adapters written before fingerprints load unchecked); FAILED_PRECONDITION naming
// both fingerprints and how to retrain otherwise. `dir` names the adapter in messages.
absl::Status CheckBase(const ServingConfig& serving, const model::BaseModel& base,
                       const std::string& dir);

// The base checkpoint's own classification head (*ForSequenceClassification) as a head-only
// adapter named `name`: no LoRA layers, labels from config.json's id2label, version 0, path = the
// model directory. NOT_FOUND when the checkpoint has no head.
absl::StatusOr<std::shared_ptr<Adapter>> BaseHeadAdapter(const model::BaseModel& base,
                                                         const std::string& name);

// Writes `adapter` into `dir` (created if needed) as PEFT saves a LoRA sequence-classification
// adapter of `base`'s architecture: adapter_config.json (adapter.lora, with the head modules as
// modules_to_save) and adapter_model.safetensors per member (member-<i>/ when M > 1), plus
// loracle.json (with `base`'s fingerprint in "base", whatever adapter.serving.base holds) and, with
// an OOD detector, its file (ServingConfig::ood). F32 tensors;
// `base_model.model.<prefix>.<module>.lora_{A,B}.weight` and `base_model.model.<head
// module>.{weight,bias}` keys.
absl::Status SaveAdapter(const std::string& dir, const Adapter& adapter,
                         const model::BaseModel& base);

}  // namespace loracle::adapters

#endif  // LORACLE_SERVER_ADAPTERS_ADAPTER_WEIGHTS_H_
