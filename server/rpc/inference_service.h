#ifndef LORACLE_SERVER_RPC_INFERENCE_SERVICE_H_
#define LORACLE_SERVER_RPC_INFERENCE_SERVICE_H_

#include <cstdint>
#include <functional>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "loracle/v1/inference.grpc.pb.h"
#include "server/rpc/engine.h"
#include "server/rpc/unary_call.h"
#include "server/serving/predictor.h"

namespace loracle::metrics {
class Metrics;
}
namespace loracle::calibration {
class FeedbackStore;
}

namespace loracle::rpc {

// Inference.Predict: maps the request onto serving::Predictor on the reactor thread, never
// blocking; the finishing thread (a batch thread, or this one on an early error) copies the reply
// into the response and finishes the call. Inference.Feedback: records true labels in the
// FeedbackStore on the reactor thread. Inference.OnlineCalibration: the store's reports.
// Thread-safe (gRPC calls the handlers concurrently).
class InferenceService final : public loracle::v1::Inference::CallbackService {
 public:
  // No pointer is owned; all outlive the service. `metrics` may be null; without `feedback`,
  // Feedback answers UNIMPLEMENTED; `auth` null = open. Until `predictor` is published (the
  // model is loaded), Predict and OnlineCalibration answer UNAVAILABLE.
  InferenceService(const serving::Predictor::Limits& limits,
                   const Published<const serving::Predictor>* predictor,
                   calibration::FeedbackStore* feedback, const TokenAuth* auth,
                   metrics::Metrics* metrics)
      : limits_(limits),
        predictor_(predictor),
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
  const serving::Predictor::Limits limits_;
  const Published<const serving::Predictor>* const predictor_;
  calibration::FeedbackStore* const feedback_;
  const TokenAuth* const auth_;
  metrics::MethodSeries* const predict_;
  metrics::MethodSeries* const feedback_calls_;
  metrics::MethodSeries* const online_calibration_;
};

// The proto <-> use-case mapping (exposed for tests and fuzzers).
serving::PredictCall ToCall(const loracle::v1::PredictRequest& request);
void ToProto(const serving::PredictReply& reply, loracle::v1::PredictResponse* response);

// One Feedback call: a single item (prediction_id, true_label) or a batch (items), not both.
// A single item's failure is the call's status; a batch's failures are per item
// (FeedbackResult.code) and the call is OK.
absl::Status RecordFeedback(const serving::Predictor::Limits& limits,
                            calibration::FeedbackStore* feedback,
                            const loracle::v1::FeedbackRequest& request,
                            loracle::v1::FeedbackResponse* response);

}  // namespace loracle::rpc

#endif  // LORACLE_SERVER_RPC_INFERENCE_SERVICE_H_
