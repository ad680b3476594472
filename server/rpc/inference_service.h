#ifndef LORACLE_SERVER_RPC_INFERENCE_SERVICE_H_
#define LORACLE_SERVER_RPC_INFERENCE_SERVICE_H_

#include <cstdint>
#include <functional>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "loracle/v1/inference.grpc.pb.h"
#include "server/rpc/engine.h"
#include "server/rpc/unary_call.h"

namespace loracle::metrics {
class Metrics;
}
namespace loracle::calibration {
class FeedbackStore;
}

namespace loracle::rpc {

// Inference.Predict: validates, tokenises and enqueues on the reactor thread, never blocking;
// a batch thread fills the response, remembers each prediction for feedback, and finishes the
// call. Inference.Feedback: records true labels in the FeedbackStore on the reactor thread.
// Thread-safe (gRPC calls the handlers concurrently).
class InferenceService final : public loracle::v1::Inference::CallbackService {
 public:
  struct Options {
    int max_inputs_per_request = 256;
    int max_mc_samples = 32;            // bound on PredictRequest.mc_samples
    int max_passes_per_request = 256;   // members x mc_samples: forward passes per input
    int64_t max_input_bytes = 1 << 20;  // per text
    int max_feedback_items = 10000;     // per Feedback call
  };
  // No pointer is owned; all outlive the service. `metrics` may be null; without `feedback`,
  // Feedback answers UNIMPLEMENTED; `auth` null = open.
  InferenceService(const Options& options, const Published<const InferenceBackend>* backend,
                   calibration::FeedbackStore* feedback, const TokenAuth* auth,
                   metrics::Metrics* metrics)
      : options_(options),
        backend_(backend),
        feedback_(feedback),
        auth_(auth),
        predict_(SeriesOf(metrics, kPredictMethod)),
        feedback_calls_(SeriesOf(metrics, kFeedbackMethod)),
        online_calibration_(SeriesOf(metrics, kOnlineCalibrationMethod)) {}

  grpc::ServerUnaryReactor* Predict(grpc::CallbackServerContext* ctx,
                                    const loracle::v1::PredictRequest* request,
                                    loracle::v1::PredictResponse* response) override;
  grpc::ServerUnaryReactor* Feedback(grpc::CallbackServerContext* ctx,
                                     const loracle::v1::FeedbackRequest* request,
                                     loracle::v1::FeedbackResponse* response) override;
  grpc::ServerUnaryReactor* OnlineCalibration(
      grpc::CallbackServerContext* ctx, const loracle::v1::OnlineCalibrationRequest* request,
      loracle::v1::OnlineCalibrationResponse* response) override;

 private:
  const Options options_;
  const Published<const InferenceBackend>* const backend_;
  calibration::FeedbackStore* const feedback_;
  const TokenAuth* const auth_;
  metrics::MethodSeries* const predict_;
  metrics::MethodSeries* const feedback_calls_;
  metrics::MethodSeries* const online_calibration_;
};

// The request's problems a person can fix, checked before any lookup (exposed for tests and
// fuzzers): adapter named, 1..max_inputs_per_request inputs, text_pairs empty or matching,
// mc_samples in range, abstain_threshold >= 0, every text within max_input_bytes.
absl::Status ValidatePredict(const loracle::v1::PredictRequest& request,
                             const InferenceService::Options& options);

// One Predict, whatever the transport (gRPC here, REST in rest_service.cc): validates, tokenises,
// acquires the adapter (reloading an evicted one), enqueues on the batcher; `finish` is called
// exactly once, with `response` filled when OK, on this thread (an early error) or on a batch or
// registry load thread. `request`, `response` and `backend` must stay valid until then;
// `cancelled` is polled by the batcher (may be empty); `deadline` InfiniteFuture() = none.
void StartPredict(const InferenceService::Options& options, const InferenceBackend& backend,
                  calibration::FeedbackStore* feedback, const loracle::v1::PredictRequest& request,
                  loracle::v1::PredictResponse* response, absl::Time deadline,
                  std::function<bool()> cancelled, std::function<void(absl::Status)> finish);

// One Feedback call, whatever the transport: records each item in `feedback` (null:
// UNIMPLEMENTED) and fills `response`. A single item's failure is the call's status; a batch's
// failures are per item (FeedbackResult.code) and the call is OK.
absl::Status RecordFeedback(const InferenceService::Options& options,
                            calibration::FeedbackStore* feedback,
                            const loracle::v1::FeedbackRequest& request,
                            loracle::v1::FeedbackResponse* response);

}  // namespace loracle::rpc

#endif  // LORACLE_SERVER_RPC_INFERENCE_SERVICE_H_
