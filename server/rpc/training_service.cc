#include "server/rpc/training_service.h"

#include <string>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "server/rpc/status_util.h"
#include "server/rpc/unary_call.h"

namespace loracle::rpc {
namespace {

absl::Status NotYet(const char* method) {
  return absl::UnimplementedError(absl::StrCat(
      method,
      " is not implemented yet: the fine-tune RPC is on the roadmap (see README status "
      "table)"));
}

// Finishes at once; deletes itself when gRPC is done with it.
class RejectWriter final : public grpc::ServerWriteReactor<loracle::v1::Job> {
 public:
  explicit RejectWriter(metrics::Metrics* metrics) {
    const grpc::Status s = ToGrpcStatus(NotYet(kWatchJobMethod));
    RecordCall(metrics, kWatchJobMethod, absl::Now(), s);
    Finish(s);
  }
  void OnDone() override { delete this; }
};

}  // namespace

grpc::ServerUnaryReactor* TrainingService::Submit(grpc::CallbackServerContext* ctx,
                                                  const loracle::v1::SubmitRequest*,
                                                  loracle::v1::Job*) {
  return UnaryCall(ctx, metrics_, kSubmitJobMethod).Finish(NotYet(kSubmitJobMethod));
}
grpc::ServerUnaryReactor* TrainingService::Get(grpc::CallbackServerContext* ctx,
                                               const loracle::v1::GetJobRequest*,
                                               loracle::v1::Job*) {
  return UnaryCall(ctx, metrics_, kGetJobMethod).Finish(NotYet(kGetJobMethod));
}
grpc::ServerWriteReactor<loracle::v1::Job>* TrainingService::Watch(
    grpc::CallbackServerContext*, const loracle::v1::GetJobRequest*) {
  return new RejectWriter(metrics_);
}
grpc::ServerUnaryReactor* TrainingService::Cancel(grpc::CallbackServerContext* ctx,
                                                  const loracle::v1::GetJobRequest*,
                                                  loracle::v1::Job*) {
  return UnaryCall(ctx, metrics_, kCancelJobMethod).Finish(NotYet(kCancelJobMethod));
}
grpc::ServerUnaryReactor* TrainingService::List(grpc::CallbackServerContext* ctx,
                                                const loracle::v1::ListJobsRequest*,
                                                loracle::v1::ListJobsResponse*) {
  return UnaryCall(ctx, metrics_, kListJobsMethod).Finish(NotYet(kListJobsMethod));
}

}  // namespace loracle::rpc
