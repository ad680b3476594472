#ifndef LORACLE_SERVER_RPC_INFERENCE_SERVICE_H_
#define LORACLE_SERVER_RPC_INFERENCE_SERVICE_H_

#include <cstdint>

#include "loracle/v1/inference.grpc.pb.h"
#include "server/rpc/engine.h"

namespace loracle::metrics {
class Metrics;
}

namespace loracle::rpc {

// Inference.Predict: validates, tokenises and enqueues on the reactor thread, never blocking;
// a batch thread fills the response and finishes the call. Thread-safe (gRPC calls the handlers
// concurrently).
class InferenceService final : public loracle::v1::Inference::CallbackService {
 public:
  struct Options {
    int max_inputs_per_request = 256;
    int max_mc_samples = 32;            // bound on PredictRequest.mc_samples
    int64_t max_input_bytes = 1 << 20;  // per text
  };
  // Neither pointer is owned; both outlive the service. `metrics` may be null.
  InferenceService(const Options& options, const Published<const InferenceBackend>* backend,
                   metrics::Metrics* metrics)
      : options_(options), backend_(backend), metrics_(metrics) {}

  grpc::ServerUnaryReactor* Predict(grpc::CallbackServerContext* ctx,
                                    const loracle::v1::PredictRequest* request,
                                    loracle::v1::PredictResponse* response) override;
  grpc::ServerUnaryReactor* Feedback(grpc::CallbackServerContext* ctx,
                                     const loracle::v1::FeedbackRequest* request,
                                     loracle::v1::FeedbackResponse* response) override;

 private:
  const Options options_;
  const Published<const InferenceBackend>* const backend_;
  metrics::Metrics* const metrics_;
};

}  // namespace loracle::rpc

#endif  // LORACLE_SERVER_RPC_INFERENCE_SERVICE_H_
