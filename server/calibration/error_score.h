#ifndef LORACLE_SERVER_CALIBRATION_ERROR_SCORE_H_
#define LORACLE_SERVER_CALIBRATION_ERROR_SCORE_H_

// Which uncertainty best flags an adapter's wrong answers, chosen on its validation predictions,
// and selective prediction with a target risk (torch-free; pure).
//
//   candidates  1 - confidence, margin (1 - (p_(1) - p_(2))), predictive entropy, mutual
//               information, the winning class's prob_std: each "higher = more likely wrong"
//   choice      1 - confidence, unless another candidate ranks the validation errors better
//               (lower AURC: answer the lowest scores first; ties count in expectation over
//               their order) in at least kChoiceConfidence of kChoiceResamples paired bootstrap
//               resamples of the validation predictions; then the lowest AURC of those that do.
//               A split with few errors cannot tell the candidates apart, and keeps the default.
//   risk        answer inputs whose score is at most the threshold for risk r: the largest prefix
//               of the validation predictions (by score, ending at a change of score) whose
//               corrected error rate (errors + 1) / (answered + 1) is <= r. The +1 counts the one
//               new input (conformal risk control's finite-sample correction): for a threshold
//               fixed in advance and inputs exchangeable with the validation split, the expected
//               error rate among answered inputs is then <= r; choosing the threshold on the same
//               split makes that approximate (ErrorScoreTest measures it over many draws). Not a
//               high-probability bound: one validation draw can land above r.

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
  // Per kErrorScores entry: the share of bootstrap resamples where it ranked the errors better
  // than 1 - confidence (0 for 1 - confidence itself).
  std::vector<double> wins;
};
// INVALID_ARGUMENT for sizes that disagree or labels out of range.
absl::StatusOr<ErrorScoreChoice> ChooseErrorScore(
    const std::vector<serving::UncertaintySummary>& predictions, const std::vector<int>& labels);

inline constexpr int kChoiceResamples = 500;
inline constexpr double kChoiceConfidence = 0.95;

struct RiskThreshold {
  double threshold = 0;   // answer inputs whose score is <= this; -infinity: answer none
  double coverage = 0;    // share of validation predictions answered
  double error_rate = 0;  // their error rate
};
// `sorted_scores` ascending, `wrong[i]` for sorted_scores[i]; risk in (0, 1).
RiskThreshold ThresholdForRisk(const std::vector<double>& sorted_scores,
                               const std::vector<bool>& wrong, double risk);

}  // namespace loracle::calibration

#endif  // LORACLE_SERVER_CALIBRATION_ERROR_SCORE_H_
