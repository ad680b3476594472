#ifndef LORACLE_SERVER_CALIBRATION_FEEDBACK_EXPOSITION_H_
#define LORACLE_SERVER_CALIBRATION_FEEDBACK_EXPOSITION_H_

// The online calibration of every adapter version with feedback, as Prometheus families (built at
// scrape time: a version's series go when it unloads). Labels: adapter, version, and
//   window   "since_load" (every feedback since the version loaded) or "recent" (the latest
//            --feedback_window ones)
//   bin      the upper edge of a 15-bin confidence interval ("0.0667" ... "1")
//
//   loracle_feedback_total{adapter,version}                   labelled predictions (counter)
//   loracle_feedback_duplicates_total{adapter,version}        second feedbacks, ignored
//   loracle_online_labelled{adapter,version,window}           predictions in the window
//   loracle_online_{accuracy,ece,mce,brier,nll}{adapter,version,window}
//   loracle_online_bin_predictions{adapter,version,window,bin}      a reliability diagram: count,
//   loracle_online_bin_confidence{...}, loracle_online_bin_accuracy{...}   means (empty: absent)
//   loracle_feedback_remembered                               predictions awaiting feedback
//   loracle_feedback_predictions_total{adapter,version}       predictions served and remembered
//   loracle_drift_psi{adapter,version,signal}                 drift (drift.h); signal is
//                                                             "confidence" or "mutual_information"
//   loracle_drift_reference_examples{adapter,version,source}  "validation" or "first_window"

#include <prometheus/metric_family.h>

#include <cstdint>
#include <vector>

#include "server/calibration/feedback_store.h"

namespace loracle::calibration {

std::vector<prometheus::MetricFamily> FeedbackFamilies(
    const std::vector<FeedbackStore::VersionReport>& reports, int64_t remembered);

}  // namespace loracle::calibration

#endif  // LORACLE_SERVER_CALIBRATION_FEEDBACK_EXPOSITION_H_
