#ifndef LORACLE_SERVER_RPC_ADAPTERS_SERVICE_H_
#define LORACLE_SERVER_RPC_ADAPTERS_SERVICE_H_

#include <deque>
#include <functional>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "loracle/v1/adapters.grpc.pb.h"
#include "server/rpc/engine.h"

namespace loracle::rpc {

// Adapters.{List,Get,Unload} answer on the reactor (a mutex-guarded map read); Load reads files
// and tensors, so it runs on the service's own worker thread, which finishes the call.
class AdaptersService final : public loracle::v1::Adapters::CallbackService {
 public:
  explicit AdaptersService(ServiceContext* context);
  ~AdaptersService() override;  // finishes queued loads, joins the worker

  grpc::ServerUnaryReactor* List(grpc::CallbackServerContext* ctx,
                                 const loracle::v1::ListAdaptersRequest* request,
                                 loracle::v1::ListAdaptersResponse* response) override;
  grpc::ServerUnaryReactor* Get(grpc::CallbackServerContext* ctx,
                                const loracle::v1::GetAdapterRequest* request,
                                loracle::v1::AdapterInfo* response) override;
  grpc::ServerUnaryReactor* Load(grpc::CallbackServerContext* ctx,
                                 const loracle::v1::LoadAdapterRequest* request,
                                 loracle::v1::AdapterInfo* response) override;
  grpc::ServerUnaryReactor* Unload(grpc::CallbackServerContext* ctx,
                                   const loracle::v1::UnloadAdapterRequest* request,
                                   loracle::v1::UnloadAdapterResponse* response) override;

 private:
  void WorkerLoop();
  bool HasWork() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return !work_.empty() || stopping_; }

  ServiceContext* const context_;
  absl::Mutex mu_;
  std::deque<std::function<void()>> work_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::thread worker_;
};

}  // namespace loracle::rpc

#endif  // LORACLE_SERVER_RPC_ADAPTERS_SERVICE_H_
