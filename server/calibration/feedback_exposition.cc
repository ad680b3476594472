#include "server/calibration/feedback_exposition.h"

#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace loracle::calibration {
namespace {

using prometheus::ClientMetric;
using prometheus::MetricFamily;
using prometheus::MetricType;

MetricFamily Family(const std::string& name, const std::string& help, MetricType type) {
  MetricFamily f;
  f.name = name;
  f.help = help;
  f.type = type;
  return f;
}

ClientMetric::Label L(const std::string& name, const std::string& value) {
  ClientMetric::Label l;
  l.name = name;
  l.value = value;
  return l;
}

void AddGauge(MetricFamily& f, std::vector<ClientMetric::Label> labels, double value) {
  ClientMetric m;
  m.label = std::move(labels);
  m.gauge.value = value;
  f.metric.push_back(std::move(m));
}

void AddCounter(MetricFamily& f, std::vector<ClientMetric::Label> labels, double value) {
  ClientMetric m;
  m.label = std::move(labels);
  m.counter.value = value;
  f.metric.push_back(std::move(m));
}

}  // namespace

std::vector<MetricFamily> FeedbackFamilies(const std::vector<FeedbackStore::VersionReport>& reports,
                                           int64_t remembered) {
  MetricFamily total =
      Family("loracle_feedback_total", "Predictions labelled through Feedback, by adapter version",
             MetricType::Counter);
  MetricFamily dups =
      Family("loracle_feedback_duplicates_total",
             "Second feedbacks on a prediction (ignored), by adapter version", MetricType::Counter);
  MetricFamily labelled =
      Family("loracle_online_labelled", "Labelled predictions the online metrics cover, by window",
             MetricType::Gauge);
  MetricFamily accuracy =
      Family("loracle_online_accuracy", "Accuracy on labelled live predictions", MetricType::Gauge);
  MetricFamily ece = Family("loracle_online_ece",
                            "Expected calibration error (15 equal-width bins) on labelled live "
                            "predictions",
                            MetricType::Gauge);
  MetricFamily mce =
      Family("loracle_online_mce", "Maximum calibration error (15 bins)", MetricType::Gauge);
  MetricFamily brier = Family("loracle_online_brier", "Multiclass Brier score", MetricType::Gauge);
  MetricFamily nll = Family("loracle_online_nll",
                            "Negative log-likelihood of the true labels (nats)", MetricType::Gauge);
  MetricFamily bin_count = Family("loracle_online_bin_predictions",
                                  "Reliability diagram: labelled predictions per confidence bin "
                                  "(bin = upper edge)",
                                  MetricType::Gauge);
  MetricFamily bin_conf =
      Family("loracle_online_bin_confidence",
             "Reliability diagram: mean confidence per non-empty bin", MetricType::Gauge);
  MetricFamily bin_acc =
      Family("loracle_online_bin_accuracy", "Reliability diagram: accuracy per non-empty bin",
             MetricType::Gauge);
  for (const FeedbackStore::VersionReport& r : reports) {
    const std::string version = absl::StrCat(r.version);
    AddCounter(total, {L("adapter", r.adapter), L("version", version)},
               static_cast<double>(r.since_load.count));
    AddCounter(dups, {L("adapter", r.adapter), L("version", version)},
               static_cast<double>(r.duplicates));
    for (const auto& [window, sums] :
         {std::pair<const char*, const CalibrationSums*>{"since_load", &r.since_load},
          std::pair<const char*, const CalibrationSums*>{"recent", &r.window}}) {
      const std::vector<ClientMetric::Label> labels = {L("adapter", r.adapter),
                                                       L("version", version), L("window", window)};
      AddGauge(labelled, labels, static_cast<double>(sums->count));
      if (sums->count == 0) continue;
      const CalibrationReport rep = sums->Report();
      AddGauge(accuracy, labels, rep.accuracy);
      AddGauge(ece, labels, rep.ece);
      AddGauge(mce, labels, rep.mce);
      AddGauge(brier, labels, rep.brier);
      AddGauge(nll, labels, rep.nll);
      for (int b = 0; b < CalibrationSums::kBins; ++b) {
        std::vector<ClientMetric::Label> bl = labels;
        bl.push_back(
            L("bin", absl::StrFormat("%.4g", static_cast<double>(b + 1) / CalibrationSums::kBins)));
        const double c = static_cast<double>(sums->bin_count[b]);
        AddGauge(bin_count, bl, c);
        if (c == 0) continue;
        AddGauge(bin_conf, bl, sums->bin_confidence[b] / c);
        AddGauge(bin_acc, bl, sums->bin_correct[b] / c);
      }
    }
  }
  MetricFamily set_coverage =
      Family("loracle_online_set_coverage",
             "Share of labelled live predictions whose conformal set at `target` coverage held the "
             "true label, since the version loaded (adapters with conformal scores)",
             MetricType::Gauge);
  MetricFamily set_target = Family("loracle_online_set_target",
                                   "The coverage a conformal set promises, as a number (for alert "
                                   "arithmetic against loracle_online_set_coverage)",
                                   MetricType::Gauge);
  MetricFamily set_labelled =
      Family("loracle_online_set_labelled",
             "Labelled live predictions behind loracle_online_set_coverage", MetricType::Gauge);
  MetricFamily set_size =
      Family("loracle_online_set_size", "Mean conformal set size of labelled live predictions",
             MetricType::Gauge);
  for (const FeedbackStore::VersionReport& r : reports) {
    if (!r.has_sets) continue;
    const std::string version = absl::StrCat(r.version);
    for (size_t t = 0; t < kOnlineCoverageTargets.size(); ++t) {
      const std::vector<ClientMetric::Label> labels = {
          L("adapter", r.adapter), L("version", version),
          L("target", absl::StrFormat("%.2f", kOnlineCoverageTargets[t]))};
      AddGauge(set_target, labels, kOnlineCoverageTargets[t]);
      AddGauge(set_labelled, labels, static_cast<double>(r.set_labelled));
      if (r.set_labelled == 0) continue;
      const double n = static_cast<double>(r.set_labelled);
      AddGauge(set_coverage, labels, static_cast<double>(r.set_covered[t]) / n);
      AddGauge(set_size, labels, static_cast<double>(r.set_size[t]) / n);
    }
  }
  MetricFamily psi = Family("loracle_drift_psi",
                            "Population stability index of the latest --feedback_window "
                            "predictions' confidence or mutual information against the reference "
                            "(validation data, else the first window); > 0.25 is a large shift",
                            MetricType::Gauge);
  MetricFamily reference = Family("loracle_drift_reference_examples",
                                  "Examples behind the drift reference, by source (validation or "
                                  "first_window)",
                                  MetricType::Gauge);
  MetricFamily served = Family("loracle_feedback_predictions_total",
                               "Predictions remembered for feedback and drift, by adapter version",
                               MetricType::Counter);
  for (const FeedbackStore::VersionReport& r : reports) {
    const std::string version = absl::StrCat(r.version);
    AddCounter(served, {L("adapter", r.adapter), L("version", version)},
               static_cast<double>(r.predictions));
    if (!r.has_drift) continue;
    AddGauge(psi, {L("adapter", r.adapter), L("version", version), L("signal", "confidence")},
             r.psi_confidence);
    AddGauge(psi,
             {L("adapter", r.adapter), L("version", version), L("signal", "mutual_information")},
             r.psi_mutual_information);
    AddGauge(reference,
             {L("adapter", r.adapter), L("version", version),
              L("source", r.reference_from_validation ? "validation" : "first_window")},
             static_cast<double>(r.reference_examples));
  }
  MetricFamily waiting = Family("loracle_feedback_remembered",
                                "Predictions remembered for feedback (bounded by "
                                "--feedback_capacity and --feedback_ttl_s)",
                                MetricType::Gauge);
  AddGauge(waiting, {}, static_cast<double>(remembered));
  return {total,    dups,      labelled,  accuracy, ece,          mce,        brier,
          nll,      bin_count, bin_conf,  bin_acc,  set_coverage, set_target, set_labelled,
          set_size, psi,       reference, served,   waiting};
}

}  // namespace loracle::calibration
