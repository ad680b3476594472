#ifndef LORACLE_SERVER_TRAINING_JOB_QUEUE_H_
#define LORACLE_SERVER_TRAINING_JOB_QUEUE_H_

// Fine-tune jobs: a bounded queue run by background workers, persisted under a jobs directory
// (torch-free; what a job does is the injected Runner's business).
//
//   QUEUED ──▶ RUNNING ──▶ SUCCEEDED | FAILED | CANCELLED        (QUEUED ──▶ CANCELLED)
//
// Persistence: <jobs_dir>/<id>/spec.binpb (the SubmitRequest, written once) and job.json (the Job,
// rewritten atomically on every state change and validation report; progress between is kept in
// memory). On start, QUEUED jobs are queued again in their order; a job that was RUNNING when the
// process died comes back FAILED "server restarted during training" (it does not resume from a
// checkpoint). A graceful shutdown cancels the running jobs and puts them back as QUEUED, so they
// run again after the restart.
//
// Thread-safety: every public method may be called from any thread. Subscribers' callbacks run on
// the thread that changed the job, without the queue's lock held.

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "loracle/v1/training.pb.h"

namespace loracle::metrics {
class Metrics;
}

namespace loracle::training {

// What a running job sees: whether it was cancelled, and a way to publish its progress.
class JobContext {
 public:
  virtual ~JobContext() = default;
  virtual bool Cancelled() const = 0;
  // Applies `edit` to the job (progress fields) and notifies watchers; `persist` also writes it
  // to disk (use it for validation reports, not for every step).
  virtual void Update(const std::function<void(loracle::v1::Job&)>& edit, bool persist) = 0;
};

// The result of a successful run.
struct JobOutcome {
  int64_t published_version = 0;
  loracle::v1::ValidationReport report;
};

class JobQueue {
 public:
  // Runs one job on a worker thread. CANCELLED when it saw JobContext::Cancelled(); any other
  // error fails the job with its message.
  using Runner =
      std::function<absl::StatusOr<JobOutcome>(const loracle::v1::SubmitRequest&, JobContext&)>;
  using Watcher = std::function<void(const loracle::v1::Job&)>;

  struct Options {
    std::string jobs_dir;  // required; created if missing
    int workers = 1;       // jobs running at once; 0 = none run here (queue only)
    int max_queued = 16;   // QUEUED jobs; Submit beyond it is RESOURCE_EXHAUSTED
    Runner runner;         // required when workers > 0
    // Optional, not owned: each job that ends after it started is recorded (RecordJobEnded)
    // with its time from its last start; a job found RUNNING after a restart counts as FAILED
    // with the time it had run until its last recorded update. Jobs cancelled while queued are
    // not recorded.
    metrics::Metrics* metrics = nullptr;
  };
  // Reads the jobs directory (see above). INVALID_ARGUMENT for bad options, the file system's
  // errors for an unreadable directory.
  static absl::StatusOr<std::unique_ptr<JobQueue>> Create(const Options& options);
  ~JobQueue() ABSL_LOCKS_EXCLUDED(mu_);  // Shutdown()

  // Queues a job (state QUEUED) and persists its spec. RESOURCE_EXHAUSTED when the queue is full,
  // UNAVAILABLE after Shutdown, INTERNAL when the spec cannot be written.
  absl::StatusOr<loracle::v1::Job> Submit(const loracle::v1::SubmitRequest& spec)
      ABSL_LOCKS_EXCLUDED(mu_);
  absl::StatusOr<loracle::v1::Job> Get(const std::string& id) const ABSL_LOCKS_EXCLUDED(mu_);
  // Newest first; `page_token` is the last id of the previous page. INVALID_ARGUMENT for a token
  // that names no job.
  absl::StatusOr<std::vector<loracle::v1::Job>> List(int page_size, const std::string& page_token,
                                                     std::string* next_page_token) const
      ABSL_LOCKS_EXCLUDED(mu_);
  // A QUEUED job is CANCELLED at once; a RUNNING one when its runner next checks (one optimiser
  // step); an ended job is returned as it is. NOT_FOUND when unknown.
  absl::StatusOr<loracle::v1::Job> Cancel(const std::string& id) ABSL_LOCKS_EXCLUDED(mu_);

  // Calls `watcher` with the job now and after every change, until it ends (the last call has
  // the final state) or Unsubscribe. Returns a token; NOT_FOUND when unknown.
  absl::StatusOr<int64_t> Subscribe(const std::string& id, Watcher watcher)
      ABSL_LOCKS_EXCLUDED(mu_, notify_mu_);
  void Unsubscribe(int64_t token) ABSL_LOCKS_EXCLUDED(mu_);

  // For metrics: jobs per state (every state present, 0 when none) and the summed examples/s of
  // running jobs.
  struct Summary {
    std::map<loracle::v1::JobState, int64_t> by_state;
    double running_examples_per_s = 0;
  };
  Summary Summarize() const ABSL_LOCKS_EXCLUDED(mu_);

  // Stops the workers: running jobs are cancelled and queued again on disk; waits for them.
  // Idempotent; call from one thread (the owner's).
  void Shutdown() ABSL_LOCKS_EXCLUDED(mu_);

 private:
  struct Record {
    loracle::v1::Job job;
    bool cancel_requested = false;
  };
  class Context;

  explicit JobQueue(const Options& options) : options_(options) {}
  absl::Status Recover() ABSL_LOCKS_EXCLUDED(mu_);
  void WorkerLoop() ABSL_LOCKS_EXCLUDED(mu_);
  bool HasWork() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return !queue_.empty() || stopping_; }
  // Persists `job` (job.json). Logged on failure: the in-memory state stays authoritative.
  void Persist(const loracle::v1::Job& job) const;
  // Records an ended job that had started, as of `end_unix_ms`, in options_.metrics.
  void RecordEnded(const loracle::v1::Job& job, int64_t end_unix_ms) const;
  // Calls the job's watchers with `job` (outside the lock); drops them once it has ended.
  void Notify(const loracle::v1::Job& job) ABSL_LOCKS_EXCLUDED(mu_, notify_mu_);
  std::string JobDir(const std::string& id) const { return options_.jobs_dir + "/" + id; }

  const Options options_;
  // Serialises deliveries to watchers (Notify, Subscribe); taken before mu_.
  absl::Mutex notify_mu_ ABSL_ACQUIRED_BEFORE(mu_);
  mutable absl::Mutex mu_;
  std::map<std::string, Record> jobs_ ABSL_GUARDED_BY(mu_);
  std::deque<std::string> queue_ ABSL_GUARDED_BY(mu_);  // QUEUED ids, oldest first
  std::map<int64_t, std::pair<std::string, Watcher>> watchers_ ABSL_GUARDED_BY(mu_);
  int64_t next_token_ ABSL_GUARDED_BY(mu_) = 1;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::thread> threads_;
};

// True for SUCCEEDED, FAILED and CANCELLED.
bool JobEnded(loracle::v1::JobState state);

}  // namespace loracle::training

#endif  // LORACLE_SERVER_TRAINING_JOB_QUEUE_H_
