// libFuzzer target: the JSON files of a checkpoint and an adapter directory. The first byte picks
// the parser: config.json (ParseModelConfig), adapter_config.json (ParsePeftConfig) or
// loracle.json (ParseServingConfig, then serialised and parsed again: the round trip must hold).
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "absl/strings/string_view.h"
#include "server/adapters/adapter_config.h"
#include "server/model/model_config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const absl::string_view text(reinterpret_cast<const char*>(data) + 1, size - 1);
  switch (data[0] % 3) {
    case 0:
      (void)loracle::model::ParseModelConfig(text, "config.json");
      break;
    case 1: {
      auto peft = loracle::adapters::ParsePeftConfig(text, "adapter_config.json");
      if (peft.ok()) {
        auto again = loracle::adapters::ParsePeftConfig(loracle::adapters::PeftConfigToJson(*peft),
                                                        "adapter_config.json");
        if (!again.ok()) std::abort();  // what we write we must read
      }
      break;
    }
    default: {
      auto serving = loracle::adapters::ParseServingConfig(text, "loracle.json");
      if (serving.ok()) {
        auto again = loracle::adapters::ParseServingConfig(
            loracle::adapters::ServingConfigToJson(*serving), "loracle.json");
        if (!again.ok()) std::abort();
      }
      break;
    }
  }
  return 0;
}
