#include "server/calibration/drift.h"

#include <algorithm>
#include <array>
#include <cmath>

namespace loracle::calibration {
namespace {

constexpr std::array<double, kMutualInformationBins - 1> kMiEdges = {
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7};

}  // namespace

int ConfidenceBin(double confidence) {
  return std::clamp(static_cast<int>(std::ceil(confidence * kConfidenceBins)) - 1, 0,
                    kConfidenceBins - 1);
}

int MutualInformationBin(double mutual_information) {
  return static_cast<int>(std::lower_bound(kMiEdges.begin(), kMiEdges.end(), mutual_information) -
                          kMiEdges.begin());
}

DriftHistogram HistogramOf(const std::vector<double>& confidence,
                           const std::vector<double>& mutual_information) {
  DriftHistogram h;
  h.examples = static_cast<int64_t>(std::min(confidence.size(), mutual_information.size()));
  h.confidence.assign(kConfidenceBins, 0.0);
  h.mutual_information.assign(kMutualInformationBins, 0.0);
  if (h.examples == 0) return h;
  for (int64_t i = 0; i < h.examples; ++i) {  // counts first: fractions exactly count / n
    h.confidence[ConfidenceBin(confidence[i])] += 1;
    h.mutual_information[MutualInformationBin(mutual_information[i])] += 1;
  }
  const double n = static_cast<double>(h.examples);
  for (double& f : h.confidence) f /= n;
  for (double& f : h.mutual_information) f /= n;
  return h;
}

double PopulationStabilityIndex(const std::vector<double>& expected,
                                const std::vector<double>& actual) {
  constexpr double kFloor = 1e-4;
  double psi = 0;
  for (size_t i = 0; i < std::min(expected.size(), actual.size()); ++i) {
    const double e = std::max(expected[i], kFloor), a = std::max(actual[i], kFloor);
    psi += (a - e) * std::log(a / e);
  }
  return psi;
}

}  // namespace loracle::calibration
