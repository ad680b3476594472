#include "server/calibration/error_score.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <random>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace loracle::calibration {
namespace {

// A fixed generator, so that a job's choice does not depend on the run.
constexpr uint64_t kChoiceSeed = 0x6c6f7261636c6521ULL;

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
  const size_t n = predictions.size();
  std::vector<std::vector<double>> scores;
  ErrorScoreChoice out;
  for (ErrorScore kind : kErrorScores) {
    std::vector<double> s;
    for (const serving::UncertaintySummary& p : predictions) s.push_back(ErrorScoreOf(kind, p));
    out.aurc.push_back(Aurc(s, wrong));
    scores.push_back(std::move(s));
  }
  // Paired bootstrap: the same resampled predictions for every candidate.
  const size_t k = scores.size();
  out.wins.assign(k, 0);
  std::mt19937_64 rng(kChoiceSeed);
  std::uniform_int_distribution<size_t> pick(0, n == 0 ? 0 : n - 1);
  std::vector<double> s(n);
  std::vector<bool> w(n);
  for (int b = 0; n > 0 && b < kChoiceResamples; ++b) {
    std::vector<size_t> idx(n);
    for (size_t& i : idx) i = pick(rng);
    for (size_t i = 0; i < n; ++i) w[i] = wrong[idx[i]];
    std::vector<double> area(k);
    for (size_t c = 0; c < k; ++c) {
      for (size_t i = 0; i < n; ++i) s[i] = scores[c][idx[i]];
      area[c] = Aurc(s, w);
    }
    for (size_t c = 1; c < k; ++c) out.wins[c] += area[c] < area[0] - 1e-12;
  }
  double best = out.aurc[0];
  for (size_t c = 1; c < k; ++c) {
    out.wins[c] /= kChoiceResamples;
    if (out.wins[c] >= kChoiceConfidence && out.aurc[c] < best - 1e-12) {
      best = out.aurc[c];
      out.score = kErrorScores[c];
    }
  }
  return out;
}

RiskThreshold ThresholdForRisk(const std::vector<double>& sorted_scores,
                               const std::vector<bool>& wrong, double risk) {
  RiskThreshold out;
  out.threshold = -std::numeric_limits<double>::infinity();
  const size_t n = sorted_scores.size();
  std::vector<int64_t> errors_upto(n + 1, 0);
  for (size_t i = 0; i < n; ++i) errors_upto[i + 1] = errors_upto[i] + wrong[i];
  // Candidates: every prefix that ends at a change of score (a threshold answers every input with
  // its score); the largest within the risk.
  for (size_t m = n; m >= 1; --m) {
    if (m < n && sorted_scores[m] == sorted_scores[m - 1]) continue;
    const double corrected = static_cast<double>(errors_upto[m] + 1) / static_cast<double>(m + 1);
    if (corrected > risk) continue;
    out.threshold = sorted_scores[m - 1];
    out.coverage = static_cast<double>(m) / static_cast<double>(n);
    out.error_rate = static_cast<double>(errors_upto[m]) / static_cast<double>(m);
    break;
  }
  return out;
}

}  // namespace loracle::calibration
