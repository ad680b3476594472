#ifndef LORACLE_SERVER_SERVING_PREDICTOR_H_
#define LORACLE_SERVER_SERVING_PREDICTOR_H_

// The Predict use-case, whatever the transport (rpc/inference_service.cc maps gRPC onto it,
// rpc/rest_service.cc the Open Inference Protocol's JSON): validate -> tokenise -> acquire the
// adapter (reloading an evicted one) -> cut windows -> submit to the Batcher -> fill the reply,
// remembering each prediction for Feedback and recording the adapter's prediction series.
// Torch-free; thread-safe (every method may be called concurrently).

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace loracle::adapters {
class Registry;
}
namespace loracle::calibration {
class FeedbackStore;
}
namespace loracle::text {
class Tokenizer;
}

namespace loracle::serving {

class Batcher;

// One Predict call.
struct PredictCall {
  std::string adapter;
  std::vector<std::string> inputs;
  std::vector<std::string> text_pairs;      // empty, or one per input
  std::optional<int64_t> mc_samples;        // N; unset = the adapter's default
  uint64_t seed = 0;                        // seeds the test-time dropout masks
  std::optional<double> abstain_threshold;  // unset = the adapter's default
  std::optional<double> coverage;  // a conformal prediction set per input (calibration/conformal.h)
  // Abstain to keep the answered error rate <= this (calibration/error_score.h).
  std::optional<double> abstain_risk;
  bool return_members = false;
};

struct MemberOutput {
  int member = 0;  // ensemble member, 0..M-1
  int sample = 0;  // test-time dropout sample, 0..N-1
  std::vector<float> probs;
};

// The answer for one input.
struct Prediction {
  std::string prediction_id;  // Feedback names it
  int label_index = 0;
  std::string label;
  std::vector<float> probs;  // ensemble-averaged
  float predictive_entropy = 0, expected_entropy = 0, mutual_information = 0, confidence = 0;
  float error_score = 0;  // the adapter's chosen error score; 0 without one
  float ood_score = 0;    // distance to the adapter's training inputs / threshold; 0 without one
  std::vector<float> prob_std;
  bool abstained = false;
  bool truncated = false;  // the text did not fit the adapter's windows
  int64_t num_tokens = 0;
  int64_t windows = 1;
  std::vector<MemberOutput> members;        // with return_members: the M x N passes, member-major
  std::vector<std::string> prediction_set;  // with coverage: most probable first
};

struct PredictReply {
  std::string adapter;
  int64_t version = 0;  // the adapter version that served every prediction
  std::vector<std::string> labels;
  int members = 1;
  int mc_samples = 1;
  std::vector<Prediction> predictions;  // one per input
};

struct FeedbackItem {
  std::string prediction_id;
  std::string true_label;
};

struct FeedbackOutcome {
  std::string prediction_id;
  absl::Status status;     // NOT_FOUND (unknown or expired id), INVALID_ARGUMENT (label), ...
  bool duplicate = false;  // recorded before; ignored
};

class Predictor {
 public:
  // Request limits (the server's --max_* flags).
  struct Limits {
    int max_inputs_per_request = 256;
    int max_mc_samples = 32;            // bound on PredictCall.mc_samples
    int max_passes_per_request = 256;   // members x mc_samples: forward passes per input
    int64_t max_input_bytes = 1 << 20;  // per text
    int max_feedback_items = 10000;     // per Feedback call
  };
  struct Options {
    Limits limits;
    adapters::Registry* registry = nullptr;          // required
    const text::Tokenizer* tokenizer = nullptr;      // required
    int max_length = 512;                            // tokens per window, special tokens included
    Batcher* batcher = nullptr;                      // required
    calibration::FeedbackStore* feedback = nullptr;  // optional: predictions are not remembered
  };
  // INVALID_ARGUMENT when a required part is missing. Nothing is owned; all outlive the Predictor.
  static absl::StatusOr<std::unique_ptr<Predictor>> Create(const Options& options);

  // The call's problems a person can fix, checked before any lookup: adapter named,
  // 1..max_inputs_per_request inputs, text_pairs empty or matching, mc_samples in
  // [1, max_mc_samples], abstain_threshold >= 0, coverage and abstain_risk in (0, 1), every text
  // within max_input_bytes. After the adapter is acquired: FAILED_PRECONDITION, naming it, for
  // coverage (abstain_risk) with an adapter that has no conformal (error) scores.
  static absl::Status Validate(const PredictCall& call, const Limits& limits);

  // Runs one call; `done` is called exactly once, on this thread (an early error) or on a batch
  // or registry load thread. `cancelled` is polled by the Batcher (may be empty); `deadline`
  // InfiniteFuture() = none.
  void Predict(PredictCall call, absl::Time deadline, std::function<bool()> cancelled,
               std::function<void(absl::StatusOr<PredictReply>)> done) const;

  // Records true labels for earlier predictions in `feedback` (null: UNIMPLEMENTED). Each item's
  // outcome in order; INVALID_ARGUMENT for more than max_feedback_items items.
  static absl::StatusOr<std::vector<FeedbackOutcome>> RecordFeedback(
      calibration::FeedbackStore* feedback, const Limits& limits,
      const std::vector<FeedbackItem>& items);

  const Options& options() const { return options_; }

 private:
  explicit Predictor(const Options& options) : options_(options) {}
  const Options options_;
};

}  // namespace loracle::serving

#endif  // LORACLE_SERVER_SERVING_PREDICTOR_H_
