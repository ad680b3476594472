#ifndef LORACLE_SERVER_CALIBRATION_CONFORMAL_H_
#define LORACLE_SERVER_CALIBRATION_CONFORMAL_H_

// Split conformal prediction sets (Vovk; Angelopoulos & Bates 2021) with the LAC score
// s(x, y) = 1 - p_y, where p is what the adapter serves (the ensemble-averaged, temperature-scaled
// probabilities). With n calibration scores and target coverage c, the threshold q is the
// ceil((n + 1) c)-th smallest score, and the set is {y : 1 - p_y <= q}. If calibration and test
// examples are exchangeable, P(y in set) >= c, marginally over both (not per input, not per
// class); it holds for c <= n / (n + 1), and above it the set is every label. Torch-free; pure.

#include <vector>

#include "absl/status/statusor.h"

namespace loracle::calibration {

// The LAC scores 1 - probs[i][labels[i]], sorted ascending. INVALID_ARGUMENT for ragged input or
// labels out of range.
absl::StatusOr<std::vector<double>> LacScores(const std::vector<std::vector<double>>& probs,
                                              const std::vector<int>& labels);

// The threshold for `coverage` in (0, 1) over `sorted_scores` (ascending): the
// ceil((n + 1) coverage)-th smallest; +infinity (every label) when that exceeds n or there are
// no scores.
double ConformalThreshold(const std::vector<double>& sorted_scores, double coverage);

// Class indices with 1 - probs[c] <= threshold, most probable first. Never empty for a threshold
// >= 1 - max(probs); may be empty below it (the model is confident no label fits).
std::vector<int> PredictionSet(const std::vector<double>& probs, double threshold);

}  // namespace loracle::calibration

#endif  // LORACLE_SERVER_CALIBRATION_CONFORMAL_H_
