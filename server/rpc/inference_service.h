#ifndef LORACLE_SERVER_RPC_INFERENCE_SERVICE_H_
#define LORACLE_SERVER_RPC_INFERENCE_SERVICE_H_

#include <cstdint>

#include "loracle/v1/inference.grpc.pb.h"
#include "server/rpc/engine.h"

namespace loracle::rpc {

// Inference.Predict: validates, tokenises and enqueues on the reactor thread, never blocking;
// the batch thread fills the response and calls Finish.
class InferenceService final : public loracle::v1::Inference::CallbackService {
 public:
  struct Options {
    int max_inputs_per_request = 256;
    int max_mc_samples = 32;            // bound on PredictRequest.mc_samples
    int64_t max_input_bytes = 1 << 20;  // per text
  };
  InferenceService(const Options& options, ServiceContext* context)
      : options_(options), context_(context) {}

  grpc::ServerUnaryReactor* Predict(grpc::CallbackServerContext* ctx,
                                    const loracle::v1::PredictRequest* request,
                                    loracle::v1::PredictResponse* response) override;
  grpc::ServerUnaryReactor* Feedback(grpc::CallbackServerContext* ctx,
                                     const loracle::v1::FeedbackRequest* request,
                                     loracle::v1::FeedbackResponse* response) override;

 private:
  const Options options_;
  ServiceContext* const context_;  // not owned
};

}  // namespace loracle::rpc

#endif  // LORACLE_SERVER_RPC_INFERENCE_SERVICE_H_
