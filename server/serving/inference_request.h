#ifndef LORACLE_SERVER_SERVING_INFERENCE_REQUEST_H_
#define LORACLE_SERVER_SERVING_INFERENCE_REQUEST_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "server/serving/uncertainty.h"
#include "server/text/tokenizer.h"

namespace loracle::adapters {
struct Adapter;
}

namespace loracle::serving {

// The answer for one input of a request.
struct InputResult {
  UncertaintySummary summary;              // over the K = members x mc_samples passes
  std::vector<std::vector<float>> passes;  // the K probability vectors, member-major
  bool abstained = false;
  // Distance to the adapter's training inputs over its OOD threshold (ServingConfig::ood);
  // 0 when the adapter has no OOD detector.
  double ood_score = 0;
};

struct InferenceResult {
  std::vector<InputResult> inputs;  // one per input (not per window)
};

// One Predict call on its way through the Batcher and EnsembleRunner.
struct InferenceRequest {
  std::shared_ptr<const adapters::Adapter> adapter;  // held until `done` runs
  // The encodings of every input, input-major: input i is read in windows[i] consecutive
  // encodings whose logits are averaged (text::Tokenizer::Windows); empty = one each.
  std::vector<text::Encoding> inputs;
  std::vector<int> windows;
  int members = 1;     // M: the adapter's ensemble members
  int mc_samples = 1;  // N: test-time dropout samples per member
  uint64_t seed = 0;
  // Mutual information above which the runner marks an input abstained; 0 = never. (Adapters
  // with an error score compare that instead, in Predictor; the runner then gets 0.)
  double abstain_threshold = 0;
  absl::Time deadline = absl::InfiniteFuture();
  absl::Time enqueued;  // set by Batcher::Submit
  // True once the caller has gone away; checked before the request runs. May be empty. Must be
  // callable from any thread.
  std::function<bool()> cancelled;
  // Called exactly once, on a batch thread, once the request is accepted by Batcher::Submit
  // (a rejected Submit returns its error and never calls it).
  std::function<void(absl::StatusOr<InferenceResult>)> done;

  size_t num_inputs() const { return windows.empty() ? inputs.size() : windows.size(); }
  // Forward rows: every encoding x K passes.
  int64_t rows() const { return static_cast<int64_t>(inputs.size()) * members * mc_samples; }
};

}  // namespace loracle::serving

#endif  // LORACLE_SERVER_SERVING_INFERENCE_REQUEST_H_
