#ifndef LORACLE_SERVER_ADAPTERS_ADAPTER_FILES_H_
#define LORACLE_SERVER_ADAPTERS_ADAPTER_FILES_H_

// Writes adapter directories without torch: random (seeded) LoRA weights and heads, for the
// built-in demo adapter and for tests.

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "server/adapters/adapter_config.h"
#include "server/model/model_config.h"

namespace loracle::adapters {

// PEFT module paths of the encoder's LoRA-adaptable linear layers
// ("encoder.layer.0.attention.self.query").
std::vector<std::string> LinearModules(const model::ModelConfig& base);

struct RandomAdapterSpec {
  ServingConfig serving;   // labels, members, ...
  PeftLoraConfig lora;     // rank, alpha, targets
  uint64_t seed = 1;       // member m uses seed + m
  float lora_std = 0.02f;  // std of A and B (PEFT zero-inits B; random B makes the delta visible)
  float head_std = 0.5f;   // std of the classifier weights and bias
};

// Writes loracle.json and the PEFT files of every member into `dir` (created if needed), with the
// key names PEFT gives a *ForSequenceClassification model of `base`'s architecture; the head
// tensors are those of spec.lora.modules_to_save's modules.
absl::Status WriteRandomAdapter(const std::string& dir, const model::ModelConfig& base,
                                const RandomAdapterSpec& spec);

}  // namespace loracle::adapters

#endif  // LORACLE_SERVER_ADAPTERS_ADAPTER_FILES_H_
