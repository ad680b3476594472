#ifndef LORACLE_SERVER_CALIBRATION_CALIBRATION_REPORT_H_
#define LORACLE_SERVER_CALIBRATION_CALIBRATION_REPORT_H_

// The calibration report (header-only, no dependencies): what calibration.h computes, what an
// adapter's loracle.json keeps of its validation data, and what metrics/ exports as gauges.

#include <cstddef>

namespace loracle::calibration {

struct CalibrationReport {
  size_t examples = 0;  // 0: no report (e.g. an adapter trained elsewhere)
  double accuracy = 0;
  double ece = 0;
  double mce = 0;
  double nll = 0;
  double brier = 0;
};

// Writes `r`'s five metrics into any proto message with those fields (loracle.v1.CalibrationReport,
// loracle.v1.OnlineReport), as float.
template <typename Proto>
void FillProto(const CalibrationReport& r, Proto* out) {
  out->set_accuracy(static_cast<float>(r.accuracy));
  out->set_ece(static_cast<float>(r.ece));
  out->set_mce(static_cast<float>(r.mce));
  out->set_nll(static_cast<float>(r.nll));
  out->set_brier(static_cast<float>(r.brier));
}

}  // namespace loracle::calibration

#endif  // LORACLE_SERVER_CALIBRATION_CALIBRATION_REPORT_H_
