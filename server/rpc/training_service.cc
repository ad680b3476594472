#include "server/rpc/training_service.h"

#include <sys/stat.h>

#include <algorithm>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "server/adapters/adapter_config.h"
#include "server/rpc/auth.h"
#include "server/rpc/status_util.h"
#include "server/rpc/unary_call.h"
#include "server/training/dataset.h"
#include "server/training/job_queue.h"

namespace loracle::rpc {
namespace {

using loracle::v1::Job;

absl::Status NoQueue() {
  return absl::UnavailableError(
      "this server does not run training jobs (started with --training_workers=0, or the model "
      "is still loading)");
}

// Answers a Watch with `status` at once.
class Refuse final : public grpc::ServerWriteReactor<Job> {
 public:
  Refuse(metrics::MethodSeries* series, const absl::Status& status) {
    const grpc::Status s = ToGrpcStatus(status);
    RecordCall(series, absl::Now(), s);
    Finish(s);
  }
  void OnDone() override { delete this; }
};

absl::Status ShuttingDown() {
  return absl::UnavailableError(
      "the server is shutting down; watch the job again once it is back (jobs persist)");
}

}  // namespace

class WatchReactor;

// The service's handle on a live stream: `reactor` is null once the stream is done.
struct WatchSink {
  absl::Mutex mu;
  WatchReactor* reactor ABSL_GUARDED_BY(mu) = nullptr;
};

// Streams a job: the state at once, then every change (coalesced to the latest while a write is
// in flight), then OK after the write of an ended state. Deletes itself in OnDone.
class WatchReactor final : public grpc::ServerWriteReactor<Job> {
 public:
  // `sink` is this stream's handle, registered with the service by the caller.
  WatchReactor(training::JobQueue* jobs, const std::string& id, metrics::MethodSeries* metrics,
               std::shared_ptr<WatchSink> sink)
      : jobs_(jobs), metrics_(metrics), start_(absl::Now()), sink_(std::move(sink)) {
    {
      absl::MutexLock lock(&sink_->mu);
      sink_->reactor = this;
    }
    absl::StatusOr<int64_t> token = jobs_->Subscribe(id, [handle = sink_](const Job& job) {
      absl::MutexLock lock(&handle->mu);
      if (handle->reactor != nullptr) handle->reactor->OnJob(job);
    });
    if (!token.ok()) {
      FinishWith(ToGrpcStatus(token.status()));
      return;
    }
    absl::MutexLock lock(&mu_);
    token_ = *token;
  }

  void OnWriteDone(bool ok) override {
    absl::MutexLock lock(&mu_);
    writing_ = false;
    if (!ok) {  // the client went away
      FinishLocked(grpc::Status(grpc::StatusCode::CANCELLED, "the client stopped watching"));
      return;
    }
    WriteNextLocked();
  }

  void OnCancel() override {
    absl::MutexLock lock(&mu_);
    FinishLocked(grpc::Status(grpc::StatusCode::CANCELLED, "the client stopped watching"));
  }

  void OnDone() override {
    {
      absl::MutexLock lock(&sink_->mu);  // waits for a delivery in progress
      sink_->reactor = nullptr;
    }
    int64_t token;
    {
      absl::MutexLock lock(&mu_);
      token = token_;
    }
    if (token != 0) jobs_->Unsubscribe(token);
    delete this;
  }

  // Called with the sink's mutex held (the reactor is alive).
  void OnJob(const Job& job) {
    absl::MutexLock lock(&mu_);
    pending_ = job;
    if (!writing_) WriteNextLocked();
  }

  void WriteNextLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (finished_) return;
    if (!pending_.has_value()) {
      if (ended_) FinishLocked(grpc::Status::OK);
      return;
    }
    buffer_ = *std::move(pending_);
    pending_.reset();
    ended_ = training::JobEnded(buffer_.state());
    writing_ = true;
    StartWrite(&buffer_);
  }

  void FinishLocked(const grpc::Status& status) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (finished_) return;
    finished_ = true;
    RecordCall(metrics_, start_, status);
    Finish(status);
  }
  void FinishWith(const grpc::Status& status) {
    absl::MutexLock lock(&mu_);
    FinishLocked(status);
  }

 private:
  training::JobQueue* const jobs_;
  metrics::MethodSeries* const metrics_;
  const absl::Time start_;
  const std::shared_ptr<WatchSink> sink_;
  absl::Mutex mu_;
  int64_t token_ ABSL_GUARDED_BY(mu_) = 0;
  std::optional<Job> pending_ ABSL_GUARDED_BY(mu_);
  Job buffer_ ABSL_GUARDED_BY(mu_);  // the message being written
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool ended_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
};

namespace {

absl::Status OutOfRange(absl::string_view field, double value, absl::string_view range) {
  return absl::InvalidArgumentError(absl::StrCat(field, " must be ", range, ", got ", value));
}

}  // namespace

absl::Status ValidateSubmit(const loracle::v1::SubmitRequest& r,
                            const TrainingService::Options& o) {
  if (absl::Status s = adapters::ValidateAdapterName(r.adapter()); !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("adapter: ", s.message()));
  }
  const bool inline_data = r.examples_size() > 0;
  if (inline_data == !r.data_path().empty()) {
    return absl::InvalidArgumentError(
        "send the training data either inline (examples) or as a server-side file (data_path), "
        "not both and not neither");
  }
  if (r.validation_examples_size() > 0 && !r.validation_path().empty()) {
    return absl::InvalidArgumentError("validation_examples and validation_path are exclusive");
  }
  if (r.examples_size() + r.validation_examples_size() > o.limits.max_examples) {
    return absl::InvalidArgumentError(absl::StrCat(
        "at most ", o.limits.max_examples, " examples per job (--max_examples_per_job); got ",
        r.examples_size() + r.validation_examples_size()));
  }
  for (const std::string& path : {r.data_path(), r.validation_path()}) {
    if (path.empty()) continue;
    absl::StatusOr<std::string> resolved = training::ResolveDataPath(o.data_dir, path);
    if (!resolved.ok()) return resolved.status();
    struct stat st;
    if (::stat(resolved->c_str(), &st) == 0 && st.st_size > o.limits.max_bytes) {
      return absl::InvalidArgumentError(absl::StrCat(path, " is ", st.st_size,
                                                     " bytes; the limit is ", o.limits.max_bytes,
                                                     " per dataset (--max_dataset_bytes)"));
    }
  }
  if (r.ensemble_members() > static_cast<uint32_t>(o.max_members)) {
    return OutOfRange("ensemble_members", r.ensemble_members(),
                      absl::StrCat("in [1, ", o.max_members, "]"));
  }
  if (r.mc_samples() > static_cast<uint32_t>(o.max_mc_samples)) {
    return OutOfRange("mc_samples", r.mc_samples(), absl::StrCat("in [1, ", o.max_mc_samples, "]"));
  }
  if (r.lora().rank() > 256) return OutOfRange("lora.rank", r.lora().rank(), "in [1, 256]");
  if (r.lora().alpha() < 0) return OutOfRange("lora.alpha", r.lora().alpha(), ">= 0");
  const auto& d = r.dropout();
  for (auto [name, v] : {std::pair<const char*, float>{"dropout.rate", d.rate()},
                         {"dropout.dropkey_rate", d.dropkey_rate()},
                         {"dropout.hiddencut_rate", d.hiddencut_rate()}}) {
    if (!(v >= 0 && v < 1)) return OutOfRange(name, v, "in [0, 1)");
  }
  if (!(d.kl_weight() >= 0)) return OutOfRange("dropout.kl_weight", d.kl_weight(), ">= 0");
  if (!(r.learning_rate() >= 0 && r.learning_rate() < 1)) {
    return OutOfRange("learning_rate", r.learning_rate(), "in [0, 1) (0 = the default)");
  }
  if (!(r.validation_split() >= 0 && r.validation_split() < 1)) {
    return OutOfRange("validation_split", r.validation_split(), "in [0, 1)");
  }
  const auto& opt = r.optimizer();
  if (!(opt.warmup_fraction() >= 0 && opt.warmup_fraction() < 1)) {
    return OutOfRange("optimizer.warmup_fraction", opt.warmup_fraction(), "in [0, 1)");
  }
  if (!(opt.weight_decay() >= 0)) {
    return OutOfRange("optimizer.weight_decay", opt.weight_decay(), ">= 0");
  }
  if (!(opt.max_grad_norm() >= 0)) {
    return OutOfRange("optimizer.max_grad_norm", opt.max_grad_norm(), ">= 0");
  }
  if (r.max_length() != 0 && (r.max_length() < 8 || r.max_length() > 4096)) {
    return OutOfRange("max_length", r.max_length(), "in [8, 4096]");
  }
  if (r.max_windows() > static_cast<uint32_t>(adapters::kMaxWindows)) {
    return OutOfRange("max_windows", r.max_windows(),
                      absl::StrCat("in [1, ", adapters::kMaxWindows, "] (0 = 1)"));
  }
  if (r.train_windows() > std::max<uint32_t>(r.max_windows(), 1)) {
    return OutOfRange("train_windows", r.train_windows(),
                      absl::StrCat("at most max_windows (", std::max<uint32_t>(r.max_windows(), 1),
                                   "; 0 = max_windows)"));
  }
  if (inline_data) {  // labels of inline data are checked now; a file's when the job runs
    std::vector<training::Example> all;
    for (const auto* list : {&r.examples(), &r.validation_examples()}) {
      for (const loracle::v1::Example& e : *list)
        all.push_back({e.text(), e.text_pair(), e.label()});
    }
    std::vector<std::string> labels(r.labels().begin(), r.labels().end());
    if (absl::Status s = training::CheckDataLimits(all, labels, o.limits); !s.ok()) return s;
    if (absl::StatusOr<std::vector<std::string>> l = training::ResolveLabels(all, labels);
        !l.ok()) {
      return l.status();
    }
  }
  return absl::OkStatus();
}

grpc::ServerUnaryReactor* TrainingService::Submit(grpc::CallbackServerContext* ctx,
                                                  const loracle::v1::SubmitRequest* request,
                                                  loracle::v1::Job* response) {
  const UnaryCall call(ctx, submit_);
  if (!call.Allow(auth_, kTrainRole)) return call.reactor();
  training::JobQueue* jobs = jobs_->get();
  if (jobs == nullptr) return call.Finish(NoQueue());
  if (absl::Status s = ValidateSubmit(*request, options_); !s.ok()) return call.Finish(s);
  absl::StatusOr<Job> job = jobs->Submit(*request);
  if (job.ok()) *response = *std::move(job);
  return call.Finish(job.status());
}

grpc::ServerUnaryReactor* TrainingService::Get(grpc::CallbackServerContext* ctx,
                                               const loracle::v1::GetJobRequest* request,
                                               loracle::v1::Job* response) {
  const UnaryCall call(ctx, get_);
  if (!call.Allow(auth_, kTrainRole)) return call.reactor();
  training::JobQueue* jobs = jobs_->get();
  if (jobs == nullptr) return call.Finish(NoQueue());
  absl::StatusOr<Job> job = jobs->Get(request->id());
  if (job.ok()) *response = *std::move(job);
  return call.Finish(job.status());
}

grpc::ServerWriteReactor<Job>* TrainingService::Watch(grpc::CallbackServerContext* ctx,
                                                      const loracle::v1::GetJobRequest* request) {
  if (auth_ != nullptr) {
    if (absl::Status s = auth_->Check(*ctx, kTrainRole); !s.ok()) return new Refuse(watch_, s);
  }
  training::JobQueue* jobs = jobs_->get();
  if (jobs == nullptr) return new Refuse(watch_, NoQueue());
  auto sink = std::make_shared<WatchSink>();
  {
    absl::MutexLock lock(&watches_mu_);
    if (stopping_) jobs = nullptr;
    watches_.erase(std::remove_if(watches_.begin(), watches_.end(),
                                  [](const std::weak_ptr<WatchSink>& w) { return w.expired(); }),
                   watches_.end());
    if (static_cast<int>(watches_.size()) >= options_.max_watch_streams) {
      sink = nullptr;
    } else {
      watches_.push_back(sink);
    }
  }
  if (jobs == nullptr) return new Refuse(watch_, ShuttingDown());
  if (sink == nullptr) {
    return new Refuse(watch_, absl::ResourceExhaustedError(absl::StrCat(
                                  options_.max_watch_streams,
                                  " Watch streams are open, the limit (--max_watch_streams); "
                                  "close one or poll with Get")));
  }
  return new WatchReactor(jobs, request->id(), watch_, std::move(sink));
}

void TrainingService::StopWatches() {
  std::vector<std::shared_ptr<WatchSink>> live;
  {
    absl::MutexLock lock(&watches_mu_);
    stopping_ = true;
    for (const std::weak_ptr<WatchSink>& w : watches_) {
      if (std::shared_ptr<WatchSink> s = w.lock()) live.push_back(std::move(s));
    }
    watches_.clear();
  }
  for (const std::shared_ptr<WatchSink>& sink : live) {
    absl::MutexLock lock(&sink->mu);
    if (sink->reactor != nullptr) sink->reactor->FinishWith(ToGrpcStatus(ShuttingDown()));
  }
}

grpc::ServerUnaryReactor* TrainingService::Cancel(grpc::CallbackServerContext* ctx,
                                                  const loracle::v1::GetJobRequest* request,
                                                  loracle::v1::Job* response) {
  const UnaryCall call(ctx, cancel_);
  if (!call.Allow(auth_, kTrainRole)) return call.reactor();
  training::JobQueue* jobs = jobs_->get();
  if (jobs == nullptr) return call.Finish(NoQueue());
  absl::StatusOr<Job> job = jobs->Cancel(request->id());
  if (job.ok()) *response = *std::move(job);
  return call.Finish(job.status());
}

grpc::ServerUnaryReactor* TrainingService::List(grpc::CallbackServerContext* ctx,
                                                const loracle::v1::ListJobsRequest* request,
                                                loracle::v1::ListJobsResponse* response) {
  const UnaryCall call(ctx, list_);
  if (!call.Allow(auth_, kTrainRole)) return call.reactor();
  training::JobQueue* jobs = jobs_->get();
  if (jobs == nullptr) return call.Finish(NoQueue());
  std::string next;
  absl::StatusOr<std::vector<Job>> list =
      jobs->List(static_cast<int>(request->page_size()), request->page_token(), &next);
  if (list.ok()) {
    for (Job& j : *list) *response->add_jobs() = std::move(j);
    response->set_next_page_token(next);
  }
  return call.Finish(list.status());
}

}  // namespace loracle::rpc
