#include "server/calibration/calibration.h"

#include <algorithm>
#include <cmath>
#include <functional>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "server/serving/uncertainty.h"

namespace loracle::calibration {
namespace {

absl::Status Validate(const std::vector<std::vector<double>>& rows,
                      const std::vector<int>& labels) {
  if (rows.empty()) return absl::InvalidArgumentError("no examples to evaluate");
  if (rows.size() != labels.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat(rows.size(), " rows but ", labels.size(), " labels"));
  }
  const size_t c = rows[0].size();
  if (c == 0) return absl::InvalidArgumentError("rows have no classes");
  for (size_t i = 0; i < rows.size(); ++i) {
    if (rows[i].size() != c) {
      return absl::InvalidArgumentError(
          absl::StrCat("row ", i, " has ", rows[i].size(), " classes, not ", c));
    }
    if (labels[i] < 0 || static_cast<size_t>(labels[i]) >= c) {
      return absl::InvalidArgumentError(
          absl::StrCat("label ", labels[i], " of example ", i, " is outside [0, ", c, ")"));
    }
  }
  return absl::OkStatus();
}

double MeanNll(const std::vector<std::vector<double>>& logits, const std::vector<int>& labels,
               double t) {
  double nll = 0;
  for (size_t i = 0; i < logits.size(); ++i) {
    const std::vector<double> p = serving::Softmax(logits[i], t);
    nll -= std::log(std::max(p[static_cast<size_t>(labels[i])], 1e-12));
  }
  return nll / static_cast<double>(logits.size());
}

}  // namespace

absl::StatusOr<CalibrationReport> Evaluate(const std::vector<std::vector<double>>& probs,
                                           const std::vector<int>& labels, int num_bins) {
  if (num_bins < 1) return absl::InvalidArgumentError("num_bins must be >= 1");
  if (absl::Status s = Validate(probs, labels); !s.ok()) return s;
  const double n = static_cast<double>(probs.size());
  std::vector<double> bin_count(static_cast<size_t>(num_bins)), bin_correct(bin_count.size()),
      bin_conf(bin_count.size());
  CalibrationReport r;
  r.examples = probs.size();
  for (size_t i = 0; i < probs.size(); ++i) {
    const std::vector<double>& p = probs[i];
    const size_t pred = static_cast<size_t>(std::max_element(p.begin(), p.end()) - p.begin());
    const double conf = p[pred];
    const bool correct = static_cast<int>(pred) == labels[i];
    // Bin b holds confidences in (b/B, (b+1)/B]; a confidence of exactly 0 goes to bin 0.
    int b = static_cast<int>(std::ceil(conf * num_bins)) - 1;
    b = std::clamp(b, 0, num_bins - 1);
    bin_count[b] += 1;
    bin_correct[b] += correct;
    bin_conf[b] += conf;
    r.accuracy += correct;
    r.nll -= std::log(std::max(p[static_cast<size_t>(labels[i])], 1e-12));
    for (size_t k = 0; k < p.size(); ++k) {
      const double y = static_cast<int>(k) == labels[i] ? 1.0 : 0.0;
      r.brier += (p[k] - y) * (p[k] - y);
    }
  }
  for (size_t b = 0; b < bin_count.size(); ++b) {
    if (bin_count[b] == 0) continue;
    const double gap = std::abs(bin_correct[b] / bin_count[b] - bin_conf[b] / bin_count[b]);
    r.ece += bin_count[b] / n * gap;
    r.mce = std::max(r.mce, gap);
  }
  r.accuracy /= n;
  r.nll /= n;
  r.brier /= n;
  return r;
}

namespace {

// The T in [0.05, 20] minimising `nll(T)`: golden-section search over log T (NLL(T) is unimodal
// in log T).
double MinimiseOverLogT(const std::function<double(double)>& nll) {
  double lo = std::log(0.05), hi = std::log(20.0);
  const double phi = (std::sqrt(5.0) - 1) / 2;
  double a = hi - phi * (hi - lo), b = lo + phi * (hi - lo);
  double fa = nll(std::exp(a)), fb = nll(std::exp(b));
  for (int it = 0; it < 80 && hi - lo > 1e-7; ++it) {
    if (fa < fb) {
      hi = b;
      b = a;
      fb = fa;
      a = hi - phi * (hi - lo);
      fa = nll(std::exp(a));
    } else {
      lo = a;
      a = b;
      fa = fb;
      b = lo + phi * (hi - lo);
      fb = nll(std::exp(b));
    }
  }
  return std::exp((lo + hi) / 2);
}

}  // namespace

absl::StatusOr<double> FitTemperature(const std::vector<std::vector<double>>& logits,
                                      const std::vector<int>& labels) {
  if (absl::Status s = Validate(logits, labels); !s.ok()) return s;
  return MinimiseOverLogT([&](double t) { return MeanNll(logits, labels, t); });
}

std::vector<std::vector<double>> EnsembleProbs(
    const std::vector<std::vector<std::vector<double>>>& passes, double temperature) {
  std::vector<std::vector<double>> out;
  out.reserve(passes.size());
  for (const auto& example : passes) {
    std::vector<std::vector<double>> probs;
    probs.reserve(example.size());
    for (const auto& pass : example) probs.push_back(serving::Softmax(pass, temperature));
    out.push_back(serving::MeanProbs(probs));
  }
  return out;
}

absl::StatusOr<double> FitEnsembleTemperature(
    const std::vector<std::vector<std::vector<double>>>& passes, const std::vector<int>& labels) {
  if (passes.empty() || passes.size() != labels.size()) {
    return absl::InvalidArgumentError("one set of passes per label is needed");
  }
  for (size_t i = 0; i < passes.size(); ++i) {
    if (passes[i].empty()) return absl::InvalidArgumentError("an example has no passes");
    if (absl::Status s = Validate(passes[i], std::vector<int>(passes[i].size(), labels[i]));
        !s.ok()) {
      return s;
    }
  }
  auto nll = [&](double t) {
    const std::vector<std::vector<double>> probs = EnsembleProbs(passes, t);
    double total = 0;
    for (size_t i = 0; i < probs.size(); ++i) {
      total -= std::log(std::max(probs[i][static_cast<size_t>(labels[i])], 1e-12));
    }
    return total / static_cast<double>(probs.size());
  };
  return MinimiseOverLogT(nll);
}

}  // namespace loracle::calibration
