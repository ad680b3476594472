#ifndef LORACLE_SERVER_SERVING_ENSEMBLE_RUNNER_H_
#define LORACLE_SERVER_SERVING_ENSEMBLE_RUNNER_H_

// Runs batches on the base model: every request expands to inputs x members x samples rows, all
// rows of a batch go through ONE forward (rows of the same adapter member are contiguous and
// share its LoRA deltas), then each input's K probability vectors are summarised
// (uncertainty.h). The header is torch-free; the forward runs under c10::InferenceMode on the
// calling thread.

#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "server/serving/inference_request.h"

namespace loracle::model {
struct BaseModel;
}

namespace loracle::metrics {
class Metrics;
}

namespace loracle::serving {

class EnsembleRunner {
 public:
  struct Options {
    const model::BaseModel* base = nullptr;  // required; not owned, outlives the runner
    int cores = 0;                           // cores a forward uses; 0 = all
    // Splits a batch's rows across the cores (threads.blas of them), each part a forward on its
    // own thread with one BLAS thread; a batch too small to split (under kMinTokensPerPart
    // tokens per part) runs one forward with `cores` BLAS threads. Measured 15-35% more
    // throughput than one forward with all cores in each GEMM (tests/bench/README.md).
    bool parallel_rows = true;
    metrics::Metrics* metrics = nullptr;  // optional, not owned
  };
  // INVALID_ARGUMENT without a base model.
  static absl::StatusOr<std::unique_ptr<EnsembleRunner>> Create(const Options& options);
  ~EnsembleRunner();

  // Runs `batch` on the calling thread and calls each request's `done` there. Requests are split
  // by length bucket (the longest input, rounded up to a power of two, at least 16 tokens): one
  // forward per bucket, so padding costs at most 2x.
  // Thread-safe: several batch threads may call Run at once. Their forwards run one at a time
  // (each uses all `cores`, and sets the process-wide BLAS thread count for its shape:
  // model/cpu_runtime.h), while building inputs and summarising results overlap.
  void Run(std::vector<std::unique_ptr<InferenceRequest>> batch) ABSL_LOCKS_EXCLUDED(forward_mu_);

  // The bucket `request` runs in (exposed for tests).
  static int LengthBucket(const InferenceRequest& request);
  // How many row parts a forward of `rows` x `seq` tokens runs in on `cores` cores (exposed for
  // tests): 1 without parallel_rows, else as many as give each part kMinTokensPerPart tokens and
  // at least a row, at most `cores`.
  static constexpr int64_t kMinTokensPerPart = 256;
  static int RowParts(int64_t rows, int64_t seq, int cores, bool parallel_rows);

 private:
  EnsembleRunner() = default;
  absl::StatusOr<std::vector<InferenceResult>> Forward(
      const std::vector<std::unique_ptr<InferenceRequest>>& batch);

  Options options_;
  // Held for the forward itself: the BLAS thread count it sets is process-wide.
  absl::Mutex forward_mu_;
};

}  // namespace loracle::serving

#endif  // LORACLE_SERVER_SERVING_ENSEMBLE_RUNNER_H_
