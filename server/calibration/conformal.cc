#include "server/calibration/conformal.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace loracle::calibration {

absl::StatusOr<std::vector<double>> LacScores(const std::vector<std::vector<double>>& probs,
                                              const std::vector<int>& labels) {
  if (probs.size() != labels.size()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "conformal scores: ", probs.size(), " probability vectors for ", labels.size(), " labels"));
  }
  std::vector<double> scores;
  scores.reserve(probs.size());
  for (size_t i = 0; i < probs.size(); ++i) {
    if (labels[i] < 0 || static_cast<size_t>(labels[i]) >= probs[i].size()) {
      return absl::InvalidArgumentError(absl::StrCat("conformal scores: label ", labels[i],
                                                     " of example ", i, " is out of range"));
    }
    scores.push_back(1.0 - probs[i][static_cast<size_t>(labels[i])]);
  }
  std::sort(scores.begin(), scores.end());
  return scores;
}

double ConformalThreshold(const std::vector<double>& sorted_scores, double coverage) {
  const double n = static_cast<double>(sorted_scores.size());
  const double rank = std::ceil((n + 1) * coverage);  // 1-based
  if (sorted_scores.empty() || rank > n) return std::numeric_limits<double>::infinity();
  return sorted_scores[static_cast<size_t>(std::max(rank, 1.0)) - 1];
}

std::vector<int> PredictionSet(const std::vector<double>& probs, double threshold) {
  std::vector<int> order(probs.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) {
    return probs[static_cast<size_t>(a)] > probs[static_cast<size_t>(b)];
  });
  std::vector<int> out;
  for (int c : order) {
    if (1.0 - probs[static_cast<size_t>(c)] <= threshold) out.push_back(c);
  }
  return out;
}

}  // namespace loracle::calibration
