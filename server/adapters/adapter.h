#ifndef LORACLE_SERVER_ADAPTERS_ADAPTER_H_
#define LORACLE_SERVER_ADAPTERS_ADAPTER_H_

// One loaded adapter version as the torch-free parts of the server see it: its identity and
// serving settings, with the tensors behind an opaque pointer (adapter_weights.h), so the
// registry, the batcher and rpc/ build without torch.

#include <cstdint>
#include <memory>
#include <string>

#include "server/adapters/adapter_config.h"

namespace loracle::metrics {
class AdapterSeries;
}

namespace loracle::adapters {

// The M members' LoRA factors and heads; defined in adapter_weights.h (torch).
struct AdapterWeights;

// Immutable once loaded; shared by shared_ptr, so a version retires when its last holder (the
// registry or an in-flight request) lets go. Safe to read from any thread.
struct Adapter {
  std::string name;
  int64_t version = 0;
  std::string path;  // the directory it was loaded from
  ServingConfig serving;
  PeftLoraConfig lora;       // member 0's
  int members = 1;           // M: the number of member weight sets in `weights`
  int64_t memory_bytes = 0;  // the bytes of `weights`' tensors (the registry's memory budget)
  // Null only for adapters built by torch-free tests.
  std::shared_ptr<const AdapterWeights> weights;
  // This version's metric series (metrics.h), set by whoever loads it; null without metrics.
  // Recording into them is thread-safe; they leave the exposition with the version.
  std::shared_ptr<metrics::AdapterSeries> series;
  int num_labels() const { return static_cast<int>(serving.labels.size()); }
};

// What Adapters.Get shows for a READY `adapter`.
AdapterInfo InfoOf(const Adapter& adapter);

}  // namespace loracle::adapters

#endif  // LORACLE_SERVER_ADAPTERS_ADAPTER_H_
