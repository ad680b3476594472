#include "server/rpc/unary_call.h"

#include <string>

#include "absl/status/status.h"
#include "absl/time/clock.h"
#include "server/metrics/metrics.h"
#include "server/rpc/auth.h"
#include "server/rpc/status_util.h"

namespace loracle::rpc {

absl::Status NotReadyError() { return absl::UnavailableError("the base model is still loading"); }

metrics::MethodSeries* SeriesOf(metrics::Metrics* metrics, const char* method) {
  return metrics == nullptr ? nullptr : metrics->Method(method);
}

void RecordCall(metrics::MethodSeries* series, absl::Time start, const grpc::Status& status) {
  if (series == nullptr) return;
  // The label value: "OK", "INVALID_ARGUMENT", ... (absl and gRPC share the codes).
  const std::string name =
      absl::StatusCodeToString(static_cast<absl::StatusCode>(status.error_code()));
  series->Record(static_cast<int>(status.error_code()), name.c_str(),
                 absl::ToDoubleSeconds(absl::Now() - start));
}

UnaryCall::UnaryCall(grpc::CallbackServerContext* ctx, metrics::MethodSeries* series)
    : ctx_(ctx), reactor_(ctx->DefaultReactor()), series_(series), start_(absl::Now()) {}

bool UnaryCall::Allow(const TokenAuth* auth, uint32_t roles) const {
  if (auth == nullptr) return true;
  absl::Status s = auth->Check(*ctx_, roles);
  if (!s.ok()) Finish(s);
  return s.ok();
}

grpc::ServerUnaryReactor* UnaryCall::Finish(const absl::Status& status) const {
  const grpc::Status s = ToGrpcStatus(status);
  RecordCall(series_, start_, s);
  reactor_->Finish(s);
  return reactor_;
}

}  // namespace loracle::rpc
