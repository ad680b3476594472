#ifndef LORACLE_SERVER_RPC_REST_SERVICE_H_
#define LORACLE_SERVER_RPC_REST_SERVICE_H_

// Inference over HTTP/JSON in the shape of the Open Inference Protocol (KServe v2), a thin
// adapter over the same use-case as gRPC: serving::Predictor (validation, limits, tokenizer,
// registry, batcher) and its RecordFeedback, the same role tokens (Authorization: Bearer), statuses
// mapped to HTTP codes.
//
//   GET  /v2/health/live                 200 while the process runs
//   GET  /v2/health/ready                200 once the model is loaded (503 before and from
//                                        shutdown on)
//   GET  /v2/models/{adapter}            metadata: versions, inputs, outputs, labels, members...
//   GET  /v2/models/{adapter}/ready      200 when its served version is READY
//   POST /v2/models/{adapter}/infer      BYTES input "text" (and optional "text_pair") ->
//                                        outputs probabilities [N, C], label, label_index,
//                                        predictive_entropy, expected_entropy,
//                                        mutual_information, confidence, prob_std [N, C],
//                                        abstained, truncated, num_tokens, windows,
//                                        prediction_id; with parameters.coverage,
//                                        prediction_set [N, C] (BOOL: label c in the set)
//   POST /v2/models/{adapter}/feedback   {"items": [{"prediction_id", "true_label"}, ...]}
//
// Handlers block their HTTP worker until the batch thread answers (bounded by the request's
// timeout). Thread-safe; no pointer is owned, all outlive the service.

#include <functional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "server/http/http_server.h"
#include "server/rpc/engine.h"
#include "server/rpc/unary_call.h"
#include "server/serving/predictor.h"

namespace loracle::rpc {

class TokenAuth;

// The HTTP status for a canonical status: INVALID_ARGUMENT, FAILED_PRECONDITION, OUT_OF_RANGE
// 400; UNAUTHENTICATED 401; PERMISSION_DENIED 403; NOT_FOUND 404; ALREADY_EXISTS, ABORTED 409;
// RESOURCE_EXHAUSTED 429; CANCELLED 499; UNIMPLEMENTED 501; UNAVAILABLE 503; DEADLINE_EXCEEDED
// 504; the rest 500.
int HttpStatusFor(absl::StatusCode code);

class RestService {
 public:
  struct Options {
    serving::Predictor::Limits limits;  // the same limits as gRPC
    // An infer request's deadline unless its "parameters" carry "timeout_ms".
    absl::Duration default_timeout = absl::Seconds(30);
  };
  // `ready`: whether the server is SERVING (model loaded, not shutting down). `feedback`,
  // `auth`, `metrics` may be null (no feedback kept: 501; open; unrecorded).
  RestService(const Options& options, const Published<const serving::Predictor>* predictor,
              calibration::FeedbackStore* feedback, const TokenAuth* auth,
              metrics::Metrics* metrics, std::function<bool()> ready);

  std::vector<http::Route> Routes();

 private:
  http::Response Infer(const http::Request& request, const std::string& adapter);
  http::Response Feedback(const http::Request& request, const std::string& adapter);
  http::Response Metadata(const std::string& adapter, bool ready_only);

  const Options options_;
  const Published<const serving::Predictor>* const predictor_;
  calibration::FeedbackStore* const feedback_;
  const TokenAuth* const auth_;
  metrics::MethodSeries* const infer_;
  metrics::MethodSeries* const feedback_calls_;
  metrics::MethodSeries* const metadata_;
  const std::function<bool()> ready_;
};

}  // namespace loracle::rpc

#endif  // LORACLE_SERVER_RPC_REST_SERVICE_H_
