#ifndef LORACLE_CLIENT_JOB_VIEW_H_
#define LORACLE_CLIENT_JOB_VIEW_H_

// How the CLI shows fine-tune jobs: a one-line summary, a live progress line, the validation
// report as a table, and a Watch loop that draws them.

#include <grpcpp/grpcpp.h>

#include <memory>
#include <ostream>
#include <string>

#include "loracle/v1/training.grpc.pb.h"

namespace loracle::client {

const char* JobStateName(loracle::v1::JobState state);
// "job-... spam RUNNING step 12/48 epoch 1 loss 0.512 ..." (one line, no newline).
std::string JobLine(const loracle::v1::Job& job);
// The job as indented JSON with the proto's field names.
std::string JobJson(const loracle::v1::Job& job);
// The validation report: one row per member, first member, ensemble, calibrated.
void PrintReport(const loracle::v1::Job& job, std::ostream& out);

// Watches job `id` until it ends, drawing progress on `out`: a redrawn bar when `tty`, else a
// line per state change and per epoch. Returns the final job, or the stream's error.
grpc::Status WatchJob(loracle::v1::Training::Stub& stub, const std::string& id, bool tty,
                      std::ostream& out, loracle::v1::Job* final_job);

}  // namespace loracle::client

#endif  // LORACLE_CLIENT_JOB_VIEW_H_
