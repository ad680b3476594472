#ifndef LORACLE_SERVER_RPC_ENGINE_H_
#define LORACLE_SERVER_RPC_ENGINE_H_

// What the services call into (torch-free interfaces only), and the slot through which the
// composition root publishes them once the base model is loaded.

#include <atomic>

namespace loracle::adapters {
class Registry;
}
namespace loracle::serving {
class Batcher;
}
namespace loracle::model {
class Tokenizer;
}

namespace loracle::rpc {

// A pointer published once, when the model is loaded; null before, and the services then answer
// UNAVAILABLE. What it points to outlives the gRPC server. Thread-safe.
template <typename T>
class Published {
 public:
  void Publish(T* p) { p_.store(p, std::memory_order_release); }
  T* get() const { return p_.load(std::memory_order_acquire); }

 private:
  std::atomic<T*> p_{nullptr};
};

// What Inference.Predict uses: the adapter handles, the tokenizer and the batch queue.
struct InferenceBackend {
  adapters::Registry* registry = nullptr;  // AcquireAsync reloads evicted adapters
  const model::Tokenizer* tokenizer = nullptr;
  int max_length = 512;  // tokens per input, special tokens included
  serving::Batcher* batcher = nullptr;
};

}  // namespace loracle::rpc

#endif  // LORACLE_SERVER_RPC_ENGINE_H_
