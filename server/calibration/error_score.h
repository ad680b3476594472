#ifndef LORACLE_SERVER_CALIBRATION_ERROR_SCORE_H_
#define LORACLE_SERVER_CALIBRATION_ERROR_SCORE_H_

// Which uncertainty best flags an adapter's wrong answers, chosen on its validation predictions,
// and selective prediction with a target risk (torch-free; pure).
//
//   candidates  1 - confidence, margin (1 - (p_(1) - p_(2))), predictive entropy, mutual
//               information, the winning class's prob_std: each "higher = more likely wrong"
//   choice      the lowest AURC (area under the risk-coverage curve: answer the lowest scores
//               first; ties count in expectation over their order), 1 - confidence on ties
//   risk        answer inputs whose score is at most the threshold for risk r: of the prefixes of
//               the validation predictions (by score) answering about 5%, 10%, ..., 100% of
//               them, the largest whose Clopper-Pearson upper bound on the error rate, at
//               confidence 1 - delta / 20 (Bonferroni over the 20), is <= r. If validation and
//               live inputs are exchangeable, the answered error rate is <= r with probability
//               >= 1 - delta.

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "server/serving/uncertainty.h"

namespace loracle::calibration {

enum class ErrorScore { kOneMinusConfidence, kMargin, kEntropy, kMutualInformation, kProbStd };
inline constexpr ErrorScore kErrorScores[] = {ErrorScore::kOneMinusConfidence, ErrorScore::kMargin,
                                              ErrorScore::kEntropy, ErrorScore::kMutualInformation,
                                              ErrorScore::kProbStd};

// "one_minus_confidence", "margin", "entropy", "mutual_information", "prob_std".
absl::string_view ErrorScoreName(ErrorScore score);
absl::StatusOr<ErrorScore> ParseErrorScore(absl::string_view name);

// The score of one summarised prediction.
double ErrorScoreOf(ErrorScore score, const serving::UncertaintySummary& summary);

// Area under the risk-coverage curve: mean over k = 1..n of the error rate among the k lowest
// scores (ties in expectation over their order). 0 for no examples.
double Aurc(const std::vector<double>& scores, const std::vector<bool>& wrong);

struct ErrorScoreChoice {
  ErrorScore score = ErrorScore::kOneMinusConfidence;
  std::vector<double> aurc;  // per kErrorScores entry
};
// INVALID_ARGUMENT for sizes that disagree or labels out of range.
absl::StatusOr<ErrorScoreChoice> ChooseErrorScore(
    const std::vector<serving::UncertaintySummary>& predictions, const std::vector<int>& labels);

// The (1 - delta) Clopper-Pearson upper bound on a binomial rate with `errors` in `n` (n >= 1).
double BinomialUpperBound(int64_t errors, int64_t n, double delta);

inline constexpr int kRiskGrid = 20;

struct RiskThreshold {
  double threshold = 0;   // answer inputs whose score is <= this; -infinity: answer none
  double coverage = 0;    // share of validation predictions answered
  double error_rate = 0;  // their error rate
};
// `sorted_scores` ascending, `wrong[i]` for sorted_scores[i]; risk in (0, 1), delta in (0, 1).
RiskThreshold ThresholdForRisk(const std::vector<double>& sorted_scores,
                               const std::vector<bool>& wrong, double risk, double delta);

}  // namespace loracle::calibration

#endif  // LORACLE_SERVER_CALIBRATION_ERROR_SCORE_H_
