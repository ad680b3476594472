#ifndef LORACLE_SERVER_SERVING_BATCHER_H_
#define LORACLE_SERVER_SERVING_BATCHER_H_

// Dynamic batching: requests from many callers and adapters are queued (bounded, in rows) and
// batch threads take up to max_batch_size rows at a time, waiting at most max_queue_delay_us for
// a batch to fill once its first request is queued (longer when batches run long: see
// adaptive_delay_fraction). Submit never blocks. A request whose deadline
// passed or whose caller cancelled while it was queued is finished with DEADLINE_EXCEEDED or
// CANCELLED without running. Torch-free.
//
// Thread-safety: Submit, Shutdown and queued_rows may be called from any thread (Submit from
// gRPC reactors: it never blocks). RunFn runs on the batch threads, num_batch_threads at once,
// never under the batcher's lock.

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "server/serving/inference_request.h"

namespace loracle::metrics {
class Metrics;
}

namespace loracle::serving {

class Batcher {
 public:
  struct Options {
    int64_t max_batch_size = 64;        // rows per forward (a larger request runs alone)
    int64_t max_queue_delay_us = 2000;  // how long a batch may wait to fill
    // The fill wait grows to this fraction of recent batches' run time (a moving average) when
    // that is longer than max_queue_delay_us: with forwards of a second, callers answered by one
    // batch have time to send their next requests into the next one, at a latency cost of at
    // most this fraction. 0 = always max_queue_delay_us.
    double adaptive_delay_fraction = 0.02;
    int64_t max_queued_rows = 4096;  // Submit fails with RESOURCE_EXHAUSTED beyond this
    int num_batch_threads = 1;
  };
  // Runs one batch on the calling batch thread and calls every request's `done`.
  using RunFn = std::function<void(std::vector<std::unique_ptr<InferenceRequest>>)>;

  // `metrics` may be null; not owned.
  static absl::StatusOr<std::unique_ptr<Batcher>> Create(const Options& options, RunFn run,
                                                         metrics::Metrics* metrics = nullptr);
  ~Batcher() ABSL_LOCKS_EXCLUDED(mu_);  // Shutdown()

  // Queues `request`. RESOURCE_EXHAUSTED when the queue is full, UNAVAILABLE after Shutdown,
  // INVALID_ARGUMENT for a request with no rows; `done` is then never called.
  absl::Status Submit(std::unique_ptr<InferenceRequest> request) ABSL_LOCKS_EXCLUDED(mu_);

  // Stops accepting, runs what is queued, joins the batch threads. Idempotent.
  void Shutdown() ABSL_LOCKS_EXCLUDED(mu_);

  int64_t queued_rows() const ABSL_LOCKS_EXCLUDED(mu_);

 private:
  Batcher(const Options& options, RunFn run, metrics::Metrics* metrics)
      : options_(options), run_(std::move(run)), metrics_(metrics) {}
  void Loop() ABSL_LOCKS_EXCLUDED(mu_);
  absl::Duration FillDelay() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool HasWork() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return !queue_.empty() || stopping_; }

  const Options options_;
  const RunFn run_;
  metrics::Metrics* const metrics_;
  mutable absl::Mutex mu_;
  std::deque<std::unique_ptr<InferenceRequest>> queue_ ABSL_GUARDED_BY(mu_);
  int64_t queued_rows_ ABSL_GUARDED_BY(mu_) = 0;
  absl::Duration run_time_avg_ ABSL_GUARDED_BY(mu_) = absl::ZeroDuration();  // of run_ calls
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::thread> threads_;
};

}  // namespace loracle::serving

#endif  // LORACLE_SERVER_SERVING_BATCHER_H_
