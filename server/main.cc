// loracle-server: flags -> Options -> LoracleServer. Flags live here only.

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "absl/container/flat_hash_set.h"
#include "absl/flags/commandlineflag.h"
#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/reflection.h"
#include "absl/flags/usage.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "server/app/loracle_server.h"
#include "server/model/cpu_runtime.h"
#include "server/util/log.h"

ABSL_FLAG(int, v, 0, "Verbosity of debug logging: LORACLE_VLOG(n) lines with n <= --v are written");
ABSL_FLAG(std::string, minloglevel, "info",
          "Least severity of the log lines written to stderr: info, warning or error");
ABSL_FLAG(int, grpc_port, 50051, "gRPC port (0 picks a free one)");
ABSL_FLAG(std::string, grpc_host, "0.0.0.0", "Address to listen on for gRPC");
ABSL_FLAG(int, metrics_port, 9464, "Prometheus /metrics port; -1 disables the endpoint");
ABSL_FLAG(std::string, metrics_host, "",
          "Address /metrics listens on (e.g. 127.0.0.1 or a pod-internal address); empty = all "
          "IPv4 interfaces");
ABSL_FLAG(int, http_port, 8000,
          "REST inference port (Open Inference Protocol / KServe v2 JSON: /v2/models/{adapter}/"
          "infer); -1 disables it; 0 picks a free one");
ABSL_FLAG(std::string, http_host, "", "Address REST listens on; empty = --grpc_host");
ABSL_FLAG(int, http_threads, 64, "REST requests served at once (each waits for its batch)");
ABSL_FLAG(double, http_timeout_s, 30,
          "An infer request's deadline unless its parameters.timeout_ms says otherwise");
ABSL_FLAG(std::string, tls_cert, "", "PEM certificate chain: serve gRPC over TLS (with --tls_key)");
ABSL_FLAG(std::string, tls_key, "", "PEM private key of --tls_cert");
ABSL_FLAG(std::string, tls_client_ca, "",
          "PEM CA bundle: require clients to present a certificate it signed (mutual TLS)");
ABSL_FLAG(std::string, auth_tokens_file, "",
          "Bearer tokens (or sha256:<hex> digests) and their roles, one per line; reloaded on "
          "SIGHUP. Empty = open: every caller may call every method");
ABSL_FLAG(std::string, model_dir, "",
          "Hugging Face BERT checkpoint directory (config.json, model.safetensors, vocab.txt); "
          "empty = the built-in pretrained model (installed with the binary)");
ABSL_FLAG(std::string, adapters_dir, "",
          "Adapter store (<dir>/<name>/<version>/); empty = <cache_dir>/adapters");
ABSL_FLAG(std::string, cache_dir, "",
          "Default home of the adapter store and the jobs; empty = $XDG_CACHE_HOME/loracle or "
          "~/.cache/loracle");
ABSL_FLAG(std::string, base_head_adapter, "base",
          "when --model_dir is a *ForSequenceClassification checkpoint, serve its own head as "
          "this adapter (empty: do not)");
ABSL_FLAG(bool, spam_demo, true,
          "With the built-in model, fine-tune the 'spam' ensemble on the bundled SpamAssassin "
          "data in the background when the store lacks it");
ABSL_FLAG(std::string, device, "cpu",
          "Where the model, adapters and training run: cpu, cuda or cuda:N (needs a loracle "
          "built against a CUDA LibTorch: README \"GPU\")");
ABSL_FLAG(std::string, dtype, "auto",
          "Floating type of the model's weights and activations: auto, float32, bfloat16 or "
          "float16 (cuda only). auto: bfloat16 on a CPU with native bfloat16 products "
          "(AVX512_BF16 or AMX-BF16), else float32. Uncertainty math is float64 on the host "
          "regardless");
ABSL_FLAG(std::string, quantize, "none",
          "none or int8 (CPU): the frozen base's linear layers as int8 GEMMs (per-channel "
          "weights, activations quantized per call), float32 activations, LoRA deltas and heads");
ABSL_FLAG(int, threads, 0, "BLAS threads: every GEMM of a forward; 0 = all cores");
ABSL_FLAG(int, intra_op_threads, 1,
          "Torch intra-op threads (element-wise ops); 0 = all cores. More than 1 makes torch's "
          "spinning OpenMP workers compete with the BLAS threads for the same cores");
ABSL_FLAG(int64_t, max_batch_size, 64, "Rows (inputs x members x samples) per forward pass");
ABSL_FLAG(int64_t, max_queue_delay_us, 2000, "How long a batch may wait to fill");
ABSL_FLAG(double, adaptive_queue_delay, 0.02,
          "Let a batch wait to fill up to this fraction of recent batches' run time when that is "
          "longer than --max_queue_delay_us (0: never)");
ABSL_FLAG(int64_t, max_queued_rows, 4096, "Queue bound; beyond it Predict gets RESOURCE_EXHAUSTED");
ABSL_FLAG(bool, parallel_rows, true,
          "Split a batch's rows across the --threads cores, one BLAS thread per part; false: "
          "one forward with --threads BLAS threads in every GEMM");
ABSL_FLAG(int, num_batch_threads, 1,
          "Batch threads: each prepares batches and delivers results; forwards themselves run "
          "one at a time, each on all --threads cores");
ABSL_FLAG(int, adapter_load_threads, 1, "Adapters (distinct names) loading at once");
ABSL_FLAG(int64_t, adapter_memory_bytes, 0,
          "Bytes of adapter weights kept in memory (rank and ensemble members count); adapters "
          "past it are evicted least recently used and reloaded from the store on their next "
          "request. 0 = keep every loaded adapter resident");
ABSL_FLAG(double, store_poll_s, 5,
          "Seconds between scans of --adapters_dir for versions other processes published or "
          "deleted (replicas sharing a store); 0 = serve only what this process loads");
ABSL_FLAG(bool, store_inotify, true,
          "Also scan on inotify events (local filesystems; network volumes rely on polling)");
// Request limits: a request past one is INVALID_ARGUMENT naming the flag (RESOURCE_EXHAUSTED for
// the message size and the Watch streams); nothing is stored or queued for it.
ABSL_FLAG(int64_t, max_message_bytes, 64 << 20, "Largest gRPC request message, in bytes");
ABSL_FLAG(int, max_inputs_per_request, 256, "Texts per Predict request");
ABSL_FLAG(int64_t, max_input_bytes, 1 << 20, "Bytes per text (and per text pair) in Predict");
ABSL_FLAG(int, max_mc_samples, 32, "Upper bound on mc_samples in Predict and fine-tune jobs");
ABSL_FLAG(int, max_passes_per_request, 256,
          "Forward passes per input in Predict: the adapter's members x mc_samples");
ABSL_FLAG(int, max_feedback_items, 10000, "Items per Feedback call");
ABSL_FLAG(int64_t, max_examples_per_job, 1000000,
          "Training + validation examples per fine-tune job, inline or from a file");
ABSL_FLAG(int64_t, max_dataset_bytes, 256 << 20,
          "Bytes per fine-tune dataset: a data file's size, or the inline texts and labels");
ABSL_FLAG(int, max_labels, 1000, "Classes per fine-tune job");
ABSL_FLAG(int, max_label_bytes, 128, "Bytes per class name in a fine-tune job");
ABSL_FLAG(int, max_ensemble_members, 16, "ensemble_members per fine-tune job");
ABSL_FLAG(int, max_watch_streams, 64, "Open Training.Watch streams");
ABSL_FLAG(std::string, jobs_dir, "",
          "Where fine-tune jobs are persisted; empty = <cache_dir>/jobs. One server process per "
          "directory");
ABSL_FLAG(int, training_workers, 1,
          "Fine-tune jobs running at once; 0 = this replica does not "
          "train (Training.* answers UNAVAILABLE)");
ABSL_FLAG(int, training_threads, 0,
          "Threads a fine-tune job computes on; 0 = all cores. See --training_priority");
ABSL_FLAG(std::string, training_priority, "idle",
          "idle: training threads run at SCHED_IDLE, on the cores serving leaves free, and BLAS "
          "runs single-threaded while a job trains (serving splits batches by rows instead); "
          "normal: training competes with serving as an equal");
ABSL_FLAG(int, max_queued_jobs, 16,
          "Queued fine-tune jobs; beyond it Submit gets "
          "RESOURCE_EXHAUSTED");
ABSL_FLAG(std::string, data_dir, "",
          "Directory whose files Training.Submit may name as data_path (symlinks and '..' may not "
          "leave it); empty = inline examples only");
ABSL_FLAG(int64_t, feedback_capacity, 100000,
          "Predictions remembered for Inference.Feedback (the oldest are forgotten first)");
ABSL_FLAG(int64_t, feedback_ttl_s, 86400,
          "Seconds a prediction accepts feedback; later feedback is NOT_FOUND");
ABSL_FLAG(int64_t, feedback_window, 1000,
          "Labelled predictions in the sliding window of the online calibration metrics, per "
          "adapter version");
ABSL_FLAG(int, shutdown_grace_s, 10, "Seconds in-flight calls get to finish on SIGTERM/SIGINT");

namespace {

std::string DefaultCacheDir() {
  if (const char* d = std::getenv("XDG_CACHE_HOME"); d != nullptr && *d) {
    return absl::StrCat(d, "/loracle");
  }
  if (const char* h = std::getenv("HOME"); h != nullptr && *h)
    return absl::StrCat(h, "/.cache/loracle");
  return "/var/cache/loracle";
}

// Every flag of this file may also come from the environment as LORACLE_<FLAG> (upper case:
// LORACLE_THREADS=4), for container platforms; the command line wins. A value that does not parse
// exits 2 naming the variable.
// A LORACLE_* variable that names no flag is reported (a typo would otherwise go unnoticed).
void FlagsFromEnvironment() {
  absl::flat_hash_set<std::string> known = {"LORACLE_TOKEN"};  // the CLI's
  for (const auto& [name, flag] : absl::GetAllFlags()) {
    if (!absl::EndsWith(flag->Filename(), "server/main.cc")) continue;  // not abseil's own
    const std::string var = absl::StrCat("LORACLE_", absl::AsciiStrToUpper(name));
    known.insert(var);
    const char* value = std::getenv(var.c_str());
    if (value == nullptr) continue;
    std::string error;
    if (!flag->ParseFrom(value, &error)) {
      std::fprintf(stderr, "loracle-server: %s=%s: %s\n", var.c_str(), value, error.c_str());
      std::exit(2);
    }
  }
  for (char** e = environ; *e != nullptr; ++e) {
    const absl::string_view entry(*e);
    const absl::string_view var = entry.substr(0, entry.find('='));
    if (absl::StartsWith(var, "LORACLE_") && !known.contains(var)) {
      std::fprintf(stderr,
                   "loracle-server: WARNING: %.*s in the environment is not a flag; ignored\n",
                   static_cast<int>(var.size()), var.data());
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  loracle::model::KeepFreedMemory();  // before any other thread or tensor exists
  absl::SetProgramUsageMessage(
      "loracle-server: gRPC model server for LoRA adapters with ensemble uncertainty.\n"
      "  loracle-server                      # built-in model, gRPC :50051, metrics :9464\n"
      "  loracle-server --model_dir=/models/bert-base-uncased --adapters_dir=/adapters\n"
      "Every flag may also be set as LORACLE_<FLAG> in the environment (LORACLE_THREADS=4);\n"
      "the command line wins.");
  FlagsFromEnvironment();
  absl::ParseCommandLine(argc, argv);

  // Past a file-size limit (RLIMIT_FSIZE), a write then fails with EFBIG, which the store reports
  // (RESOURCE_EXHAUSTED), instead of SIGXFSZ killing the server.
  ::signal(SIGXFSZ, SIG_IGN);
  // Block the shutdown and reload signals in every thread; main waits for them with sigwait.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  loracle::app::LoracleServer::Options options;
  options.grpc_address =
      absl::StrCat(absl::GetFlag(FLAGS_grpc_host), ":", absl::GetFlag(FLAGS_grpc_port));
  const int metrics_port = absl::GetFlag(FLAGS_metrics_port);
  // civetweb syntax: a bare port listens on every IPv4 interface.
  const std::string metrics_host = absl::GetFlag(FLAGS_metrics_host);
  options.metrics_address = metrics_port < 0       ? ""
                            : metrics_host.empty() ? absl::StrCat(metrics_port)
                                                   : absl::StrCat(metrics_host, ":", metrics_port);
  if (const int http_port = absl::GetFlag(FLAGS_http_port); http_port >= 0) {
    const std::string host = absl::GetFlag(FLAGS_http_host).empty()
                                 ? absl::GetFlag(FLAGS_grpc_host)
                                 : absl::GetFlag(FLAGS_http_host);
    options.http_address = absl::StrCat(host, ":", http_port);
  }
  options.http_threads = absl::GetFlag(FLAGS_http_threads);
  options.http_timeout = absl::Seconds(absl::GetFlag(FLAGS_http_timeout_s));
  options.tls_cert_file = absl::GetFlag(FLAGS_tls_cert);
  options.tls_key_file = absl::GetFlag(FLAGS_tls_key);
  options.tls_client_ca_file = absl::GetFlag(FLAGS_tls_client_ca);
  options.auth_tokens_file = absl::GetFlag(FLAGS_auth_tokens_file);
  options.model_dir = absl::GetFlag(FLAGS_model_dir);
  options.cache_dir =
      absl::GetFlag(FLAGS_cache_dir).empty() ? DefaultCacheDir() : absl::GetFlag(FLAGS_cache_dir);
  options.adapters_dir = absl::GetFlag(FLAGS_adapters_dir).empty()
                             ? options.cache_dir + "/adapters"
                             : absl::GetFlag(FLAGS_adapters_dir);
  options.spam_demo = absl::GetFlag(FLAGS_spam_demo);
  options.base_head_adapter = absl::GetFlag(FLAGS_base_head_adapter);
  options.device = absl::GetFlag(FLAGS_device);
  options.dtype = absl::GetFlag(FLAGS_dtype);
  options.quantize = absl::GetFlag(FLAGS_quantize);
  options.threads = absl::GetFlag(FLAGS_threads);
  options.intra_op_threads = absl::GetFlag(FLAGS_intra_op_threads);
  options.parallel_rows = absl::GetFlag(FLAGS_parallel_rows);
  options.batcher.max_batch_size = absl::GetFlag(FLAGS_max_batch_size);
  options.batcher.max_queue_delay_us = absl::GetFlag(FLAGS_max_queue_delay_us);
  options.batcher.adaptive_delay_fraction = absl::GetFlag(FLAGS_adaptive_queue_delay);
  options.batcher.max_queued_rows = absl::GetFlag(FLAGS_max_queued_rows);
  options.batcher.num_batch_threads = absl::GetFlag(FLAGS_num_batch_threads);
  options.adapter_load_threads = absl::GetFlag(FLAGS_adapter_load_threads);
  options.adapter_memory_bytes = absl::GetFlag(FLAGS_adapter_memory_bytes);
  options.store_poll_interval = absl::Seconds(std::max(0.0, absl::GetFlag(FLAGS_store_poll_s)));
  options.store_inotify = absl::GetFlag(FLAGS_store_inotify);
  options.jobs_dir = absl::GetFlag(FLAGS_jobs_dir).empty() ? options.cache_dir + "/jobs"
                                                           : absl::GetFlag(FLAGS_jobs_dir);
  options.training_workers = absl::GetFlag(FLAGS_training_workers);
  options.training_threads = absl::GetFlag(FLAGS_training_threads);
  options.feedback.capacity = absl::GetFlag(FLAGS_feedback_capacity);
  options.feedback.ttl = absl::Seconds(absl::GetFlag(FLAGS_feedback_ttl_s));
  options.feedback.window = absl::GetFlag(FLAGS_feedback_window);
  loracle::util::SetVerbosity(absl::GetFlag(FLAGS_v));
  if (const std::string l = absl::GetFlag(FLAGS_minloglevel); l == "info") {
    loracle::util::SetMinLogLevel(loracle::util::LogSeverity::kInfo);
  } else if (l == "warning") {
    loracle::util::SetMinLogLevel(loracle::util::LogSeverity::kWarning);
  } else if (l == "error") {
    loracle::util::SetMinLogLevel(loracle::util::LogSeverity::kError);
  } else {
    std::fprintf(stderr, "loracle-server: --minloglevel must be info, warning or error, not '%s'\n",
                 l.c_str());
    return 2;
  }
  if (const std::string p = absl::GetFlag(FLAGS_training_priority); p == "idle" || p == "normal") {
    options.training_idle_priority = p == "idle";
  } else {
    std::fprintf(stderr, "loracle-server: --training_priority must be idle or normal, not '%s'\n",
                 p.c_str());
    return 2;
  }
  options.max_queued_jobs = absl::GetFlag(FLAGS_max_queued_jobs);
  options.training.data_dir = absl::GetFlag(FLAGS_data_dir);
  options.max_message_bytes = absl::GetFlag(FLAGS_max_message_bytes);
  options.inference.max_inputs_per_request = absl::GetFlag(FLAGS_max_inputs_per_request);
  options.inference.max_input_bytes = absl::GetFlag(FLAGS_max_input_bytes);
  options.inference.max_mc_samples = absl::GetFlag(FLAGS_max_mc_samples);
  options.inference.max_passes_per_request = absl::GetFlag(FLAGS_max_passes_per_request);
  options.inference.max_feedback_items = absl::GetFlag(FLAGS_max_feedback_items);
  options.training.limits.max_examples = absl::GetFlag(FLAGS_max_examples_per_job);
  options.training.limits.max_bytes = absl::GetFlag(FLAGS_max_dataset_bytes);
  options.training.limits.max_labels = absl::GetFlag(FLAGS_max_labels);
  options.training.limits.max_label_bytes = absl::GetFlag(FLAGS_max_label_bytes);
  options.training.max_members = absl::GetFlag(FLAGS_max_ensemble_members);
  options.training.max_mc_samples = absl::GetFlag(FLAGS_max_mc_samples);
  options.training.max_watch_streams = absl::GetFlag(FLAGS_max_watch_streams);

  absl::StatusOr<std::unique_ptr<loracle::app::LoracleServer>> server =
      loracle::app::LoracleServer::Create(options);
  if (!server.ok()) {
    std::fprintf(stderr, "loracle-server: %s\n", server.status().ToString().c_str());
    return 1;
  }
  std::fprintf(stderr,
               "loracle-server: gRPC on port %d, metrics on port %d, REST on port %d; loading "
               "model %s on %s (%s)\n",
               (*server)->grpc_port(), (*server)->metrics_port(), (*server)->http_port(),
               options.model_dir.empty() ? "(built-in)" : options.model_dir.c_str(),
               options.device.c_str(), options.dtype.c_str());
  const absl::Time start = absl::Now();
  if (absl::Status s = (*server)->WaitUntilReady(absl::InfiniteDuration()); !s.ok()) {
    std::fprintf(stderr, "loracle-server: cannot load the model: %s\n", s.ToString().c_str());
    (*server)->Shutdown(absl::ZeroDuration());
    return 1;
  }
  std::fprintf(stderr, "loracle-server: SERVING model %s (ready in %.2f s); adapters in %s\n",
               (*server)->model_dir().c_str(), absl::ToDoubleSeconds(absl::Now() - start),
               options.adapters_dir.c_str());

  int sig = 0;
  while (sigwait(&signals, &sig) == 0 && sig == SIGHUP) {
    if (absl::Status s = (*server)->ReloadAuthTokens(); s.ok()) {
      std::fprintf(stderr, "loracle-server: SIGHUP: reloaded %s\n",
                   options.auth_tokens_file.c_str());
    } else {
      std::fprintf(stderr, "loracle-server: SIGHUP: kept the previous tokens: %s\n",
                   s.ToString().c_str());
    }
  }
  std::fprintf(stderr, "loracle-server: %s received, draining in-flight calls\n",
               sig == SIGTERM ? "SIGTERM" : "SIGINT");
  (*server)->Shutdown(absl::Seconds(absl::GetFlag(FLAGS_shutdown_grace_s)));
  std::fprintf(stderr, "loracle-server: stopped\n");
  return 0;
}
