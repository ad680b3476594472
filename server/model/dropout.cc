#include "server/model/dropout.h"

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace loracle::model {

bool DropoutSpec::active() const {
  switch (method) {
    case DropoutMethod::kInput:
    case DropoutMethod::kLoraDropout:
      return rate > 0;
    case DropoutMethod::kHiddenKey:
      return dropkey_rate > 0 || hiddencut_rate > 0;
    case DropoutMethod::kNone:
      return false;
  }
  return false;
}

absl::string_view DropoutMethodName(DropoutMethod method) {
  switch (method) {
    case DropoutMethod::kNone:
      return "NONE";
    case DropoutMethod::kInput:
      return "INPUT";
    case DropoutMethod::kLoraDropout:
      return "LORA_DROPOUT";
    case DropoutMethod::kHiddenKey:
      return "HIDDENKEY";
  }
  return "NONE";
}

absl::StatusOr<DropoutMethod> ParseDropoutMethod(absl::string_view name) {
  for (DropoutMethod m : {DropoutMethod::kNone, DropoutMethod::kInput, DropoutMethod::kLoraDropout,
                          DropoutMethod::kHiddenKey}) {
    if (name == DropoutMethodName(m)) return m;
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "dropout method \"", name, "\" is not one of NONE, INPUT, LORA_DROPOUT, HIDDENKEY"));
}

absl::Status ValidateDropoutSpec(const DropoutSpec& spec) {
  for (auto [name, value] :
       {std::pair{"rate", spec.rate}, std::pair{"dropkey_rate", spec.dropkey_rate},
        std::pair{"hiddencut_rate", spec.hiddencut_rate}}) {
    if (!(value >= 0 && value < 1)) {
      return absl::InvalidArgumentError(
          absl::StrCat("dropout ", name, " must be in [0, 1), got ", value));
    }
  }
  return absl::OkStatus();
}

uint64_t MixSeed(uint64_t seed, uint64_t a, uint64_t b) {
  uint64_t z = seed ^ (a * 0x9E3779B97F4A7C15ull) ^ (b * 0xC2B2AE3D27D4EB4Full);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

}  // namespace loracle::model
