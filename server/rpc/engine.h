#ifndef LORACLE_SERVER_RPC_ENGINE_H_
#define LORACLE_SERVER_RPC_ENGINE_H_

#include <atomic>

namespace loracle::adapters {
class Registry;
}
namespace loracle::serving {
class Batcher;
class EnsembleRunner;
}  // namespace loracle::serving
namespace loracle::metrics {
class Metrics;
}

namespace loracle::rpc {

// What the services call into. Published once the model is loaded (null before: UNAVAILABLE);
// everything it points to outlives the gRPC server.
struct Engine {
  serving::EnsembleRunner* runner = nullptr;
  adapters::Registry* registry = nullptr;
  serving::Batcher* batcher = nullptr;
};

// Shared by the services: the engine pointer (set once) and the metrics (always present).
struct ServiceContext {
  std::atomic<const Engine*> engine{nullptr};
  metrics::Metrics* metrics = nullptr;
};

}  // namespace loracle::rpc

#endif  // LORACLE_SERVER_RPC_ENGINE_H_
