#include "server/calibration/error_score.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace loracle::calibration {
namespace {

// ln I_x(a, b), the regularised incomplete beta function, by its continued fraction
// (Numerical Recipes' betacf), for a, b > 0 and 0 < x < 1.
double RegularizedBeta(double a, double b, double x) {
  if (x <= 0) return 0;
  if (x >= 1) return 1;
  const double front = std::exp(std::lgamma(a + b) - std::lgamma(a) - std::lgamma(b) +
                                a * std::log(x) + b * std::log1p(-x));
  auto fraction = [](double a, double b, double x) {
    constexpr double kTiny = 1e-300;
    double c = 1, d = 1 - (a + b) * x / (a + 1);
    if (std::abs(d) < kTiny) d = kTiny;
    d = 1 / d;
    double h = d;
    for (int m = 1; m <= 300; ++m) {
      const double m2 = 2.0 * m;
      double aa = m * (b - m) * x / ((a + m2 - 1) * (a + m2));
      d = 1 + aa * d;
      if (std::abs(d) < kTiny) d = kTiny;
      c = 1 + aa / c;
      if (std::abs(c) < kTiny) c = kTiny;
      d = 1 / d;
      h *= d * c;
      aa = -(a + m) * (a + b + m) * x / ((a + m2) * (a + m2 + 1));
      d = 1 + aa * d;
      if (std::abs(d) < kTiny) d = kTiny;
      c = 1 + aa / c;
      if (std::abs(c) < kTiny) c = kTiny;
      d = 1 / d;
      const double del = d * c;
      h *= del;
      if (std::abs(del - 1) < 1e-12) break;
    }
    return h;
  };
  if (x < (a + 1) / (a + b + 2)) return front * fraction(a, b, x) / a;
  return 1 - front * fraction(b, a, 1 - x) / b;
}

}  // namespace

absl::string_view ErrorScoreName(ErrorScore score) {
  switch (score) {
    case ErrorScore::kOneMinusConfidence:
      return "one_minus_confidence";
    case ErrorScore::kMargin:
      return "margin";
    case ErrorScore::kEntropy:
      return "entropy";
    case ErrorScore::kMutualInformation:
      return "mutual_information";
    case ErrorScore::kProbStd:
      return "prob_std";
  }
  return "one_minus_confidence";
}

absl::StatusOr<ErrorScore> ParseErrorScore(absl::string_view name) {
  for (ErrorScore s : kErrorScores) {
    if (ErrorScoreName(s) == name) return s;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown error score \"", name,
                   "\" (one_minus_confidence, margin, entropy, mutual_information, prob_std)"));
}

double ErrorScoreOf(ErrorScore score, const serving::UncertaintySummary& s) {
  switch (score) {
    case ErrorScore::kOneMinusConfidence:
      return 1 - s.confidence;
    case ErrorScore::kMargin: {
      double second = 0;
      for (size_t c = 0; c < s.mean_probs.size(); ++c) {
        if (static_cast<int>(c) != s.argmax) second = std::max(second, s.mean_probs[c]);
      }
      return 1 - (s.confidence - second);
    }
    case ErrorScore::kEntropy:
      return s.predictive_entropy;
    case ErrorScore::kMutualInformation:
      return s.mutual_information;
    case ErrorScore::kProbStd:
      return s.prob_std.empty() ? 0 : s.prob_std[static_cast<size_t>(s.argmax)];
  }
  return 0;
}

double Aurc(const std::vector<double>& scores, const std::vector<bool>& wrong) {
  const size_t n = scores.size();
  if (n == 0) return 0;
  std::vector<size_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return scores[a] < scores[b]; });
  double area = 0, errors_before = 0;
  for (size_t start = 0; start < n;) {
    size_t end = start;
    double block_errors = 0;
    while (end < n && scores[order[end]] == scores[order[start]])
      block_errors += wrong[order[end++]];
    const double rate = block_errors / static_cast<double>(end - start);
    for (size_t k = start; k < end; ++k) {
      area +=
          (errors_before + rate * static_cast<double>(k - start + 1)) / static_cast<double>(k + 1);
    }
    errors_before += block_errors;
    start = end;
  }
  return area / static_cast<double>(n);
}

absl::StatusOr<ErrorScoreChoice> ChooseErrorScore(
    const std::vector<serving::UncertaintySummary>& predictions, const std::vector<int>& labels) {
  if (predictions.size() != labels.size()) {
    return absl::InvalidArgumentError("error score: one label per prediction is needed");
  }
  std::vector<bool> wrong;
  for (size_t i = 0; i < predictions.size(); ++i) {
    if (labels[i] < 0 || static_cast<size_t>(labels[i]) >= predictions[i].mean_probs.size()) {
      return absl::InvalidArgumentError(
          absl::StrCat("error score: label of example ", i, " is out of range"));
    }
    wrong.push_back(predictions[i].argmax != labels[i]);
  }
  ErrorScoreChoice out;
  double best = std::numeric_limits<double>::infinity();
  for (ErrorScore kind : kErrorScores) {
    std::vector<double> scores;
    for (const serving::UncertaintySummary& s : predictions)
      scores.push_back(ErrorScoreOf(kind, s));
    out.aurc.push_back(Aurc(scores, wrong));
    if (out.aurc.back() < best - 1e-12) {
      best = out.aurc.back();
      out.score = kind;
    }
  }
  return out;
}

double BinomialUpperBound(int64_t errors, int64_t n, double delta) {
  if (errors >= n) return 1;
  // The u with P(Bin(n, u) <= errors) = delta, i.e. I_u(errors + 1, n - errors) = 1 - delta.
  const double a = static_cast<double>(errors) + 1, b = static_cast<double>(n - errors);
  double lo = 0, hi = 1;
  for (int i = 0; i < 60; ++i) {
    const double mid = (lo + hi) / 2;
    (RegularizedBeta(a, b, mid) < 1 - delta ? lo : hi) = mid;
  }
  return hi;
}

RiskThreshold ThresholdForRisk(const std::vector<double>& sorted_scores,
                               const std::vector<bool>& wrong, double risk, double delta) {
  RiskThreshold out;
  out.threshold = -std::numeric_limits<double>::infinity();
  const size_t n = sorted_scores.size();
  std::vector<int64_t> errors_upto(n + 1, 0);
  for (size_t i = 0; i < n; ++i) errors_upto[i + 1] = errors_upto[i] + wrong[i];
  // Candidates: the prefixes answering about j / kRiskGrid of the predictions, each cut back to a
  // change of score (a threshold answers every input with its score); Bonferroni over the grid.
  for (int j = kRiskGrid; j >= 1; --j) {
    size_t m = static_cast<size_t>(std::ceil(static_cast<double>(n) * j / kRiskGrid));
    while (m > 0 && m < n && sorted_scores[m] == sorted_scores[m - 1]) --m;
    if (m == 0) continue;
    if (BinomialUpperBound(errors_upto[m], static_cast<int64_t>(m), delta / kRiskGrid) <= risk) {
      out.threshold = sorted_scores[m - 1];
      out.coverage = static_cast<double>(m) / static_cast<double>(n);
      out.error_rate = static_cast<double>(errors_upto[m]) / static_cast<double>(m);
      return out;
    }
  }
  return out;
}

}  // namespace loracle::calibration
