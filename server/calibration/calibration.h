#ifndef LORACLE_SERVER_CALIBRATION_CALIBRATION_H_
#define LORACLE_SERVER_CALIBRATION_CALIBRATION_H_

// Calibration metrics as DESIGN.md defines them (torch-free):
//   ECE   sum_b |B_b|/n * |acc(B_b) - conf(B_b)| over equal-width confidence bins (0, 1]
//   MCE   max_b |acc(B_b) - conf(B_b)| over non-empty bins
//   Brier mean_i sum_k (p_ik - y_ik)^2   (multiclass)
//   NLL   -mean_i log p_i,y_i            (probabilities already averaged; clamped at 1e-12)
// and temperature scaling: the T > 0 minimising the NLL of softmax(logits / T).

#include <vector>

#include "absl/status/statusor.h"
#include "server/calibration/calibration_report.h"

namespace loracle::calibration {

// `probs`: one probability vector per example (equal lengths); `labels`: the true class of each.
// INVALID_ARGUMENT for empty input, ragged rows, labels out of range, or num_bins < 1.
absl::StatusOr<CalibrationReport> Evaluate(const std::vector<std::vector<double>>& probs,
                                           const std::vector<int>& labels, int num_bins = 15);

// Fits the temperature on validation logits by minimising NLL (golden-section search over log T
// in [0.05, 20]; NLL(T) is unimodal in log T). INVALID_ARGUMENT as Evaluate.
absl::StatusOr<double> FitTemperature(const std::vector<std::vector<double>>& logits,
                                      const std::vector<int>& labels);

// Probabilities of an ensemble: per example, mean_k softmax(passes[k] / temperature), as serving
// computes them (temperature scales every pass before averaging).
std::vector<std::vector<double>> EnsembleProbs(
    const std::vector<std::vector<std::vector<double>>>& passes, double temperature);

// The T minimising the NLL of EnsembleProbs(passes, T) against `labels` (same search as
// FitTemperature). INVALID_ARGUMENT for empty or ragged input or labels out of range.
absl::StatusOr<double> FitEnsembleTemperature(
    const std::vector<std::vector<std::vector<double>>>& passes, const std::vector<int>& labels);

}  // namespace loracle::calibration

#endif  // LORACLE_SERVER_CALIBRATION_CALIBRATION_H_
