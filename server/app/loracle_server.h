#ifndef LORACLE_SERVER_APP_LORACLE_SERVER_H_
#define LORACLE_SERVER_APP_LORACLE_SERVER_H_

// The composition root: builds the parts of the server in data-flow order, owns them, and hands
// each gRPC service only the interfaces it calls.
//
//   Create:        metrics (/metrics) -> services -> gRPC server (health NOT_SERVING)
//   loader thread: base model -> ensemble runner -> adapter store -> registry
//                  (loads the store) -> batcher (runs batches on the runner) -> job queue
//                  (its workers train and publish into the store and registry; with the
//                  built-in model, the first start queues the "spam" job) -> publish to the
//                  services -> health SERVING
//
// Thread-safety: Create, WaitUntilReady, Shutdown and the accessors may be called from any
// thread; Shutdown is idempotent and the destructor calls it.

#include <grpcpp/grpcpp.h>

#include <memory>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "server/calibration/feedback_store.h"
#include "server/http/http_server.h"
#include "server/rpc/engine.h"
#include "server/rpc/inference_service.h"
#include "server/rpc/rest_service.h"
#include "server/rpc/training_service.h"
#include "server/serving/batcher.h"
#include "server/serving/predictor.h"

namespace loracle::adapters {
class Registry;
class Store;
class Watcher;
}  // namespace loracle::adapters
namespace loracle::metrics {
class Metrics;
}
namespace loracle::model {
struct BaseModel;
}
namespace loracle::serving {
class EnsembleRunner;
}
namespace loracle::rpc {
class AdaptersService;
class TokenAuth;
}  // namespace loracle::rpc
namespace loracle::training {
class JobQueue;
}

namespace loracle::app {

class LoracleServer {
 public:
  struct Options {
    std::string grpc_address = "0.0.0.0:50051";  // port 0 picks a free port
    std::string metrics_address = "9464";  // "PORT" or "HOST:PORT" (port 0 = any); empty = none
    // REST inference (rpc/rest_service.h): "PORT" or "HOST:PORT" (port 0 = any); empty = none.
    std::string http_address;
    int http_threads = 64;  // REST requests served at once (each waits for its batch)
    absl::Duration http_timeout = absl::Seconds(30);  // an infer request's default deadline
    std::string model_dir;     // empty = the built-in model (model::BuiltinModelDir)
    std::string cache_dir;     // default home of adapters_dir and jobs_dir (main.cc)
    std::string adapters_dir;  // the adapter store; required
    // With the built-in model, train the "spam" ensemble on the bundled data as a background job
    // when the store lacks it (spam_demo.h).
    bool spam_demo = true;
    // When the checkpoint is a *ForSequenceClassification model, its own head is served as
    // this adapter (no LoRA); empty = not served.
    std::string base_head_adapter = "base";
    // Where the model, adapters and training run (model/placement.h): cpu | cuda | cuda:N, and
    // float32 | bfloat16 | float16.
    std::string device = "cpu";
    std::string dtype = "auto";
    std::string quantize = "none";     // none | int8 (CPU): int8 base GEMMs
    int threads = 0;                   // BLAS (GEMM) threads; 0 = all cores
    int intra_op_threads = 1;          // torch's element-wise pool; see model/cpu_runtime.h
    bool parallel_rows = true;         // see serving::EnsembleRunner::Options
    int adapter_load_threads = 1;      // adapters loading at once (adapters::Registry)
    int64_t adapter_memory_bytes = 0;  // Registry::Options::memory_budget_bytes (0: no limit)
    // Follow the store as other processes change it (adapters::Watcher): a scan every
    // store_poll_interval, and on inotify events when store_inotify. Zero: no watcher.
    absl::Duration store_poll_interval = absl::Seconds(5);
    bool store_inotify = true;
    serving::Batcher::Options batcher;
    serving::Predictor::Limits inference;  // request limits
    int64_t max_message_bytes = 64 << 20;  // largest gRPC request; beyond: RESOURCE_EXHAUSTED
    // gRPC over TLS when tls_cert_file and tls_key_file (PEM) are set; with tls_client_ca_file,
    // mutual TLS: clients must present a certificate that CA signed.
    std::string tls_cert_file;
    std::string tls_key_file;
    std::string tls_client_ca_file;
    // Role tokens (rpc/auth.h); empty = every caller may call every method (a warning is logged).
    std::string auth_tokens_file;
    // Fine-tune jobs (training::JobQueue): persisted under jobs_dir (required when
    // training_workers > 0); 0 workers = this replica does not train.
    std::string jobs_dir;
    int training_workers = 1;
    // Threads each job computes on (0 = all cores) and whether they run at SCHED_IDLE, so that
    // serving keeps every core it wants while a job trains (training::TrainerOptions).
    int training_threads = 0;
    bool training_idle_priority = true;
    int max_queued_jobs = 16;
    rpc::TrainingService::Options training;  // data_dir, request limits
    // Predictions remembered for Inference.Feedback, and the online calibration window.
    calibration::FeedbackStore::Options feedback;
  };

  // Starts gRPC and /metrics, then loads the model on a background thread. Errors: the ports
  // cannot be bound (UNAVAILABLE), bad options (INVALID_ARGUMENT), a device this build or
  // machine lacks (FAILED_PRECONDITION: model/placement.h).
  static absl::StatusOr<std::unique_ptr<LoracleServer>> Create(const Options& options);
  ~LoracleServer();

  // Blocks until the model is loaded (OK) or failed to load (its error), or `timeout` passes
  // (DEADLINE_EXCEEDED).
  absl::Status WaitUntilReady(absl::Duration timeout) ABSL_LOCKS_EXCLUDED(mu_);

  // Health NOT_SERVING, stop accepting calls, let in-flight calls finish within `grace` (then
  // cancel them), then stop the batcher. Idempotent.
  void Shutdown(absl::Duration grace) ABSL_LOCKS_EXCLUDED(mu_);

  int grpc_port() const { return grpc_port_; }
  int metrics_port() const;
  int http_port() const { return http_ != nullptr ? http_->port() : 0; }
  // Reads auth_tokens_file again (on SIGHUP); on error keeps the tokens it had and returns the
  // error. FAILED_PRECONDITION when the server runs without tokens.
  absl::Status ReloadAuthTokens();

  // Where the base model was loaded from (after WaitUntilReady).
  std::string model_dir() const ABSL_LOCKS_EXCLUDED(mu_);

 private:
  explicit LoracleServer(const Options& options);
  // Builds the engine on the loader thread; publishes it to the services on success.
  absl::Status LoadEngine();
  bool LoadDone() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return load_done_; }

  const Options options_;

  // Built by Create, in this order; destroyed in reverse.
  std::unique_ptr<calibration::FeedbackStore> feedback_;
  std::unique_ptr<metrics::Metrics> metrics_;
  std::unique_ptr<rpc::TokenAuth> auth_;
  rpc::Published<const serving::Predictor> predictor_slot_;
  rpc::Published<adapters::Registry> registry_slot_;
  rpc::Published<training::JobQueue> jobs_slot_;
  std::unique_ptr<rpc::InferenceService> inference_service_;
  std::unique_ptr<rpc::AdaptersService> adapters_service_;
  std::unique_ptr<rpc::TrainingService> training_service_;
  std::unique_ptr<rpc::RestService> rest_service_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<http::HttpServer> http_;  // stopped by Shutdown, before the batcher
  int grpc_port_ = 0;

  // Built by the loader thread in data-flow order; read-only once load_done_.
  std::unique_ptr<model::BaseModel> base_;
  std::unique_ptr<serving::EnsembleRunner> runner_;
  std::unique_ptr<adapters::Store> store_;
  std::unique_ptr<adapters::Registry> registry_;
  std::unique_ptr<adapters::Watcher> watcher_;  // stops before the registry goes
  std::unique_ptr<serving::Batcher> batcher_;
  std::unique_ptr<training::JobQueue> jobs_;
  std::unique_ptr<serving::Predictor> predictor_;
  std::thread loader_;

  mutable absl::Mutex mu_;
  bool load_done_ ABSL_GUARDED_BY(mu_) = false;
  absl::Status load_status_ ABSL_GUARDED_BY(mu_);
  std::string loaded_model_dir_ ABSL_GUARDED_BY(mu_);
  bool shut_down_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace loracle::app

#endif  // LORACLE_SERVER_APP_LORACLE_SERVER_H_
