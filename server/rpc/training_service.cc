#include "server/rpc/training_service.h"

#include <string>

namespace loracle::rpc {
namespace {

grpc::Status NotYet(const char* method) {
  return grpc::Status(grpc::StatusCode::UNIMPLEMENTED,
                      std::string("Training.") + method +
                          " is not implemented yet: the fine-tune RPC is on the roadmap (see "
                          "README status table)");
}

grpc::ServerUnaryReactor* Reject(grpc::CallbackServerContext* ctx, const char* method) {
  grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
  reactor->Finish(NotYet(method));
  return reactor;
}

// Finishes at once; deletes itself when gRPC is done with it.
class RejectWriter final : public grpc::ServerWriteReactor<loracle::v1::Job> {
 public:
  RejectWriter() { Finish(NotYet("Watch")); }
  void OnDone() override { delete this; }
};

}  // namespace

grpc::ServerUnaryReactor* TrainingService::Submit(grpc::CallbackServerContext* ctx,
                                                  const loracle::v1::SubmitRequest*,
                                                  loracle::v1::Job*) {
  return Reject(ctx, "Submit");
}
grpc::ServerUnaryReactor* TrainingService::Get(grpc::CallbackServerContext* ctx,
                                               const loracle::v1::GetJobRequest*,
                                               loracle::v1::Job*) {
  return Reject(ctx, "Get");
}
grpc::ServerWriteReactor<loracle::v1::Job>* TrainingService::Watch(
    grpc::CallbackServerContext*, const loracle::v1::GetJobRequest*) {
  return new RejectWriter();
}
grpc::ServerUnaryReactor* TrainingService::Cancel(grpc::CallbackServerContext* ctx,
                                                  const loracle::v1::GetJobRequest*,
                                                  loracle::v1::Job*) {
  return Reject(ctx, "Cancel");
}
grpc::ServerUnaryReactor* TrainingService::List(grpc::CallbackServerContext* ctx,
                                                const loracle::v1::ListJobsRequest*,
                                                loracle::v1::ListJobsResponse*) {
  return Reject(ctx, "List");
}

}  // namespace loracle::rpc
