#include "client/job_view.h"

#include <google/protobuf/util/json_util.h>

#include <chrono>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace loracle::client {

using loracle::v1::Job;

const char* JobStateName(loracle::v1::JobState state) {
  switch (state) {
    case loracle::v1::JOB_STATE_QUEUED:
      return "QUEUED";
    case loracle::v1::JOB_STATE_RUNNING:
      return "RUNNING";
    case loracle::v1::JOB_STATE_SUCCEEDED:
      return "SUCCEEDED";
    case loracle::v1::JOB_STATE_FAILED:
      return "FAILED";
    case loracle::v1::JOB_STATE_CANCELLED:
      return "CANCELLED";
    default:
      return "UNSPECIFIED";
  }
}

std::string JobLine(const Job& job) {
  std::string line =
      absl::StrFormat("%s  %-16s %-9s", job.id(), job.adapter(), JobStateName(job.state()));
  if (job.total_steps() > 0) {
    absl::StrAppendFormat(&line, " step %u/%u epoch %u loss %.4f", job.step(), job.total_steps(),
                          job.epoch() + 1, job.loss());
  }
  if (job.state() == loracle::v1::JOB_STATE_RUNNING && job.examples_per_s() > 0) {
    absl::StrAppendFormat(&line, " %.1f ex/s ETA %.0fs", job.examples_per_s(), job.eta_s());
  }
  if (job.published_version() > 0) {
    absl::StrAppendFormat(&line, " -> %s v%d", job.adapter(), job.published_version());
  }
  if (!job.error().empty()) {
    absl::StrAppend(
        &line, "  (",
        job.error_code() != 0
            ? absl::StrCat(
                  absl::StatusCodeToString(static_cast<absl::StatusCode>(job.error_code())), ": ")
            : "",
        job.error(), ")");
  }
  return line;
}

std::string JobJson(const Job& job) {
  std::string text;
  google::protobuf::util::JsonPrintOptions o;
  o.add_whitespace = true;
  o.preserve_proto_field_names = true;
  (void)google::protobuf::util::MessageToJsonString(job, &text, o);
  return text;
}

void PrintReport(const Job& job, std::ostream& out) {
  const loracle::v1::ValidationReport& r = job.report();
  if (r.examples() == 0) return;
  out << absl::StrFormat("validation report (%u examples)\n", r.examples());
  out << absl::StrFormat("%-22s %8s %8s %8s %8s %8s\n", "", "accuracy", "NLL", "ECE", "MCE",
                         "Brier");
  auto row = [&out](const std::string& name, const loracle::v1::CalibrationReport& c) {
    out << absl::StrFormat("%-22s %8.4f %8.4f %8.4f %8.4f %8.4f\n", name, c.accuracy(), c.nll(),
                           c.ece(), c.mce(), c.brier());
  };
  for (int m = 0; m < r.members_size(); ++m) row(absl::StrFormat("member %d", m), r.members(m));
  row("single (member 0)", r.single());
  row("ensemble", r.ensemble());
  row(absl::StrFormat("calibrated (T=%.3f)", r.temperature()), r.calibrated());
  if (r.has_best_member_calibrated()) {
    row(absl::StrFormat("best member %u, calib.", r.best_member()), r.best_member_calibrated());
  }
  if (r.ensemble_nll_by_members_size() > 1) {
    out << "calibrated NLL by members kept:";
    for (int k = 0; k < r.ensemble_nll_by_members_size(); ++k) {
      out << absl::StrFormat(" %d: %.4f", k + 1, r.ensemble_nll_by_members(k));
    }
    out << absl::StrFormat(" (kept %u of %u)\n", r.members_kept(), r.members_trained());
  }
  if (!r.error_score().empty()) out << "error_score: " << r.error_score() << "\n";
  for (const loracle::v1::ConformalPoint& c : r.conformal()) {
    out << absl::StrFormat("conformal @%.2f: coverage %.3f, mean set size %.2f\n", c.target(),
                           c.coverage(), c.mean_set_size());
  }
  if (r.has_ood()) {
    out << absl::StrFormat(
        "ood_score: %s, 1 at distance %.3f (the validation %.0f%% quantile), validation mean "
        "%.3f\n",
        r.ood().method(), r.ood().threshold(), 100 * r.ood().quantile(),
        r.ood().validation_mean_score());
  }
}

grpc::Status WatchJob(loracle::v1::Training::Stub& stub, const std::string& id, bool tty,
                      std::ostream& out, Job* final_job) {
  grpc::ClientContext ctx;
  loracle::v1::GetJobRequest req;
  req.set_id(id);
  auto reader = stub.Watch(&ctx, req);
  Job job;
  loracle::v1::JobState last_state = loracle::v1::JOB_STATE_UNSPECIFIED;
  uint32_t last_epoch = 0;
  bool drew = false;
  while (reader->Read(&job)) {
    if (tty) {
      std::string bar;
      if (job.total_steps() > 0) {
        const int width = 24;
        const int done = static_cast<int>(width * job.step() / job.total_steps());
        bar = "[" + std::string(done, '#') + std::string(width - done, '.') + "] ";
      }
      out << "\r\033[K" << bar << JobLine(job) << std::flush;
      drew = true;
    } else if (job.state() != last_state || job.epoch() != last_epoch) {
      out << JobLine(job) << "\n";
    }
    last_state = job.state();
    last_epoch = job.epoch();
    *final_job = job;
  }
  if (drew) out << "\n";
  return reader->Finish();
}

}  // namespace loracle::client
