#include "server/serving/uncertainty.h"

#include <algorithm>
#include <cmath>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace loracle::serving {

double Entropy(const std::vector<double>& p) {
  double h = 0;
  for (double v : p) {
    if (v > 0) h -= v * std::log(v);
  }
  return h;
}

std::vector<double> Softmax(const std::vector<double>& logits, double temperature) {
  std::vector<double> out(logits.size());
  if (logits.empty()) return out;
  double max = -INFINITY;
  for (double l : logits) max = std::max(max, l / temperature);
  double sum = 0;
  for (size_t i = 0; i < logits.size(); ++i) {
    out[i] = std::exp(logits[i] / temperature - max);
    sum += out[i];
  }
  for (double& v : out) v /= sum;
  return out;
}

std::vector<double> MeanProbs(const std::vector<std::vector<double>>& passes) {
  std::vector<double> mean(passes.empty() ? 0 : passes[0].size(), 0.0);
  for (const auto& p : passes)
    for (size_t i = 0; i < mean.size(); ++i) mean[i] += p[i];
  for (double& v : mean) v /= static_cast<double>(passes.size());
  return mean;
}

bool Abstains(const UncertaintySummary& summary, double threshold) {
  return threshold > 0 && summary.mutual_information > threshold;
}

absl::StatusOr<UncertaintySummary> Summarize(const std::vector<std::vector<double>>& passes) {
  if (passes.empty()) return absl::InvalidArgumentError("no probability vectors to summarise");
  const size_t c = passes[0].size();
  if (c == 0) return absl::InvalidArgumentError("empty probability vector");
  for (const auto& p : passes) {
    if (p.size() != c) {
      return absl::InvalidArgumentError(
          absl::StrCat("probability vectors differ in length: ", p.size(), " vs ", c));
    }
  }
  const double k = static_cast<double>(passes.size());
  UncertaintySummary s;
  s.mean_probs = MeanProbs(passes);
  s.prob_std.assign(c, 0.0);
  for (const auto& p : passes)
    for (size_t i = 0; i < c; ++i)
      s.prob_std[i] += (p[i] - s.mean_probs[i]) * (p[i] - s.mean_probs[i]);
  for (double& v : s.prob_std) v = std::sqrt(v / k);
  s.argmax = static_cast<int>(std::max_element(s.mean_probs.begin(), s.mean_probs.end()) -
                              s.mean_probs.begin());
  s.confidence = s.mean_probs[static_cast<size_t>(s.argmax)];
  s.predictive_entropy = Entropy(s.mean_probs);
  for (const auto& p : passes) s.expected_entropy += Entropy(p);
  s.expected_entropy /= k;
  // Jensen: H[mean] >= mean H; clamp the rounding error so MI is never negative.
  s.mutual_information =
      passes.size() == 1 ? 0.0 : std::max(0.0, s.predictive_entropy - s.expected_entropy);
  return s;
}

}  // namespace loracle::serving
