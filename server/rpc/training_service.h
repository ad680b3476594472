#ifndef LORACLE_SERVER_RPC_TRAINING_SERVICE_H_
#define LORACLE_SERVER_RPC_TRAINING_SERVICE_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "loracle/v1/training.grpc.pb.h"
#include "server/rpc/engine.h"
#include "server/rpc/unary_call.h"
#include "server/training/dataset.h"

namespace loracle::metrics {
class Metrics;
}
namespace loracle::training {
class JobQueue;
}

namespace loracle::rpc {

// The fine-tune API over training::JobQueue. Submit validates the request on the reactor (cheap
// checks only: names, sizes, ranges, labels of inline examples, that a server-side path lies
// inside --data_dir) and queues it; Get, List and Cancel read or flip the queue's state; Watch is
// a server-streaming reactor that sends the job at once and after every change, never blocking a
// gRPC thread. Thread-safe.
struct WatchSink;  // a live Watch stream (training_service.cc)

class TrainingService final : public loracle::v1::Training::CallbackService {
 public:
  struct Options {
    std::string data_dir;         // server-side data files must lie inside; empty = none
    training::DataLimits limits;  // examples, bytes and labels per job, inline or from a file
    int max_members = 16;         // ensemble_members
    int max_mc_samples = 32;      // mc_samples
    int max_watch_streams = 64;   // open Watch streams; beyond it Watch is RESOURCE_EXHAUSTED
  };
  // No pointer is owned; all outlive the service. `metrics` may be null; `auth` null = open
  // (every method needs the train role otherwise). With no queue
  // published (this replica does not train), every method answers UNAVAILABLE.
  TrainingService(const Options& options, const Published<training::JobQueue>* jobs,
                  const TokenAuth* auth, metrics::Metrics* metrics)
      : options_(options),
        jobs_(jobs),
        auth_(auth),
        submit_(SeriesOf(metrics, kSubmitJobMethod)),
        get_(SeriesOf(metrics, kGetJobMethod)),
        watch_(SeriesOf(metrics, kWatchJobMethod)),
        cancel_(SeriesOf(metrics, kCancelJobMethod)),
        list_(SeriesOf(metrics, kListJobsMethod)) {}

  grpc::ServerUnaryReactor* Submit(grpc::CallbackServerContext* ctx,
                                   const loracle::v1::SubmitRequest* request,
                                   loracle::v1::Job* response) override;
  grpc::ServerUnaryReactor* Get(grpc::CallbackServerContext* ctx,
                                const loracle::v1::GetJobRequest* request,
                                loracle::v1::Job* response) override;
  grpc::ServerWriteReactor<loracle::v1::Job>* Watch(
      grpc::CallbackServerContext* ctx, const loracle::v1::GetJobRequest* request) override;
  grpc::ServerUnaryReactor* Cancel(grpc::CallbackServerContext* ctx,
                                   const loracle::v1::GetJobRequest* request,
                                   loracle::v1::Job* response) override;
  grpc::ServerUnaryReactor* List(grpc::CallbackServerContext* ctx,
                                 const loracle::v1::ListJobsRequest* request,
                                 loracle::v1::ListJobsResponse* response) override;

  // Ends every Watch stream with UNAVAILABLE (the client may watch again elsewhere or after a
  // restart) and refuses new ones, so that a graceful shutdown does not wait for streams that
  // would otherwise last as long as their job. Call before grpc::Server::Shutdown.
  void StopWatches() ABSL_LOCKS_EXCLUDED(watches_mu_);

 private:
  const Options options_;
  const Published<training::JobQueue>* const jobs_;
  const TokenAuth* const auth_;
  metrics::MethodSeries* const submit_;
  metrics::MethodSeries* const get_;
  metrics::MethodSeries* const watch_;
  metrics::MethodSeries* const cancel_;
  metrics::MethodSeries* const list_;
  absl::Mutex watches_mu_;
  std::vector<std::weak_ptr<WatchSink>> watches_ ABSL_GUARDED_BY(watches_mu_);
  bool stopping_ ABSL_GUARDED_BY(watches_mu_) = false;
};

// The request's problems a person can fix, or OK (exposed for tests).
absl::Status ValidateSubmit(const loracle::v1::SubmitRequest& request,
                            const TrainingService::Options& options);

}  // namespace loracle::rpc

#endif  // LORACLE_SERVER_RPC_TRAINING_SERVICE_H_
