#ifndef LORACLE_SERVER_RPC_TRAINING_SERVICE_H_
#define LORACLE_SERVER_RPC_TRAINING_SERVICE_H_

#include "loracle/v1/training.grpc.pb.h"

namespace loracle::metrics {
class Metrics;
}

namespace loracle::rpc {

// The fine-tune API. Not implemented yet: every method answers UNIMPLEMENTED with a message
// naming the method, so clients can be written against the contract today.
class TrainingService final : public loracle::v1::Training::CallbackService {
 public:
  explicit TrainingService(metrics::Metrics* metrics) : metrics_(metrics) {}  // may be null

  grpc::ServerUnaryReactor* Submit(grpc::CallbackServerContext* ctx,
                                   const loracle::v1::SubmitRequest* request,
                                   loracle::v1::Job* response) override;
  grpc::ServerUnaryReactor* Get(grpc::CallbackServerContext* ctx,
                                const loracle::v1::GetJobRequest* request,
                                loracle::v1::Job* response) override;
  grpc::ServerWriteReactor<loracle::v1::Job>* Watch(
      grpc::CallbackServerContext* ctx, const loracle::v1::GetJobRequest* request) override;
  grpc::ServerUnaryReactor* Cancel(grpc::CallbackServerContext* ctx,
                                   const loracle::v1::GetJobRequest* request,
                                   loracle::v1::Job* response) override;
  grpc::ServerUnaryReactor* List(grpc::CallbackServerContext* ctx,
                                 const loracle::v1::ListJobsRequest* request,
                                 loracle::v1::ListJobsResponse* response) override;

 private:
  metrics::Metrics* const metrics_;
};

}  // namespace loracle::rpc

#endif  // LORACLE_SERVER_RPC_TRAINING_SERVICE_H_
