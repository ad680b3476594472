#ifndef LORACLE_SERVER_MODEL_DROPOUT_H_
#define LORACLE_SERVER_MODEL_DROPOUT_H_

// The LoRA dropout family (DESIGN.md), torch-free description. Masks are drawn per row from a
// 64-bit seed, so a row's masks depend only on its seed: reproducible, and independent of how rows
// are batched.
//   INPUT         PEFT lora_dropout: element-wise dropout on the LoRA branch input (per token).
//   LORA_DROPOUT  Lin et al. 2024: one Bernoulli(1-p) mask on A's input columns and one on B's
//                 output rows per sample (not per token): dW = diag(m_B) B A diag(m_A). The rank
//                 dimension is never dropped. Each mask is scaled by 1/(1-p), so E[dW] = B A.
//   HIDDENKEY     Wang et al. 2024: column-wise DropKey (whole key columns of the attention
//                 logits set to the lowest float before softmax, mask [heads, 1, keys] per row;
//                 never every key of a row) plus element-wise HiddenCut on the FFN hidden states,
//                 scaled by 1/(1-p). (The bidirectional KL term is a training loss.)

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace loracle::model {

enum class DropoutMethod { kNone, kInput, kLoraDropout, kHiddenKey };

struct DropoutSpec {
  DropoutMethod method = DropoutMethod::kNone;
  double rate = 0;            // INPUT and LORA_DROPOUT
  double dropkey_rate = 0;    // HIDDENKEY
  double hiddencut_rate = 0;  // HIDDENKEY
  bool active() const;        // a method other than NONE with a non-zero rate
};

absl::string_view DropoutMethodName(DropoutMethod method);  // "NONE", "INPUT", ...
absl::StatusOr<DropoutMethod> ParseDropoutMethod(absl::string_view name);
// INVALID_ARGUMENT unless every rate is in [0, 1).
absl::Status ValidateDropoutSpec(const DropoutSpec& spec);

// Mixes a seed with two integers (SplitMix64 finaliser): distinct streams per row, layer, purpose.
uint64_t MixSeed(uint64_t seed, uint64_t a, uint64_t b = 0);

}  // namespace loracle::model

#endif  // LORACLE_SERVER_MODEL_DROPOUT_H_
