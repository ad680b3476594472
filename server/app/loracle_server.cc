#include "server/app/loracle_server.h"

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/health_check_service_interface.h>
#include <torch/version.h>

#include <chrono>
#include <cstdio>
#include <map>
#include <set>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "server/adapters/adapter_weights.h"
#include "server/adapters/registry.h"
#include "server/adapters/store.h"
#include "server/adapters/watcher.h"
#include "server/app/spam_demo.h"
#include "server/calibration/feedback_exposition.h"
#include "server/metrics/metrics.h"
#include "server/model/checkpoint.h"
#include "server/model/cpu_runtime.h"
#include "server/model/default_model.h"
#include "server/rpc/adapters_service.h"
#include "server/rpc/auth.h"
#include "server/rpc/training_service.h"
#include "server/serving/ensemble_runner.h"
#include "server/training/fine_tune_job.h"
#include "server/training/job_queue.h"
#include "server/util/file_util.h"
#include "server/util/log.h"

namespace loracle::app {
namespace {

// A PEM file's contents, or INVALID_ARGUMENT naming `flag` when it cannot be read or holds no
// `block` ("CERTIFICATE", "PRIVATE KEY").
absl::StatusOr<std::string> ReadPem(const std::string& path, const char* flag,
                                    absl::string_view block) {
  absl::StatusOr<std::string> pem = util::ReadFileToString(path);
  if (!pem.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(flag, ": ", pem.status().message()));
  }
  if (!absl::StrContains(*pem, absl::StrCat(block, "-----"))) {
    return absl::InvalidArgumentError(
        absl::StrCat(flag, ": ", path, " holds no PEM ", block, " block"));
  }
  return pem;
}

// Insecure, TLS, or mutual TLS, from the options' files.
absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> ServerCredentialsFor(
    const LoracleServer::Options& o) {
  if (o.tls_cert_file.empty() != o.tls_key_file.empty()) {
    return absl::InvalidArgumentError("--tls_cert and --tls_key go together: set both or neither");
  }
  if (o.tls_cert_file.empty()) {
    if (!o.tls_client_ca_file.empty()) {
      return absl::InvalidArgumentError("--tls_client_ca needs --tls_cert and --tls_key");
    }
    return grpc::InsecureServerCredentials();
  }
  absl::StatusOr<std::string> cert = ReadPem(o.tls_cert_file, "--tls_cert", "CERTIFICATE");
  if (!cert.ok()) return cert.status();
  absl::StatusOr<std::string> key = ReadPem(o.tls_key_file, "--tls_key", "PRIVATE KEY");
  if (!key.ok()) return key.status();
  grpc::SslServerCredentialsOptions ssl;
  ssl.pem_key_cert_pairs.push_back({*key, *cert});
  if (!o.tls_client_ca_file.empty()) {
    absl::StatusOr<std::string> ca =
        ReadPem(o.tls_client_ca_file, "--tls_client_ca", "CERTIFICATE");
    if (!ca.ok()) return ca.status();
    ssl.pem_root_certs = *ca;
    ssl.client_certificate_request = GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY;
  }
  return grpc::SslServerCredentials(ssl);
}

// `loaded` with its metric series attached (none without `metrics`).
absl::StatusOr<std::shared_ptr<const adapters::Adapter>> WithSeries(
    absl::StatusOr<std::shared_ptr<adapters::Adapter>> loaded, metrics::Metrics* metrics) {
  if (!loaded.ok() || metrics == nullptr) return loaded;
  adapters::Adapter& a = **loaded;
  const metrics::ValidationGauges& gauges = a.serving.validation;
  a.series = metrics->NewAdapterSeries(a.name, a.version, a.serving.temperature, &gauges);
  return loaded;
}

}  // namespace

LoracleServer::LoracleServer(const Options& options) : options_(options) {}

absl::StatusOr<std::unique_ptr<LoracleServer>> LoracleServer::Create(const Options& options) {
  if (options.adapters_dir.empty()) return absl::InvalidArgumentError("adapters_dir is required");
  if (options.training_workers > 0 && options.jobs_dir.empty()) {
    return absl::InvalidArgumentError("jobs_dir is required when training_workers > 0");
  }
  for (const auto& [name, value] : std::initializer_list<std::pair<const char*, int64_t>>{
           {"max_inputs_per_request", options.inference.max_inputs_per_request},
           {"max_input_bytes", options.inference.max_input_bytes},
           {"max_mc_samples", options.inference.max_mc_samples},
           {"max_passes_per_request", options.inference.max_passes_per_request},
           {"max_feedback_items", options.inference.max_feedback_items},
           {"max_examples_per_job", options.training.limits.max_examples},
           {"max_dataset_bytes", options.training.limits.max_bytes},
           {"max_labels", options.training.limits.max_labels},
           {"max_label_bytes", options.training.limits.max_label_bytes},
           {"max_ensemble_members", options.training.max_members},
           {"max_watch_streams", options.training.max_watch_streams},
           {"max_queued_jobs", options.max_queued_jobs}}) {
    if (value < 1) {
      return absl::InvalidArgumentError(absl::StrCat(name, " must be >= 1, got ", value));
    }
  }
  if (options.http_timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("http_timeout must be > 0");
  }
  if (options.max_message_bytes < 1024 || options.max_message_bytes > INT32_MAX) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_message_bytes must be in [1024, 2^31), got ", options.max_message_bytes));
  }
  if (options.adapter_memory_bytes < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "adapter_memory_bytes must be >= 0 (0: no limit), got ", options.adapter_memory_bytes));
  }
  absl::StatusOr<model::Placement> placement =
      model::ResolvePlacement(options.device, options.dtype, options.quantize);
  if (!placement.ok()) return placement.status();
  std::unique_ptr<LoracleServer> s(new LoracleServer(options));
  absl::StatusOr<std::unique_ptr<calibration::FeedbackStore>> feedback =
      calibration::FeedbackStore::Create(options.feedback);
  if (!feedback.ok()) return feedback.status();
  s->feedback_ = *std::move(feedback);
  metrics::Metrics::Options metrics_options;
  metrics_options.bind_address = options.metrics_address;
  metrics_options.build_info = {
      {"version", LORACLE_VERSION},      {"git_commit", LORACLE_GIT_COMMIT},
      {"torch_version", TORCH_VERSION},  {"device", placement->DeviceName()},
      {"dtype", placement->DTypeName()}, {"quantize", placement->QuantizeName()}};
  absl::StatusOr<std::unique_ptr<metrics::Metrics>> metrics =
      metrics::Metrics::Create(metrics_options);
  if (!metrics.ok()) return metrics.status();
  s->metrics_ = *std::move(metrics);
  metrics::Metrics* m = s->metrics_.get();
  // Online calibration per adapter version, for the versions the registry still holds; adapters
  // and fine-tune jobs by state.
  s->metrics_->AddCollector(
      [feedback = s->feedback_.get(), registry = &s->registry_slot_, jobs = &s->jobs_slot_,
       threads = std::map<std::string, int64_t>{
           {"serving", options.threads > 0 ? options.threads : model::Cores()},
           {"training", options.training_threads > 0 ? options.training_threads : model::Cores()},
           {"batch", options.batcher.num_batch_threads}}] {
        std::map<std::string, int64_t> adapter_states;
        for (adapters::AdapterState state :
             {adapters::AdapterState::kLoading, adapters::AdapterState::kReady,
              adapters::AdapterState::kUnloading, adapters::AdapterState::kFailed}) {
          adapter_states[std::string(adapters::AdapterStateName(state))] = 0;
        }
        if (const adapters::Registry* r = registry->get(); r != nullptr) {
          std::set<std::pair<std::string, int64_t>> live;
          for (const adapters::AdapterInfo& info : r->List()) {
            live.insert({info.name, info.version});
            ++adapter_states[std::string(adapters::AdapterStateName(info.state))];
          }
          feedback->Retain([&live](absl::string_view adapter, int64_t version) {
            return live.count({std::string(adapter), version}) > 0;
          });
        }
        std::vector<prometheus::MetricFamily> families =
            calibration::FeedbackFamilies(feedback->Reports(), feedback->remembered());
        families.push_back(metrics::GaugeFamily("loracle_adapters",
                                                "Adapter versions the registry holds, by state",
                                                "state", adapter_states));
        families.push_back(metrics::GaugeFamily(
            "loracle_compute_threads",
            "Threads each kind of work may use (serving: BLAS for a batch; training: per job; "
            "batch: batch threads)",
            "use", threads));
        if (const training::JobQueue* q = jobs->get(); q != nullptr) {
          const training::JobQueue::Summary summary = q->Summarize();
          std::map<std::string, int64_t> by_state;
          for (const auto& [state, n] : summary.by_state) {
            by_state[loracle::v1::JobState_Name(state).substr(10)] = n;  // drop "JOB_STATE_"
          }
          families.push_back(metrics::GaugeFamily("loracle_training_jobs",
                                                  "Fine-tune jobs this replica holds, by state",
                                                  "state", by_state));
          families.push_back(metrics::GaugeFamily(
              "loracle_training_examples_per_second", "Training throughput of the running jobs", "",
              std::map<std::string, double>{{"", summary.running_examples_per_s}}));
        }
        return families;
      });
  if (!options.auth_tokens_file.empty()) {
    absl::StatusOr<std::unique_ptr<rpc::TokenAuth>> auth =
        rpc::TokenAuth::Create(options.auth_tokens_file);
    if (!auth.ok()) {
      return absl::Status(auth.status().code(),
                          absl::StrCat("--auth_tokens_file: ", auth.status().message()));
    }
    s->auth_ = *std::move(auth);
  } else {
    LORACLE_LOG(WARNING,
                "no --auth_tokens_file: every caller may predict, train, and load or unload "
                "adapters");
  }
  absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> credentials =
      ServerCredentialsFor(options);
  if (!credentials.ok()) return credentials.status();
  const rpc::TokenAuth* auth = s->auth_.get();
  s->inference_service_ = std::make_unique<rpc::InferenceService>(
      options.inference, &s->predictor_slot_, s->feedback_.get(), auth, m);
  s->adapters_service_ = std::make_unique<rpc::AdaptersService>(&s->registry_slot_, auth, m);
  s->training_service_ =
      std::make_unique<rpc::TrainingService>(options.training, &s->jobs_slot_, auth, m);

  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  builder.AddListeningPort(options.grpc_address, *credentials, &s->grpc_port_);
  builder.RegisterService(s->inference_service_.get());
  builder.RegisterService(s->adapters_service_.get());
  builder.RegisterService(s->training_service_.get());
  builder.SetMaxReceiveMessageSize(static_cast<int>(options.max_message_bytes));
  s->server_ = builder.BuildAndStart();
  if (s->server_ == nullptr || s->grpc_port_ == 0) {
    return absl::UnavailableError(
        absl::StrCat("cannot listen for gRPC on ", options.grpc_address,
                     options.tls_cert_file.empty()
                         ? " (address in use or not allowed?)"
                         : " (address in use or not allowed, or a TLS key that does not match the "
                           "certificate?)"));
  }
  s->server_->GetHealthCheckService()->SetServingStatus(false);
  if (!options.http_address.empty()) {
    rpc::RestService::Options rest;
    rest.limits = options.inference;
    rest.default_timeout = options.http_timeout;
    s->rest_service_ = std::make_unique<rpc::RestService>(
        rest, &s->predictor_slot_, s->feedback_.get(), auth, m, [p = s.get()] {
          absl::MutexLock lock(&p->mu_);
          return p->load_done_ && p->load_status_.ok() && !p->shut_down_;
        });
    http::HttpServer::Options ho;
    ho.bind_address = options.http_address;
    ho.threads = options.http_threads;
    ho.max_body_bytes = static_cast<size_t>(options.max_message_bytes);
    absl::StatusOr<std::unique_ptr<http::HttpServer>> http =
        http::HttpServer::Create(ho, s->rest_service_->Routes());
    if (!http.ok()) {
      return absl::Status(http.status().code(),
                          absl::StrCat("REST (--http_port): ", http.status().message()));
    }
    s->http_ = *std::move(http);
  }
  s->loader_ = std::thread([p = s.get()] {
    absl::Status status = p->LoadEngine();
    if (status.ok()) p->metrics_->SetModelReady(true);
    absl::MutexLock lock(&p->mu_);
    p->load_status_ = status;
    p->load_done_ = true;
    if (status.ok() && !p->shut_down_) p->server_->GetHealthCheckService()->SetServingStatus(true);
  });
  return s;
}

absl::Status LoracleServer::LoadEngine() {
  std::string model_dir = options_.model_dir;
  if (model_dir.empty()) {
    absl::StatusOr<std::string> dir = model::BuiltinModelDir();
    if (!dir.ok()) return dir.status();
    model_dir = *dir;
  }
  model::SetComputeThreads({options_.threads, options_.intra_op_threads});  // process-wide
  absl::StatusOr<model::Placement> placement = model::ResolvePlacement(
      options_.device, options_.dtype, options_.quantize);  // checked by Create
  if (!placement.ok()) return placement.status();
  LORACLE_LOG(INFO, "model on %s in %s, quantize %s (%s)", placement->DeviceName().c_str(),
              placement->DTypeName().c_str(), placement->QuantizeName().c_str(),
              placement->dtype_reason.c_str());
  absl::StatusOr<std::unique_ptr<model::BaseModel>> base =
      model::LoadBaseModel(model_dir, *placement);
  if (!base.ok()) return base.status();
  base_ = *std::move(base);
  const model::BaseModel* base_model = base_.get();
  LORACLE_LOG(INFO, "base %s: fingerprint %s (%lld tensors, %s)", model_dir.c_str(),
              base_model->fingerprint.id.c_str(),
              static_cast<long long>(base_model->fingerprint.tensors),
              base_model->fingerprint.sampled ? "weights sampled" : "every weight byte hashed");

  absl::StatusOr<std::unique_ptr<serving::EnsembleRunner>> runner = serving::EnsembleRunner::Create(
      {base_model, options_.threads, options_.parallel_rows, metrics_.get()});
  if (!runner.ok()) return runner.status();
  runner_ = *std::move(runner);

  absl::StatusOr<std::unique_ptr<adapters::Store>> store =
      adapters::Store::Create({options_.adapters_dir});
  if (!store.ok()) return store.status();
  store_ = *std::move(store);
  // Staging directories untouched for an hour are from publishers that died mid-publish.
  if (absl::StatusOr<std::vector<std::string>> stale = store_->RemoveStaleStaging(absl::Hours(1));
      stale.ok()) {
    for (const std::string& path : *stale) {
      LORACLE_LOG(INFO, "removed %s, left by a publish that did not finish", path.c_str());
    }
  } else {
    LORACLE_LOG(WARNING, "cleaning the adapter store's staging: %s",
                stale.status().ToString().c_str());
  }

  adapters::Registry::Options registry_options;
  registry_options.store = store_.get();
  metrics::Metrics* m = metrics_.get();
  registry_options.loader = [base_model, m](const std::string& dir, const std::string& name,
                                            int64_t version) {
    return WithSeries(adapters::LoadAdapter(dir, name, version, *base_model), m);
  };
  registry_options.load_threads = options_.adapter_load_threads;
  registry_options.memory_budget_bytes = options_.adapter_memory_bytes;
  registry_options.metrics = metrics_.get();
  absl::StatusOr<std::unique_ptr<adapters::Registry>> registry =
      adapters::Registry::Create(registry_options);
  if (!registry.ok()) return registry.status();
  registry_ = *std::move(registry);
  if (absl::Status s = registry_->LoadAll(); !s.ok()) return s;
  if (!options_.base_head_adapter.empty()) {
    absl::StatusOr<std::shared_ptr<const adapters::Adapter>> head =
        WithSeries(adapters::BaseHeadAdapter(*base_model, options_.base_head_adapter), m);
    absl::Status s = head.ok() ? registry_->Add(*std::move(head)) : head.status();
    if (!s.ok() && !absl::IsNotFound(s)) LORACLE_LOG(ERROR, "%s", s.ToString());
  }
  for (const adapters::AdapterInfo& info : registry_->List()) {
    if (info.state == adapters::AdapterState::kFailed) {
      LORACLE_LOG(ERROR, "adapter %s failed to load: %s", info.name.c_str(), info.error.c_str());
    }
  }
  if (options_.store_poll_interval > absl::ZeroDuration()) {
    absl::StatusOr<std::unique_ptr<adapters::Watcher>> watcher = adapters::Watcher::Create(
        {store_.get(), registry_.get(), options_.store_poll_interval, options_.store_inotify});
    if (!watcher.ok()) return watcher.status();
    watcher_ = *std::move(watcher);
  }

  serving::EnsembleRunner* r = runner_.get();
  absl::StatusOr<std::unique_ptr<serving::Batcher>> batcher = serving::Batcher::Create(
      options_.batcher,
      [r](std::vector<std::unique_ptr<serving::InferenceRequest>> batch) {
        r->Run(std::move(batch));
      },
      metrics_.get());
  if (!batcher.ok()) return batcher.status();
  batcher_ = *std::move(batcher);

  if (options_.training_workers > 0 || !options_.jobs_dir.empty()) {
    training::FineTuneContext env{
        base_model,
        store_.get(),
        registry_.get(),
        options_.training.data_dir,
        options_.training.limits,
        options_.training_threads > 0 ? options_.training_threads : model::Cores(),
        options_.training_idle_priority};
    training::JobQueue::Options jobs;
    jobs.jobs_dir = options_.jobs_dir;
    jobs.workers = options_.training_workers;
    jobs.max_queued = options_.max_queued_jobs;
    jobs.metrics = m;
    jobs.runner = [env](const loracle::v1::SubmitRequest& request, training::JobContext& context) {
      return training::RunFineTune(request, context, env);
    };
    absl::StatusOr<std::unique_ptr<training::JobQueue>> queue = training::JobQueue::Create(jobs);
    if (!queue.ok()) return queue.status();
    jobs_ = *std::move(queue);
    jobs_slot_.Publish(jobs_.get());
    if (options_.model_dir.empty() && options_.spam_demo && options_.training_workers > 0) {
      if (absl::Status s = SubmitSpamDemoIfNeeded(*jobs_, *store_, base_model->fingerprint.id);
          !s.ok()) {
        LORACLE_LOG(ERROR, "could not queue the spam demo job: %s", s.ToString().c_str());
      }
    }
  }

  serving::Predictor::Options predictor;
  predictor.limits = options_.inference;
  predictor.registry = registry_.get();
  predictor.tokenizer = base_model->tokenizer.get();
  predictor.max_length = base_model->max_length;
  predictor.batcher = batcher_.get();
  predictor.feedback = feedback_.get();
  absl::StatusOr<std::unique_ptr<serving::Predictor>> made = serving::Predictor::Create(predictor);
  if (!made.ok()) return made.status();
  predictor_ = *std::move(made);
  predictor_slot_.Publish(predictor_.get());
  registry_slot_.Publish(registry_.get());
  absl::MutexLock lock(&mu_);
  loaded_model_dir_ = model_dir;
  return absl::OkStatus();
}

absl::Status LoracleServer::WaitUntilReady(absl::Duration timeout) {
  absl::MutexLock lock(&mu_);
  if (!mu_.AwaitWithTimeout(absl::Condition(this, &LoracleServer::LoadDone), timeout)) {
    return absl::DeadlineExceededError("the model did not finish loading in time");
  }
  return load_status_;
}

absl::Status LoracleServer::ReloadAuthTokens() {
  if (auth_ == nullptr) {
    return absl::FailedPreconditionError("the server runs without --auth_tokens_file");
  }
  return auth_->Reload();
}

std::string LoracleServer::model_dir() const {
  absl::MutexLock lock(&mu_);
  return loaded_model_dir_;
}

int LoracleServer::metrics_port() const { return metrics_->port(); }

void LoracleServer::Shutdown(absl::Duration grace) {
  {
    absl::MutexLock lock(&mu_);
    if (shut_down_) return;
    shut_down_ = true;
  }
  if (server_ == nullptr) return;  // Create failed before gRPC started
  server_->GetHealthCheckService()->SetServingStatus(false);
  training_service_->StopWatches();  // streams that would last as long as their job
  // In-flight calls finish on the batch threads, which keep running until the server is down.
  server_->Shutdown(std::chrono::system_clock::now() + absl::ToChronoMilliseconds(grace));
  http_.reset();  // closes the port, then waits for in-flight REST calls (the batcher answers)
  if (loader_.joinable()) loader_.join();
  watcher_.reset();                         // no loads or unloads while draining
  if (jobs_ != nullptr) jobs_->Shutdown();  // a running job is put back in the queue
  if (batcher_ != nullptr) batcher_->Shutdown();
  server_->Wait();
}

LoracleServer::~LoracleServer() {
  Shutdown(absl::ZeroDuration());
  if (metrics_ != nullptr) metrics_->StopEndpoint();  // no scrape may outlive the registry
}

}  // namespace loracle::app
