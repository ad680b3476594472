#ifndef LORACLE_SERVER_METRICS_METRICS_H_
#define LORACLE_SERVER_METRICS_METRICS_H_

// One prometheus-cpp registry for the whole server. Families are built once in Create; labelled
// series are cached, so recording is a map lookup and an atomic add.
//
// Thread-safety: every method may be called from any thread (the gRPC reactors, batch threads,
// load threads and the /metrics thread all do). Never blocks beyond a short map lookup.

#include <prometheus/counter.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include <array>
#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "server/calibration/calibration_report.h"
#include "server/http/http_server.h"

namespace loracle::metrics {

// A gauge family with one series per entry of `values`, labelled `label`=key (no label when
// `label` is empty: one series, the first value). For collectors.
prometheus::MetricFamily GaugeFamily(const std::string& name, const std::string& help,
                                     const std::string& label,
                                     const std::map<std::string, double>& values);
prometheus::MetricFamily GaugeFamily(const std::string& name, const std::string& help,
                                     const std::string& label,
                                     const std::map<std::string, int64_t>& values);

class Metrics;

// The series of one gRPC method: calls by status code (each code's series created on its first
// use) and latency from arrival to Finish. Owned by Metrics; cache the pointer (Metrics::Method)
// so that recording a call looks nothing up. Thread-safe.
class MethodSeries {
 public:
  static constexpr int kCodes = 17;  // grpc::StatusCode OK .. UNAUTHENTICATED
  // `code` is the canonical code's number; `code_name` its upper-case name (used once per code).
  void Record(int code, const char* code_name, double seconds) ABSL_LOCKS_EXCLUDED(mu_);

 private:
  friend class Metrics;
  MethodSeries(prometheus::Family<prometheus::Counter>* requests, std::string method,
               prometheus::Histogram* latency)
      : requests_(requests), method_(std::move(method)), latency_(latency) {}

  prometheus::Family<prometheus::Counter>* const requests_;
  const std::string method_;
  prometheus::Histogram* const latency_;
  absl::Mutex mu_;  // creating a code's series
  std::array<std::atomic<prometheus::Counter*>, kCodes> by_code_{};
};

// What a published adapter version measured on its validation data (the calibrated ensemble's
// report; `examples` == 0: none, e.g. trained elsewhere).
using ValidationGauges = calibration::CalibrationReport;

// The series of one loaded adapter version, labelled {adapter, version}: predictions,
// abstentions, confidence / mutual information / predictive entropy histograms, and its
// validation report and temperature as gauges. Created when the version loads and held by it
// (adapters::Adapter::series), so the request path records without a lookup; the destructor
// removes them from the exposition once the last handle on that {adapter, version} goes, so the
// label set follows the versions loaded. Thread-safe; may outlive the Metrics that made it.
class AdapterSeries {
 public:
  ~AdapterSeries();
  AdapterSeries(const AdapterSeries&) = delete;
  AdapterSeries& operator=(const AdapterSeries&) = delete;

  // `ood_score` < 0: the adapter has no OOD detector (nothing observed).
  void RecordPrediction(bool abstained, double confidence, double mutual_information,
                        double predictive_entropy, double ood_score = -1);

 private:
  friend class Metrics;
  struct Families;  // the families and a count of handles per {adapter, version} (metrics.cc)
  AdapterSeries() = default;

  std::shared_ptr<Families> families_;
  std::pair<std::string, int64_t> key_;
  prometheus::Counter* predictions_ = nullptr;
  prometheus::Counter* abstained_ = nullptr;
  prometheus::Histogram* confidence_ = nullptr;
  prometheus::Histogram* mutual_information_ = nullptr;
  prometheus::Histogram* predictive_entropy_ = nullptr;
  prometheus::Histogram* ood_score_ = nullptr;
};

class Metrics {
 public:
  struct Options {
    // "PORT" or "HOST:PORT" for the /metrics HTTP endpoint (port 0 = any free port); empty = no
    // endpoint (Scrape() still works).
    std::string bind_address;
    // Labels of loracle_build_info (version, git_commit, torch_version, device, ...).
    std::map<std::string, std::string> build_info;
  };
  // UNAVAILABLE when the address cannot be bound.
  static absl::StatusOr<std::unique_ptr<Metrics>> Create(const Options& options);
  ~Metrics();

  int port() const;  // the bound port, 0 without an endpoint

  // Stops the /metrics endpoint, waiting for a scrape in progress. For the owner's teardown, before
  // what the collectors read goes away; not concurrent with port().
  void StopEndpoint();

  // The series of `method` (a gRPC method name), created on the first call; valid as long as this.
  MethodSeries* Method(const std::string& method) ABSL_LOCKS_EXCLUDED(mu_);
  // Series for a version as it loads (see AdapterSeries). `validation` may be null.
  std::shared_ptr<AdapterSeries> NewAdapterSeries(const std::string& adapter, int64_t version,
                                                  double temperature,
                                                  const ValidationGauges* validation);

  // Serving.
  void RecordBatch(int64_t rows, int64_t requests, double forward_seconds);
  // One request taken from the queue into a batch: its wait, and its K = members x samples.
  void RecordDequeued(double queue_seconds, int passes);
  void SetQueued(int64_t requests, int64_t rows);
  void SetModelReady(bool ready);
  void SetAdaptersReady(int count);
  // The adapter registry: a load attempt (a swap when it replaced a served version), an unload.
  void RecordAdapterLoad(bool ok, bool swap, double seconds);
  void RecordAdapterUnload();
  // The memory budget (--adapter_memory_bytes): versions evicted, an evicted version reloaded on
  // request (its result and time), the bytes of adapter weights resident.
  void RecordAdapterEvictions(int count);
  void RecordAdapterReload(bool ok, double seconds);
  void SetAdapterResidentBytes(int64_t bytes);
  // Training: a job that ended in `state` (SUCCEEDED, FAILED, CANCELLED) after running `seconds`.
  void RecordJobEnded(const std::string& state, double seconds) ABSL_LOCKS_EXCLUDED(mu_);

  // Families built afresh at every scrape, after the registry's: for series that exist only while
  // their source does (per adapter version online calibration). Called on the scraping thread.
  using Collector = std::function<std::vector<prometheus::MetricFamily>()>;
  void AddCollector(Collector collector) ABSL_LOCKS_EXCLUDED(mu_);

  // The current text exposition (what /metrics serves).
  std::string Scrape() const ABSL_LOCKS_EXCLUDED(mu_);

 private:
  explicit Metrics(const Options& options);

  std::shared_ptr<prometheus::Registry> registry_;
  // /metrics over cpp-httplib. Not prometheus::Exposer: the civetweb 1.15 it wraps starts its
  // worker threads with a fixed 102,400-byte stack (USE_STACK_SIZE), and glibc places a
  // thread's static TLS inside its stack; the libraries a loracle-server loads need 108,498 bytes
  // of static TLS (OpenBLAS 61,440, glog 30,457, libtorch_cpu 9,777, ...), so pthread_create
  // fails with EINVAL: "Cannot create first worker thread" (README, Metrics).
  std::unique_ptr<http::HttpServer> exposer_;
  std::shared_ptr<AdapterSeries::Families> adapter_families_;
  prometheus::Family<prometheus::Counter>* requests_;
  prometheus::Family<prometheus::Histogram>* latency_;
  prometheus::Histogram* batch_rows_;
  prometheus::Histogram* batch_requests_;
  prometheus::Histogram* forward_seconds_;
  prometheus::Histogram* queue_seconds_;
  prometheus::Histogram* request_passes_;
  prometheus::Gauge* queued_rows_;
  prometheus::Gauge* queued_requests_;
  prometheus::Gauge* model_ready_;
  prometheus::Gauge* adapters_ready_;
  prometheus::Gauge* adapter_resident_bytes_;
  prometheus::Counter* evictions_;
  prometheus::Counter* reloads_ok_;
  prometheus::Counter* reloads_failed_;
  prometheus::Histogram* reload_seconds_;
  prometheus::Counter* loads_ok_;
  prometheus::Counter* loads_failed_;
  prometheus::Counter* swaps_;
  prometheus::Counter* unloads_;
  prometheus::Histogram* load_seconds_;
  prometheus::Family<prometheus::Histogram>* job_seconds_;
  const absl::Time started_;

  mutable absl::Mutex mu_;
  std::vector<Collector> collectors_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, std::unique_ptr<MethodSeries>> methods_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, prometheus::Histogram*> job_series_ ABSL_GUARDED_BY(mu_);
};

// The process's own series, read from /proc/self at each scrape: resident memory, threads, CPU
// seconds, open file descriptors, start time (Prometheus's process_* names).
std::vector<prometheus::MetricFamily> ProcessFamilies(absl::Time started);

}  // namespace loracle::metrics

#endif  // LORACLE_SERVER_METRICS_METRICS_H_
