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

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "server/metrics/http_exposer.h"

namespace loracle::metrics {

// A gauge family with one series per entry of `values`, labelled `label`=key (no label when
// `label` is empty: one series, the first value). For collectors.
prometheus::MetricFamily GaugeFamily(const std::string& name, const std::string& help,
                                     const std::string& label,
                                     const std::map<std::string, double>& values);
prometheus::MetricFamily GaugeFamily(const std::string& name, const std::string& help,
                                     const std::string& label,
                                     const std::map<std::string, int64_t>& values);

class Metrics {
 public:
  struct Options {
    // "PORT" or "HOST:PORT" for the /metrics HTTP endpoint (port 0 = any free port); empty = no
    // endpoint (Scrape() still works).
    std::string bind_address;
  };
  // UNAVAILABLE when the address cannot be bound.
  static absl::StatusOr<std::unique_ptr<Metrics>> Create(const Options& options);
  ~Metrics();

  int port() const;  // the bound port, 0 without an endpoint

  // Stops the /metrics endpoint, waiting for a scrape in progress. For the owner's teardown, before
  // what the collectors read goes away; not concurrent with port().
  void StopEndpoint();

  void RecordRpc(const std::string& method, const std::string& code, double seconds)
      ABSL_LOCKS_EXCLUDED(mu_);
  void RecordBatch(int64_t rows, int64_t requests, double forward_seconds);
  void SetQueuedRows(int64_t rows);
  void RecordPrediction(const std::string& adapter, bool abstained, double confidence,
                        double mutual_information) ABSL_LOCKS_EXCLUDED(mu_);
  void SetModelReady(bool ready);
  void SetAdaptersReady(int count);

  // Families built afresh at every scrape, after the registry's: for series that exist only while
  // their source does (per adapter version online calibration). Called on the scraping thread.
  using Collector = std::function<std::vector<prometheus::MetricFamily>()>;
  void AddCollector(Collector collector) ABSL_LOCKS_EXCLUDED(mu_);

  // The current text exposition (what /metrics serves).
  std::string Scrape() const ABSL_LOCKS_EXCLUDED(mu_);

 private:
  Metrics();
  using Key = std::pair<std::string, std::string>;

  std::shared_ptr<prometheus::Registry> registry_;
  std::unique_ptr<HttpExposer> exposer_;
  prometheus::Family<prometheus::Counter>* requests_;
  prometheus::Family<prometheus::Histogram>* latency_;
  prometheus::Family<prometheus::Counter>* predictions_;
  prometheus::Family<prometheus::Counter>* abstained_;
  prometheus::Family<prometheus::Histogram>* confidence_;
  prometheus::Family<prometheus::Histogram>* mutual_information_;
  prometheus::Histogram* batch_rows_;
  prometheus::Histogram* batch_requests_;
  prometheus::Histogram* forward_seconds_;
  prometheus::Gauge* queued_rows_;
  prometheus::Gauge* model_ready_;
  prometheus::Gauge* adapters_ready_;

  mutable absl::Mutex mu_;
  std::vector<Collector> collectors_ ABSL_GUARDED_BY(mu_);
  std::map<Key, prometheus::Counter*> request_series_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, prometheus::Histogram*> latency_series_ ABSL_GUARDED_BY(mu_);
  struct AdapterSeries {
    prometheus::Counter* predictions;
    prometheus::Counter* abstained;
    prometheus::Histogram* confidence;
    prometheus::Histogram* mutual_information;
  };
  std::map<std::string, AdapterSeries> adapter_series_ ABSL_GUARDED_BY(mu_);
};

}  // namespace loracle::metrics

#endif  // LORACLE_SERVER_METRICS_METRICS_H_
