#ifndef LORACLE_SERVER_RPC_ENGINE_H_
#define LORACLE_SERVER_RPC_ENGINE_H_

// The slot through which the composition root publishes what the services call into (torch-free
// interfaces only: serving::Predictor, adapters::Registry, training::JobQueue) once the base
// model is loaded.

#include <atomic>

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

}  // namespace loracle::rpc

#endif  // LORACLE_SERVER_RPC_ENGINE_H_
