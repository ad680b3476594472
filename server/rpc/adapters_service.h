#ifndef LORACLE_SERVER_RPC_ADAPTERS_SERVICE_H_
#define LORACLE_SERVER_RPC_ADAPTERS_SERVICE_H_

#include "loracle/v1/adapters.grpc.pb.h"
#include "server/rpc/engine.h"
#include "server/rpc/unary_call.h"

namespace loracle::metrics {
class Metrics;
}
namespace loracle::adapters {
class Registry;
}

namespace loracle::rpc {

// Adapters.{List,Get} answer on the reactor (a mutex-guarded read); Load and Unload are queued
// on the registry's load threads, which finish the call. Never blocks a reactor; thread-safe.
class AdaptersService final : public loracle::v1::Adapters::CallbackService {
 public:
  // No pointer is owned; all outlive the service. `metrics` may be null; `auth` null = open.
  AdaptersService(const Published<adapters::Registry>* registry, const TokenAuth* auth,
                  metrics::Metrics* metrics)
      : registry_(registry),
        auth_(auth),
        list_(SeriesOf(metrics, kListAdaptersMethod)),
        get_(SeriesOf(metrics, kGetAdapterMethod)),
        load_(SeriesOf(metrics, kLoadAdapterMethod)),
        unload_(SeriesOf(metrics, kUnloadAdapterMethod)) {}

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
  const Published<adapters::Registry>* const registry_;
  const TokenAuth* const auth_;
  metrics::MethodSeries* const list_;
  metrics::MethodSeries* const get_;
  metrics::MethodSeries* const load_;
  metrics::MethodSeries* const unload_;
};

}  // namespace loracle::rpc

#endif  // LORACLE_SERVER_RPC_ADAPTERS_SERVICE_H_
