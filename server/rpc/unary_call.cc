#include "server/rpc/unary_call.h"

#include "absl/time/clock.h"
#include "server/metrics/metrics.h"
#include "server/rpc/status_util.h"

namespace loracle::rpc {

absl::Status NotReadyError() { return absl::UnavailableError("the base model is still loading"); }

void RecordCall(metrics::Metrics* metrics, const char* method, absl::Time start,
                const grpc::Status& status) {
  if (metrics == nullptr) return;
  metrics->RecordRpc(method, CodeName(status.error_code()),
                     absl::ToDoubleSeconds(absl::Now() - start));
}

UnaryCall::UnaryCall(grpc::CallbackServerContext* ctx, metrics::Metrics* metrics,
                     const char* method)
    : reactor_(ctx->DefaultReactor()), metrics_(metrics), method_(method), start_(absl::Now()) {}

grpc::ServerUnaryReactor* UnaryCall::Finish(const absl::Status& status) const {
  const grpc::Status s = ToGrpcStatus(status);
  RecordCall(metrics_, method_, start_, s);
  reactor_->Finish(s);
  return reactor_;
}

}  // namespace loracle::rpc
