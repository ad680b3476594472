#ifndef LORACLE_SERVER_SERVING_UNCERTAINTY_H_
#define LORACLE_SERVER_SERVING_UNCERTAINTY_H_

// Ensemble uncertainty (DESIGN.md): with per-pass probabilities p_k = softmax(logits_k / T) and
// p_bar = mean_k p_k, predictive entropy H[p_bar], expected entropy mean_k H[p_k], mutual
// information H[p_bar] - mean_k H[p_k] (>= 0), per-class population std of p_k, confidence
// max p_bar; and the abstain rule on mutual information. All in nats, computed in double.
// Pure functions; thread-safe.

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"

namespace loracle::serving {

struct UncertaintySummary {
  std::vector<double> mean_probs;
  int argmax = 0;
  double confidence = 0;
  double predictive_entropy = 0;
  double expected_entropy = 0;
  double mutual_information = 0;  // exactly 0 when K == 1
  std::vector<double> prob_std;
};

// Shannon entropy in nats with 0 log 0 = 0.
double Entropy(const std::vector<double>& p);

// softmax(logits / temperature), stable: temperature scaling of one pass. temperature > 0.
std::vector<double> Softmax(const std::vector<double>& logits, double temperature = 1.0);

// mean_k passes[k], summed then divided by K (Summarize's and calibration's ensemble mean).
// `passes` non-empty, of equal lengths.
std::vector<double> MeanProbs(const std::vector<std::vector<double>>& passes);

// Whether to abstain: mutual information above `threshold` (epistemic uncertainty); a threshold
// of 0 (or below) never abstains.
bool Abstains(const UncertaintySummary& summary, double threshold);

// `passes`: K >= 1 probability vectors of equal length C >= 1. INVALID_ARGUMENT otherwise.
absl::StatusOr<UncertaintySummary> Summarize(const std::vector<std::vector<double>>& passes);

}  // namespace loracle::serving

#endif  // LORACLE_SERVER_SERVING_UNCERTAINTY_H_
