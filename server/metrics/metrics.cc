#include "server/metrics/metrics.h"

#include <prometheus/text_serializer.h>

#include <exception>

#include "absl/strings/str_cat.h"

namespace loracle::metrics {
namespace {

const prometheus::Histogram::BucketBoundaries kLatencyBuckets = {
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};
const prometheus::Histogram::BucketBoundaries kRowBuckets = {1, 2, 4, 8, 16, 32, 64, 128, 256, 512};
const prometheus::Histogram::BucketBoundaries kProbBuckets = {0.1, 0.2, 0.3, 0.4,  0.5, 0.6,
                                                              0.7, 0.8, 0.9, 0.95, 0.99};
const prometheus::Histogram::BucketBoundaries kMiBuckets = {0.001, 0.005, 0.01, 0.025, 0.05,
                                                            0.1,   0.2,   0.3,  0.5,   0.7};

}  // namespace

prometheus::MetricFamily GaugeFamily(const std::string& name, const std::string& help,
                                     const std::string& label,
                                     const std::map<std::string, double>& values) {
  prometheus::MetricFamily f;
  f.name = name;
  f.help = help;
  f.type = prometheus::MetricType::Gauge;
  for (const auto& [key, value] : values) {
    prometheus::ClientMetric m;
    if (!label.empty()) {
      prometheus::ClientMetric::Label l;
      l.name = label;
      l.value = key;
      m.label.push_back(l);
    }
    m.gauge.value = value;
    f.metric.push_back(std::move(m));
    if (label.empty()) break;
  }
  return f;
}

prometheus::MetricFamily GaugeFamily(const std::string& name, const std::string& help,
                                     const std::string& label,
                                     const std::map<std::string, int64_t>& values) {
  std::map<std::string, double> d;
  for (const auto& [key, value] : values) d[key] = static_cast<double>(value);
  return GaugeFamily(name, help, label, d);
}

Metrics::Metrics() : registry_(std::make_shared<prometheus::Registry>()) {
  using namespace prometheus;  // NOLINT: builder DSL
  requests_ = &BuildCounter()
                   .Name("loracle_requests_total")
                   .Help("gRPC calls by method and status code")
                   .Register(*registry_);
  latency_ = &BuildHistogram()
                  .Name("loracle_request_latency_seconds")
                  .Help("gRPC call latency from arrival to Finish, by method")
                  .Register(*registry_);
  predictions_ = &BuildCounter()
                      .Name("loracle_predictions_total")
                      .Help("Inputs classified, by adapter")
                      .Register(*registry_);
  abstained_ = &BuildCounter()
                    .Name("loracle_abstained_total")
                    .Help("Predictions flagged abstained (uncertainty above threshold), by adapter")
                    .Register(*registry_);
  confidence_ = &BuildHistogram()
                     .Name("loracle_prediction_confidence")
                     .Help("max of the ensemble-averaged probabilities, by adapter")
                     .Register(*registry_);
  mutual_information_ = &BuildHistogram()
                             .Name("loracle_prediction_mutual_information")
                             .Help("Epistemic uncertainty (nats), by adapter")
                             .Register(*registry_);
  batch_rows_ = &BuildHistogram()
                     .Name("loracle_batch_rows")
                     .Help("Rows (inputs x members x samples) per forward pass")
                     .Register(*registry_)
                     .Add({}, kRowBuckets);
  batch_requests_ = &BuildHistogram()
                         .Name("loracle_batch_requests")
                         .Help("Requests per forward pass")
                         .Register(*registry_)
                         .Add({}, kRowBuckets);
  forward_seconds_ = &BuildHistogram()
                          .Name("loracle_forward_seconds")
                          .Help("Time of one batched forward pass")
                          .Register(*registry_)
                          .Add({}, kLatencyBuckets);
  queued_rows_ = &BuildGauge()
                      .Name("loracle_queued_rows")
                      .Help("Rows waiting in the batch queue")
                      .Register(*registry_)
                      .Add({});
  model_ready_ = &BuildGauge()
                      .Name("loracle_model_ready")
                      .Help("1 once the base model is loaded and the server is SERVING")
                      .Register(*registry_)
                      .Add({});
  adapters_ready_ = &BuildGauge()
                         .Name("loracle_adapters_ready")
                         .Help("Adapters in state READY")
                         .Register(*registry_)
                         .Add({});
}

Metrics::~Metrics() { exposer_.reset(); }  // stop scrapes before the families go

absl::StatusOr<std::unique_ptr<Metrics>> Metrics::Create(const Options& options) {
  std::unique_ptr<Metrics> m(new Metrics());
  if (!options.bind_address.empty()) {
    Metrics* raw = m.get();
    absl::StatusOr<std::unique_ptr<HttpExposer>> exposer =
        HttpExposer::Create(options.bind_address, [raw] { return raw->Scrape(); });
    if (!exposer.ok()) return exposer.status();
    m->exposer_ = *std::move(exposer);
  }
  return m;
}

void Metrics::StopEndpoint() { exposer_.reset(); }

int Metrics::port() const {
  if (exposer_ == nullptr) return 0;
  return exposer_->port();
}

void Metrics::RecordRpc(const std::string& method, const std::string& code, double seconds) {
  prometheus::Counter* counter;
  prometheus::Histogram* histogram;
  {
    absl::MutexLock lock(&mu_);
    auto& c = request_series_[{method, code}];
    if (c == nullptr) c = &requests_->Add({{"method", method}, {"code", code}});
    counter = c;
    auto& h = latency_series_[method];
    if (h == nullptr) h = &latency_->Add({{"method", method}}, kLatencyBuckets);
    histogram = h;
  }
  counter->Increment();
  histogram->Observe(seconds);
}

void Metrics::RecordBatch(int64_t rows, int64_t requests, double forward_seconds) {
  batch_rows_->Observe(static_cast<double>(rows));
  batch_requests_->Observe(static_cast<double>(requests));
  forward_seconds_->Observe(forward_seconds);
}

void Metrics::SetQueuedRows(int64_t rows) { queued_rows_->Set(static_cast<double>(rows)); }

void Metrics::RecordPrediction(const std::string& adapter, bool abstained, double confidence,
                               double mutual_information) {
  AdapterSeries s;
  {
    absl::MutexLock lock(&mu_);
    auto it = adapter_series_.find(adapter);
    if (it == adapter_series_.end()) {
      const prometheus::Labels labels = {{"adapter", adapter}};
      it = adapter_series_
               .emplace(adapter, AdapterSeries{&predictions_->Add(labels), &abstained_->Add(labels),
                                               &confidence_->Add(labels, kProbBuckets),
                                               &mutual_information_->Add(labels, kMiBuckets)})
               .first;
    }
    s = it->second;
  }
  s.predictions->Increment();
  if (abstained) s.abstained->Increment();
  s.confidence->Observe(confidence);
  s.mutual_information->Observe(mutual_information);
}

void Metrics::SetModelReady(bool ready) { model_ready_->Set(ready ? 1 : 0); }

void Metrics::SetAdaptersReady(int count) { adapters_ready_->Set(count); }

void Metrics::AddCollector(Collector collector) {
  absl::MutexLock lock(&mu_);
  collectors_.push_back(std::move(collector));
}

std::string Metrics::Scrape() const {
  std::vector<prometheus::MetricFamily> families = registry_->Collect();
  std::vector<Collector> collectors;
  {
    absl::MutexLock lock(&mu_);
    collectors = collectors_;
  }
  for (const Collector& c : collectors) {
    for (prometheus::MetricFamily& f : c()) families.push_back(std::move(f));
  }
  return prometheus::TextSerializer().Serialize(families);
}

}  // namespace loracle::metrics
