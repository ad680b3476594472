#include "server/training/job_queue.h"

#include <google/protobuf/util/json_util.h>

#include <algorithm>
#include <cstdio>
#include <utility>

#include "absl/random/random.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "server/metrics/metrics.h"
#include "server/util/file_util.h"
#include "server/util/log.h"

namespace loracle::training {
namespace {

using loracle::v1::Job;
using loracle::v1::JobState;

int64_t NowMs() { return absl::ToUnixMillis(absl::Now()); }

// Sortable by creation: "job-<unix ms, 13 digits>-<4 hex>".
std::string NewJobId() {
  thread_local absl::BitGen gen;
  return absl::StrFormat("job-%013d-%04x", NowMs(), absl::Uniform<uint32_t>(gen, 0, 0x10000));
}

}  // namespace

JobQueue::Summary JobQueue::Summarize() const {
  Summary s;
  for (loracle::v1::JobState state :
       {loracle::v1::JOB_STATE_QUEUED, loracle::v1::JOB_STATE_RUNNING,
        loracle::v1::JOB_STATE_SUCCEEDED, loracle::v1::JOB_STATE_FAILED,
        loracle::v1::JOB_STATE_CANCELLED}) {
    s.by_state[state] = 0;
  }
  absl::MutexLock lock(&mu_);
  for (const auto& [id, record] : jobs_) {
    ++s.by_state[record.job.state()];
    if (record.job.state() == loracle::v1::JOB_STATE_RUNNING) {
      s.running_examples_per_s += record.job.examples_per_s();
    }
  }
  return s;
}

bool JobEnded(JobState state) {
  return state == loracle::v1::JOB_STATE_SUCCEEDED || state == loracle::v1::JOB_STATE_FAILED ||
         state == loracle::v1::JOB_STATE_CANCELLED;
}

class JobQueue::Context final : public JobContext {
 public:
  Context(JobQueue* queue, std::string id) : queue_(queue), id_(std::move(id)) {}
  bool Cancelled() const override {
    absl::MutexLock lock(&queue_->mu_);
    return queue_->jobs_.at(id_).cancel_requested;
  }
  void Update(const std::function<void(Job&)>& edit, bool persist) override {
    Job copy;
    {
      absl::MutexLock lock(&queue_->mu_);
      Job& job = queue_->jobs_.at(id_).job;
      edit(job);
      job.set_updated_unix_ms(NowMs());
      copy = job;
    }
    if (persist) queue_->Persist(copy);
    queue_->Notify(copy);
  }

 private:
  JobQueue* const queue_;
  const std::string id_;
};

absl::StatusOr<std::unique_ptr<JobQueue>> JobQueue::Create(const Options& options) {
  if (options.jobs_dir.empty()) return absl::InvalidArgumentError("jobs_dir is required");
  if (options.workers < 0 || options.max_queued < 1) {
    return absl::InvalidArgumentError("workers must be >= 0 and max_queued >= 1");
  }
  if (options.workers > 0 && !options.runner) {
    return absl::InvalidArgumentError("a JobQueue with workers needs a runner");
  }
  if (absl::Status s = util::MakeDirs(options.jobs_dir); !s.ok()) return s;
  std::unique_ptr<JobQueue> q(new JobQueue(options));
  if (absl::Status s = q->Recover(); !s.ok()) return s;
  for (int i = 0; i < options.workers; ++i) {
    q->threads_.emplace_back([p = q.get()] { p->WorkerLoop(); });
  }
  return q;
}

JobQueue::~JobQueue() { Shutdown(); }

absl::Status JobQueue::Recover() {
  absl::StatusOr<std::vector<std::string>> entries = util::ListDir(options_.jobs_dir);
  if (!entries.ok()) return entries.status();
  std::vector<Job> restarted;
  absl::MutexLock lock(&mu_);
  for (const std::string& id : *entries) {  // sorted: oldest first
    if (!absl::StartsWith(id, "job-")) continue;
    absl::StatusOr<std::string> text = util::ReadFileToString(JobDir(id) + "/job.json");
    Job job;
    if (!text.ok() || !google::protobuf::util::JsonStringToMessage(*text, &job).ok()) {
      LORACLE_LOG(WARNING, "skipping unreadable job %s in %s", id.c_str(),
                  options_.jobs_dir.c_str());
      continue;
    }
    if (job.state() == loracle::v1::JOB_STATE_RUNNING) {
      job.set_state(loracle::v1::JOB_STATE_FAILED);
      job.set_error("server restarted during training");
      job.set_error_code(static_cast<int32_t>(absl::StatusCode::kAborted));
      RecordEnded(job, job.updated_unix_ms());
      job.set_updated_unix_ms(NowMs());
      restarted.push_back(job);
    } else if (job.state() == loracle::v1::JOB_STATE_QUEUED) {
      queue_.push_back(id);
    }
    jobs_[id].job = std::move(job);
  }
  for (const Job& job : restarted) Persist(job);
  return absl::OkStatus();
}

absl::StatusOr<Job> JobQueue::Submit(const loracle::v1::SubmitRequest& spec) {
  Job job;
  job.set_id(NewJobId());
  job.set_adapter(spec.adapter());
  job.set_state(loracle::v1::JOB_STATE_QUEUED);
  job.set_created_unix_ms(NowMs());
  job.set_updated_unix_ms(job.created_unix_ms());
  {
    absl::MutexLock lock(&mu_);
    if (stopping_) return absl::UnavailableError("the job queue is shutting down");
    if (static_cast<int>(queue_.size()) >= options_.max_queued) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "the training queue is full (", queue_.size(), " jobs waiting, --max_queued_jobs=",
          options_.max_queued, "); retry when a job has finished"));
    }
  }
  // Written before the job is visible, so a crash never leaves a job without its spec.
  const std::string dir = JobDir(job.id());
  std::string bytes;
  spec.SerializeToString(&bytes);
  absl::Status written = util::MakeDirs(dir);
  if (written.ok()) written = util::WriteFileAtomically(dir + "/spec.binpb", bytes);
  if (written.ok()) Persist(job);
  if (!written.ok()) {
    util::RemoveTree(dir).IgnoreError();
    return absl::InternalError(
        absl::StrCat("cannot store the job under ", dir, ": ", written.message()));
  }
  absl::MutexLock lock(&mu_);
  if (stopping_) return absl::UnavailableError("the job queue is shutting down");
  jobs_[job.id()].job = job;
  queue_.push_back(job.id());
  return job;
}

absl::StatusOr<Job> JobQueue::Get(const std::string& id) const {
  absl::MutexLock lock(&mu_);
  auto it = jobs_.find(id);
  if (it == jobs_.end()) return absl::NotFoundError(absl::StrCat("job \"", id, "\" not found"));
  return it->second.job;
}

absl::StatusOr<std::vector<Job>> JobQueue::List(int page_size, const std::string& page_token,
                                                std::string* next_page_token) const {
  if (page_size <= 0) page_size = 50;
  absl::MutexLock lock(&mu_);
  auto it = jobs_.rbegin();
  if (!page_token.empty()) {
    if (jobs_.count(page_token) == 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("page_token \"", page_token, "\" names no job"));
    }
    it = std::make_reverse_iterator(jobs_.find(page_token));  // the jobs older than the token
  }
  std::vector<Job> out;
  for (; it != jobs_.rend() && static_cast<int>(out.size()) < page_size; ++it) {
    out.push_back(it->second.job);
  }
  next_page_token->clear();
  if (it != jobs_.rend() && !out.empty()) *next_page_token = out.back().id();
  return out;
}

absl::StatusOr<Job> JobQueue::Cancel(const std::string& id) {
  Job copy;
  bool changed = false;
  {
    absl::MutexLock lock(&mu_);
    auto it = jobs_.find(id);
    if (it == jobs_.end()) return absl::NotFoundError(absl::StrCat("job \"", id, "\" not found"));
    Record& r = it->second;
    if (r.job.state() == loracle::v1::JOB_STATE_QUEUED) {
      queue_.erase(std::remove(queue_.begin(), queue_.end(), id), queue_.end());
      r.job.set_state(loracle::v1::JOB_STATE_CANCELLED);
      r.job.set_error("cancelled before it started");
      r.job.set_error_code(static_cast<int32_t>(absl::StatusCode::kCancelled));
      r.job.set_updated_unix_ms(NowMs());
      changed = true;
    } else if (r.job.state() == loracle::v1::JOB_STATE_RUNNING) {
      r.cancel_requested = true;  // the runner stops at its next step
    }
    copy = r.job;
  }
  if (changed) {
    Persist(copy);
    Notify(copy);
  }
  return copy;
}

absl::StatusOr<int64_t> JobQueue::Subscribe(const std::string& id, Watcher watcher) {
  absl::MutexLock notify(&notify_mu_);  // deliveries stay in order (see Notify)
  Job copy;
  int64_t token;
  {
    absl::MutexLock lock(&mu_);
    auto it = jobs_.find(id);
    if (it == jobs_.end()) return absl::NotFoundError(absl::StrCat("job \"", id, "\" not found"));
    copy = it->second.job;
    token = next_token_++;
    if (!JobEnded(copy.state())) watchers_[token] = {id, watcher};
  }
  watcher(copy);
  return token;
}

void JobQueue::Unsubscribe(int64_t token) {
  absl::MutexLock lock(&mu_);
  watchers_.erase(token);
}

void JobQueue::Notify(const Job& changed) {
  // One delivery at a time, each of the job's state as it is now, so a watcher never sees an
  // older state after a newer one.
  absl::MutexLock notify(&notify_mu_);
  Job current;
  std::vector<Watcher> targets;
  {
    absl::MutexLock lock(&mu_);
    auto job = jobs_.find(changed.id());
    if (job == jobs_.end()) return;
    current = job->second.job;
    for (auto it = watchers_.begin(); it != watchers_.end();) {
      if (it->second.first == current.id()) {
        targets.push_back(it->second.second);
        if (JobEnded(current.state())) {
          it = watchers_.erase(it);
          continue;
        }
      }
      ++it;
    }
  }
  for (const Watcher& w : targets) w(current);
}

void JobQueue::RecordEnded(const Job& job, int64_t end_unix_ms) const {
  if (options_.metrics == nullptr || !JobEnded(job.state()) || job.started_unix_ms() <= 0) return;
  options_.metrics->RecordJobEnded(
      loracle::v1::JobState_Name(job.state()).substr(10),  // drop "JOB_STATE_"
      static_cast<double>(std::max<int64_t>(0, end_unix_ms - job.started_unix_ms())) / 1000.0);
}

void JobQueue::Persist(const Job& job) const {
  std::string json;
  google::protobuf::util::JsonPrintOptions o;
  o.add_whitespace = true;
  o.preserve_proto_field_names = true;
  absl::Status s;
  if (!google::protobuf::util::MessageToJsonString(job, &json, o).ok()) {
    s = absl::InternalError("cannot encode the job as JSON");
  } else {
    s = util::WriteFileAtomically(JobDir(job.id()) + "/job.json", json);
  }
  if (!s.ok()) {
    LORACLE_LOG(ERROR, "cannot persist job %s: %s", job.id().c_str(), s.ToString().c_str());
  }
}

void JobQueue::WorkerLoop() {
  for (;;) {
    std::string id;
    Job running;
    {
      absl::MutexLock lock(&mu_, absl::Condition(this, &JobQueue::HasWork));
      if (stopping_) return;
      id = queue_.front();
      queue_.pop_front();
      Record& r = jobs_.at(id);
      r.cancel_requested = false;
      r.job.set_state(loracle::v1::JOB_STATE_RUNNING);
      r.job.set_updated_unix_ms(NowMs());
      r.job.set_started_unix_ms(r.job.updated_unix_ms());
      running = r.job;
    }
    Persist(running);
    Notify(running);

    absl::StatusOr<JobOutcome> outcome;
    loracle::v1::SubmitRequest spec;
    absl::StatusOr<std::string> bytes = util::ReadFileToString(JobDir(id) + "/spec.binpb");
    if (!bytes.ok()) {
      outcome = bytes.status();
    } else if (!spec.ParseFromString(*bytes)) {
      outcome = absl::DataLossError(absl::StrCat(JobDir(id), "/spec.binpb is corrupt"));
    } else {
      Context context(this, id);
      outcome = options_.runner(spec, context);
    }

    Job done;
    {
      absl::MutexLock lock(&mu_);
      Record& r = jobs_.at(id);
      Job& job = r.job;
      if (!outcome.ok() && r.cancel_requested && stopping_) {
        job.set_state(loracle::v1::JOB_STATE_QUEUED);  // interrupted by shutdown: runs again
        job.set_step(0);
      } else if (outcome.ok()) {
        job.set_state(loracle::v1::JOB_STATE_SUCCEEDED);
        job.set_published_version(outcome->published_version);
        *job.mutable_report() = outcome->report;
        job.set_eta_s(0);
      } else if (r.cancel_requested && absl::IsCancelled(outcome.status())) {
        job.set_state(loracle::v1::JOB_STATE_CANCELLED);
        job.set_error("cancelled while running; nothing was published");
        job.set_error_code(static_cast<int32_t>(absl::StatusCode::kCancelled));
      } else {
        job.set_state(loracle::v1::JOB_STATE_FAILED);
        job.set_error(std::string(outcome.status().message()));
        job.set_error_code(static_cast<int32_t>(outcome.status().code()));
      }
      job.set_updated_unix_ms(NowMs());
      done = job;
    }
    Persist(done);
    RecordEnded(done, done.updated_unix_ms());
    Notify(done);
  }
}

void JobQueue::Shutdown() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
    for (auto& [id, r] : jobs_) {
      if (r.job.state() == loracle::v1::JOB_STATE_RUNNING) r.cancel_requested = true;
    }
  }
  for (std::thread& t : threads_) t.join();
  threads_.clear();
}

}  // namespace loracle::training
