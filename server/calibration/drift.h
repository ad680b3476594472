#ifndef LORACLE_SERVER_CALIBRATION_DRIFT_H_
#define LORACLE_SERVER_CALIBRATION_DRIFT_H_

// Drift of unlabelled traffic (torch-free): the distribution of each prediction's confidence and
// mutual information, on fixed bins, compared with a reference distribution by the population
// stability index. The reference is the adapter's validation data when it was trained (written by
// the fine-tune job into loracle.json), else the first window of live traffic.
//
//   PSI = sum_i (a_i - e_i) * ln(a_i / e_i)   a, e: live and reference fractions per bin, each
//                                              floored at 1e-4 so that empty bins stay finite
// Rules of thumb: < 0.1 stable, 0.1-0.25 moderate shift, > 0.25 a large shift.

#include <cstdint>
#include <vector>

namespace loracle::calibration {

// Confidence: the 15 reliability bins, (b/15, (b+1)/15].
inline constexpr int kConfidenceBins = 15;
int ConfidenceBin(double confidence);
// Mutual information (nats): upper edges 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7,
// then one open bin: 11 bins. K = 1 predictions (MI exactly 0) all fall in the first.
inline constexpr int kMutualInformationBins = 11;
int MutualInformationBin(double mutual_information);

struct DriftHistogram {
  int64_t examples = 0;
  std::vector<double> confidence;          // fractions, kConfidenceBins of them
  std::vector<double> mutual_information;  // fractions, kMutualInformationBins of them
  bool valid() const {
    return examples > 0 && confidence.size() == kConfidenceBins &&
           mutual_information.size() == kMutualInformationBins;
  }
};

// The histogram of paired per-prediction values (equal lengths).
DriftHistogram HistogramOf(const std::vector<double>& confidence,
                           const std::vector<double>& mutual_information);

// PSI of `actual` against `expected` (fractions over the same bins; equal lengths).
double PopulationStabilityIndex(const std::vector<double>& expected,
                                const std::vector<double>& actual);

}  // namespace loracle::calibration

#endif  // LORACLE_SERVER_CALIBRATION_DRIFT_H_
