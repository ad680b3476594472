#ifndef LORACLE_SERVER_CALIBRATION_FEEDBACK_STORE_H_
#define LORACLE_SERVER_CALIBRATION_FEEDBACK_STORE_H_

// Online calibration from feedback (torch-free). The server remembers each prediction it returned
// (id, adapter version, probabilities) for a while; when the true label arrives, the prediction's
// outcome is added to its adapter version's running sums, since the version loaded and over a
// sliding window of the latest labelled predictions. The sums give exactly what Evaluate
// (calibration.h) computes offline from the same probabilities and labels, plus the per-bin
// counts, mean confidences and accuracies of a reliability diagram.
//
// For adapters with conformal calibration scores (conformal.h), each labelled prediction also
// counts whether its split-conformal set at each of kOnlineCoverageTargets held the true label:
// online set coverage, equal to what PredictionSet computes offline from the same probabilities.
//
// It also measures drift before any feedback arrives: per adapter version, the confidence and
// mutual information of the latest `window` predictions against a reference distribution
// (drift.h): the adapter's validation data when it brings one, else its first `window`
// predictions.
//
// Memory is bounded under any traffic: at most `capacity` remembered predictions (the oldest are
// forgotten first), none older than `ttl`, and `window` outcomes and predictions per adapter
// version.
//
// Thread-safety: every method may be called from any thread; each takes one short lock.

#include <array>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "server/calibration/calibration.h"
#include "server/calibration/drift.h"

namespace loracle::calibration {

// The coverages whose sets Feedback checks online (as the fine-tune report does offline).
inline constexpr std::array<double, 3> kOnlineCoverageTargets = {0.8, 0.9, 0.95};

// Running sums over labelled predictions. Bins are calibration.h's: 15 equal-width confidence
// bins over (0, 1], bin b holding confidences in (b/15, (b+1)/15].
struct CalibrationSums {
  static constexpr int kBins = 15;
  struct Outcome {
    double confidence = 0;  // max probability
    bool correct = false;   // argmax == true label
    double nll = 0;         // -log p[true], p clamped at 1e-12
    double brier = 0;       // sum_k (p_k - y_k)^2
  };
  // The outcome of one prediction given its true class.
  static Outcome Of(const std::vector<float>& probs, int true_class);
  static int BinOf(double confidence);

  int64_t count = 0;
  double correct = 0, nll = 0, brier = 0;
  std::array<int64_t, kBins> bin_count{};
  std::array<double, kBins> bin_confidence{};  // sums
  std::array<double, kBins> bin_correct{};     // sums

  void Add(const Outcome& o);
  // Evaluate's report of the outcomes added (zeros when none).
  CalibrationReport Report() const;
};

class FeedbackStore {
 public:
  struct Options {
    int64_t capacity = 100000;             // remembered predictions
    absl::Duration ttl = absl::Hours(24);  // feedback later than this is NOT_FOUND
    int64_t window = 1000;                 // outcomes in the sliding window, per adapter version
  };
  // INVALID_ARGUMENT for a capacity or window < 1 or a ttl <= 0.
  static absl::StatusOr<std::unique_ptr<FeedbackStore>> Create(const Options& options);

  // What served a prediction. The pointees are copied once per version.
  struct Served {
    std::string adapter;
    int64_t version = 0;
    const std::vector<std::string>* labels = nullptr;
    // The validation distribution (drift.h's bins); examples 0 or other sizes: use the first
    // window instead.
    int64_t reference_examples = 0;
    const std::vector<double>* reference_confidence = nullptr;
    const std::vector<double>* reference_mutual_information = nullptr;
    // The adapter's conformal scores, sorted; null or empty: no online set coverage.
    const std::vector<double>* conformal_scores = nullptr;
  };
  // Remembers a returned prediction (for feedback, and its confidence and mutual information for
  // drift); forgets the oldest beyond capacity or ttl.
  void Remember(std::string id, const Served& served, std::vector<float> probs, double confidence,
                double mutual_information, absl::Time now) ABSL_LOCKS_EXCLUDED(mu_);

  enum class Result { kRecorded, kDuplicate };
  // Adds the prediction's outcome to its version's sums. NOT_FOUND for an unknown or expired id;
  // INVALID_ARGUMENT (listing the adapter's labels) for a label it does not have; kDuplicate,
  // counting nothing, for a second feedback on the same prediction.
  absl::StatusOr<Result> Record(absl::string_view id, absl::string_view true_label, absl::Time now)
      ABSL_LOCKS_EXCLUDED(mu_);

  struct VersionReport {
    std::string adapter;
    int64_t version = 0;
    CalibrationSums since_load;
    CalibrationSums window;  // summed afresh from the window's outcomes: no drift
    int64_t duplicates = 0;
    int64_t predictions = 0;  // remembered since load
    // Drift of the latest `window` predictions against the reference; has_drift is false until
    // there is a reference (the first window fills up) and a live prediction.
    bool has_drift = false;
    bool reference_from_validation = false;
    int64_t reference_examples = 0;
    int64_t live_examples = 0;
    double psi_confidence = 0;
    double psi_mutual_information = 0;
    // Online set coverage since load, per kOnlineCoverageTargets entry (has_sets: the adapter has
    // conformal scores): labelled predictions, how many sets held the true label, set sizes summed.
    bool has_sets = false;
    int64_t set_labelled = 0;
    std::array<int64_t, kOnlineCoverageTargets.size()> set_covered{};
    std::array<int64_t, kOnlineCoverageTargets.size()> set_size{};
  };
  // Every adapter version with predictions, ordered by (adapter, version).
  std::vector<VersionReport> Reports() const ABSL_LOCKS_EXCLUDED(mu_);

  // Drops the sums of versions `keep` returns false for (unloaded ones); their remembered
  // predictions then answer NOT_FOUND.
  void Retain(const std::function<bool(absl::string_view adapter, int64_t version)>& keep)
      ABSL_LOCKS_EXCLUDED(mu_);

  int64_t remembered() const ABSL_LOCKS_EXCLUDED(mu_);

 private:
  explicit FeedbackStore(const Options& options) : options_(options) {}
  struct Entry {
    std::string adapter;
    int64_t version = 0;
    std::shared_ptr<const std::vector<std::string>> labels;
    std::vector<float> probs;
    absl::Time time;
    bool answered = false;
  };
  struct Stats {
    CalibrationSums since_load;
    std::deque<CalibrationSums::Outcome> recent;  // the window's outcomes, oldest first
    int64_t duplicates = 0;
    int64_t predictions = 0;
    DriftHistogram reference;  // valid() once known
    bool reference_from_validation = false;
    std::vector<double> first_confidence, first_mi;  // the first window, without one
    std::deque<std::pair<uint8_t, uint8_t>> live;    // (confidence, MI) bins, oldest first
    std::array<int64_t, kConfidenceBins> live_confidence{};
    std::array<int64_t, kMutualInformationBins> live_mi{};
    std::vector<double> set_thresholds;  // per kOnlineCoverageTargets; empty: no sets
    int64_t set_labelled = 0;
    std::array<int64_t, kOnlineCoverageTargets.size()> set_covered{};
    std::array<int64_t, kOnlineCoverageTargets.size()> set_size{};
  };
  using VersionKey = std::pair<std::string, int64_t>;
  void ExpireLocked(absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const Options options_;
  mutable absl::Mutex mu_;
  absl::flat_hash_map<std::string, Entry> entries_ ABSL_GUARDED_BY(mu_);
  std::deque<std::string> order_ ABSL_GUARDED_BY(mu_);  // ids, oldest first
  std::map<VersionKey, Stats> stats_ ABSL_GUARDED_BY(mu_);
  std::map<VersionKey, std::shared_ptr<const std::vector<std::string>>> labels_
      ABSL_GUARDED_BY(mu_);
};

}  // namespace loracle::calibration

#endif  // LORACLE_SERVER_CALIBRATION_FEEDBACK_STORE_H_
