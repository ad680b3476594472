#include "server/calibration/feedback_store.h"

#include <algorithm>
#include <cmath>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "server/calibration/conformal.h"

namespace loracle::calibration {

int CalibrationSums::BinOf(double confidence) {
  return std::clamp(static_cast<int>(std::ceil(confidence * kBins)) - 1, 0, kBins - 1);
}

CalibrationSums::Outcome CalibrationSums::Of(const std::vector<float>& probs, int true_class) {
  Outcome o;
  const size_t pred =
      static_cast<size_t>(std::max_element(probs.begin(), probs.end()) - probs.begin());
  o.confidence = probs[pred];
  o.correct = static_cast<int>(pred) == true_class;
  o.nll = -std::log(std::max(static_cast<double>(probs[static_cast<size_t>(true_class)]), 1e-12));
  for (size_t k = 0; k < probs.size(); ++k) {
    const double d = probs[k] - (static_cast<int>(k) == true_class ? 1.0 : 0.0);
    o.brier += d * d;
  }
  return o;
}

void CalibrationSums::Add(const Outcome& o) {
  ++count;
  correct += o.correct;
  nll += o.nll;
  brier += o.brier;
  const int b = BinOf(o.confidence);
  ++bin_count[b];
  bin_confidence[b] += o.confidence;
  bin_correct[b] += o.correct;
}

CalibrationReport CalibrationSums::Report() const {
  CalibrationReport r;
  r.examples = static_cast<size_t>(count);
  if (count == 0) return r;
  const double n = static_cast<double>(count);
  r.accuracy = correct / n;
  r.nll = nll / n;
  r.brier = brier / n;
  for (int b = 0; b < kBins; ++b) {
    if (bin_count[b] == 0) continue;
    const double c = static_cast<double>(bin_count[b]);
    const double gap = std::abs(bin_correct[b] / c - bin_confidence[b] / c);
    r.ece += c / n * gap;
    r.mce = std::max(r.mce, gap);
  }
  return r;
}

absl::StatusOr<std::unique_ptr<FeedbackStore>> FeedbackStore::Create(const Options& options) {
  if (options.capacity < 1 || options.window < 1 || options.ttl <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError(
        "feedback capacity and window must be >= 1 and the ttl positive");
  }
  return std::unique_ptr<FeedbackStore>(new FeedbackStore(options));
}

void FeedbackStore::ExpireLocked(absl::Time now) {
  while (!order_.empty()) {
    auto it = entries_.find(order_.front());
    const bool too_many = static_cast<int64_t>(entries_.size()) > options_.capacity;
    if (it != entries_.end() && !too_many && now - it->second.time <= options_.ttl) break;
    if (it != entries_.end()) entries_.erase(it);
    order_.pop_front();
  }
}

void FeedbackStore::Remember(std::string id, const Served& served, std::vector<float> probs,
                             double confidence, double mutual_information, absl::Time now) {
  absl::MutexLock lock(&mu_);
  Stats& stats = stats_[{served.adapter, served.version}];
  ++stats.predictions;
  if (stats.predictions == 1 && served.reference_examples > 0 &&
      served.reference_confidence != nullptr && served.reference_mutual_information != nullptr) {
    DriftHistogram reference{served.reference_examples, *served.reference_confidence,
                             *served.reference_mutual_information};
    if (reference.valid()) {
      stats.reference = std::move(reference);
      stats.reference_from_validation = true;
    }
  }
  if (stats.predictions == 1 && served.conformal_scores != nullptr &&
      !served.conformal_scores->empty()) {
    for (double target : kOnlineCoverageTargets) {
      stats.set_thresholds.push_back(ConformalThreshold(*served.conformal_scores, target));
    }
  }
  if (!stats.reference.valid()) {  // the first window becomes the reference
    stats.first_confidence.push_back(confidence);
    stats.first_mi.push_back(mutual_information);
    if (static_cast<int64_t>(stats.first_confidence.size()) >= options_.window) {
      stats.reference = HistogramOf(stats.first_confidence, stats.first_mi);
      stats.first_confidence = {};
      stats.first_mi = {};
    }
  } else {
    const int cb = ConfidenceBin(confidence), mb = MutualInformationBin(mutual_information);
    stats.live.emplace_back(static_cast<uint8_t>(cb), static_cast<uint8_t>(mb));
    ++stats.live_confidence[cb];
    ++stats.live_mi[mb];
    if (static_cast<int64_t>(stats.live.size()) > options_.window) {
      --stats.live_confidence[stats.live.front().first];
      --stats.live_mi[stats.live.front().second];
      stats.live.pop_front();
    }
  }
  auto [it, inserted] = entries_.try_emplace(id);
  if (!inserted) return;  // ids are random 128-bit: a repeat is a caller bug, keep the first
  auto& labels = labels_[{served.adapter, served.version}];
  if (labels == nullptr) labels = std::make_shared<const std::vector<std::string>>(*served.labels);
  it->second = Entry{served.adapter, served.version, labels, std::move(probs), now, false};
  order_.push_back(std::move(id));
  ExpireLocked(now);
}

absl::StatusOr<FeedbackStore::Result> FeedbackStore::Record(absl::string_view id,
                                                            absl::string_view true_label,
                                                            absl::Time now) {
  absl::MutexLock lock(&mu_);
  ExpireLocked(now);
  auto it = entries_.find(id);
  if (it == entries_.end()) {
    return absl::NotFoundError(absl::StrCat(
        "no prediction with id '", id, "': unknown, or older than the feedback window (",
        options_.capacity, " predictions, ", absl::FormatDuration(options_.ttl), ")"));
  }
  Entry& e = it->second;
  const std::vector<std::string>& labels = *e.labels;
  const auto label = std::find(labels.begin(), labels.end(), true_label);
  if (label == labels.end()) {
    return absl::InvalidArgumentError(absl::StrCat("adapter ", e.adapter, " has no label '",
                                                   true_label,
                                                   "'; its labels: ", absl::StrJoin(labels, ", ")));
  }
  Stats& stats = stats_[{e.adapter, e.version}];
  if (e.answered) {
    ++stats.duplicates;
    return Result::kDuplicate;
  }
  e.answered = true;
  const CalibrationSums::Outcome o =
      CalibrationSums::Of(e.probs, static_cast<int>(label - labels.begin()));
  stats.since_load.Add(o);
  stats.recent.push_back(o);
  if (static_cast<int64_t>(stats.recent.size()) > options_.window) stats.recent.pop_front();
  if (!stats.set_thresholds.empty()) {
    const std::vector<double> probs(e.probs.begin(), e.probs.end());
    const int y = static_cast<int>(label - labels.begin());
    ++stats.set_labelled;
    for (size_t t = 0; t < stats.set_thresholds.size(); ++t) {
      const std::vector<int> set = PredictionSet(probs, stats.set_thresholds[t]);
      stats.set_covered[t] += std::find(set.begin(), set.end(), y) != set.end();
      stats.set_size[t] += static_cast<int64_t>(set.size());
    }
  }
  return Result::kRecorded;
}

std::vector<FeedbackStore::VersionReport> FeedbackStore::Reports() const {
  absl::MutexLock lock(&mu_);
  std::vector<VersionReport> out;
  for (const auto& [key, stats] : stats_) {
    VersionReport r;
    r.adapter = key.first;
    r.version = key.second;
    r.since_load = stats.since_load;
    for (const CalibrationSums::Outcome& o : stats.recent) r.window.Add(o);
    r.duplicates = stats.duplicates;
    r.predictions = stats.predictions;
    r.reference_from_validation = stats.reference_from_validation;
    r.reference_examples = stats.reference.examples;
    r.live_examples = static_cast<int64_t>(stats.live.size());
    r.has_sets = !stats.set_thresholds.empty();
    r.set_labelled = stats.set_labelled;
    r.set_covered = stats.set_covered;
    r.set_size = stats.set_size;
    r.has_drift = stats.reference.valid() && !stats.live.empty();
    if (r.has_drift) {
      const double n = static_cast<double>(stats.live.size());
      std::vector<double> conf(kConfidenceBins), mi(kMutualInformationBins);
      for (int b = 0; b < kConfidenceBins; ++b) conf[b] = stats.live_confidence[b] / n;
      for (int b = 0; b < kMutualInformationBins; ++b) mi[b] = stats.live_mi[b] / n;
      r.psi_confidence = PopulationStabilityIndex(stats.reference.confidence, conf);
      r.psi_mutual_information = PopulationStabilityIndex(stats.reference.mutual_information, mi);
    }
    out.push_back(std::move(r));
  }
  return out;
}

void FeedbackStore::Retain(
    const std::function<bool(absl::string_view adapter, int64_t version)>& keep) {
  absl::MutexLock lock(&mu_);
  for (auto it = stats_.begin(); it != stats_.end();) {
    it = keep(it->first.first, it->first.second) ? std::next(it) : stats_.erase(it);
  }
  for (auto it = labels_.begin(); it != labels_.end();) {
    it = keep(it->first.first, it->first.second) ? std::next(it) : labels_.erase(it);
  }
  for (auto it = entries_.begin(); it != entries_.end();) {
    auto next = std::next(it);
    if (!keep(it->second.adapter, it->second.version)) entries_.erase(it);
    it = next;
  }
}

int64_t FeedbackStore::remembered() const {
  absl::MutexLock lock(&mu_);
  return static_cast<int64_t>(entries_.size());
}

}  // namespace loracle::calibration
