#include "server/metrics/metrics.h"

#include <prometheus/text_serializer.h>
#include <unistd.h>

#include <exception>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"

namespace loracle::metrics {
namespace {

const prometheus::Histogram::BucketBoundaries kLatencyBuckets = {
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};
const prometheus::Histogram::BucketBoundaries kRowBuckets = {1, 2, 4, 8, 16, 32, 64, 128, 256, 512};
const prometheus::Histogram::BucketBoundaries kProbBuckets = {0.1, 0.2, 0.3, 0.4,  0.5, 0.6,
                                                              0.7, 0.8, 0.9, 0.95, 0.99};
// ood_score: 1 is the adapter's validation 95th percentile.
const prometheus::Histogram::BucketBoundaries kOodBuckets = {0.25, 0.5, 0.75, 1, 1.25,
                                                             1.5,  2,   3,    5, 10};
const prometheus::Histogram::BucketBoundaries kPassBuckets = {1, 2, 4, 8, 16, 32, 64, 128, 256};
const prometheus::Histogram::BucketBoundaries kJobBuckets = {
    10, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400, 28800, 86400};
const prometheus::Histogram::BucketBoundaries kEntropyBuckets = {0.01, 0.05, 0.1, 0.2, 0.3, 0.4,
                                                                 0.5,  0.6,  0.7, 1.0, 1.5, 2.0};
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

struct AdapterSeries::Families {
  std::shared_ptr<prometheus::Registry> registry;  // owns the families
  prometheus::Family<prometheus::Counter>* predictions;
  prometheus::Family<prometheus::Counter>* abstained;
  prometheus::Family<prometheus::Histogram>* confidence;
  prometheus::Family<prometheus::Histogram>* mutual_information;
  prometheus::Family<prometheus::Histogram>* predictive_entropy;
  prometheus::Family<prometheus::Histogram>* ood_score;
  // Validation report and temperature of the version, in this order.
  std::vector<prometheus::Family<prometheus::Gauge>*> gauges;

  struct Live {
    int handles = 0;
    // The series, shared by every handle.
    prometheus::Counter* predictions = nullptr;
    prometheus::Counter* abstained = nullptr;
    prometheus::Histogram* confidence = nullptr;
    prometheus::Histogram* mutual_information = nullptr;
    prometheus::Histogram* predictive_entropy = nullptr;
    prometheus::Histogram* ood_score = nullptr;
    std::vector<prometheus::Gauge*> gauges;
  };
  absl::Mutex mu;
  // Series of one {adapter, version} exist while a handle does: prometheus-cpp's Add hands the
  // same series to equal labels, so they are removed with the last handle, never before.
  std::map<std::pair<std::string, int64_t>, Live> live ABSL_GUARDED_BY(mu);
};

AdapterSeries::~AdapterSeries() {
  absl::MutexLock lock(&families_->mu);
  auto it = families_->live.find(key_);
  if (it == families_->live.end() || --it->second.handles > 0) return;
  families_->predictions->Remove(predictions_);
  families_->abstained->Remove(abstained_);
  families_->confidence->Remove(confidence_);
  families_->mutual_information->Remove(mutual_information_);
  families_->predictive_entropy->Remove(predictive_entropy_);
  families_->ood_score->Remove(ood_score_);
  for (size_t i = 0; i < it->second.gauges.size(); ++i) {
    if (it->second.gauges[i] != nullptr) families_->gauges[i]->Remove(it->second.gauges[i]);
  }
  families_->live.erase(it);
}

void AdapterSeries::RecordPrediction(bool abstained, double confidence, double mutual_information,
                                     double predictive_entropy, double ood_score) {
  if (ood_score >= 0) ood_score_->Observe(ood_score);
  predictions_->Increment();
  if (abstained) abstained_->Increment();
  confidence_->Observe(confidence);
  mutual_information_->Observe(mutual_information);
  predictive_entropy_->Observe(predictive_entropy);
}

void MethodSeries::Record(int code, const char* code_name, double seconds) {
  if (code < 0 || code >= kCodes) code = 2, code_name = "UNKNOWN";
  prometheus::Counter* counter = by_code_[code].load(std::memory_order_acquire);
  if (counter == nullptr) {
    absl::MutexLock lock(&mu_);
    counter = by_code_[code].load(std::memory_order_relaxed);
    if (counter == nullptr) {
      counter = &requests_->Add({{"method", method_}, {"code", code_name}});
      by_code_[code].store(counter, std::memory_order_release);
    }
  }
  counter->Increment();
  latency_->Observe(seconds);
}

Metrics::Metrics(const Options& options)
    : registry_(std::make_shared<prometheus::Registry>()), started_(absl::Now()) {
  using namespace prometheus;  // NOLINT: builder DSL
  requests_ = &BuildCounter()
                   .Name("loracle_requests_total")
                   .Help("gRPC calls by method and status code")
                   .Register(*registry_);
  latency_ = &BuildHistogram()
                  .Name("loracle_request_latency_seconds")
                  .Help(
                      "gRPC call latency from arrival to Finish (queue wait + forward + the rest), "
                      "by method")
                  .Register(*registry_);
  auto families = std::make_shared<AdapterSeries::Families>();
  families->registry = registry_;
  families->predictions = &BuildCounter()
                               .Name("loracle_predictions_total")
                               .Help("Inputs classified, by adapter version")
                               .Register(*registry_);
  families->abstained =
      &BuildCounter()
           .Name("loracle_abstained_total")
           .Help(
               "Predictions flagged abstained (mutual information above the adapter's "
               "threshold), by adapter version")
           .Register(*registry_);
  families->confidence =
      &BuildHistogram()
           .Name("loracle_prediction_confidence")
           .Help("max of the ensemble-averaged probabilities, by adapter version")
           .Register(*registry_);
  families->mutual_information = &BuildHistogram()
                                      .Name("loracle_prediction_mutual_information")
                                      .Help("Epistemic uncertainty (nats), by adapter version")
                                      .Register(*registry_);
  families->predictive_entropy =
      &BuildHistogram()
           .Name("loracle_prediction_entropy")
           .Help("Predictive entropy of the averaged probabilities (nats), by adapter version")
           .Register(*registry_);
  families->ood_score =
      &BuildHistogram()
           .Name("loracle_prediction_ood_score")
           .Help(
               "How unlike the adapter's training inputs each input is (Uncertainty.ood_score; "
               "above 1 for about 5% of inputs like its validation data), by adapter version; "
               "only adapters with an OOD detector")
           .Register(*registry_);
  for (const auto& [name, help] : std::vector<std::pair<const char*, const char*>>{
           {"loracle_adapter_validation_accuracy",
            "Accuracy of the calibrated ensemble on the validation data it was trained with"},
           {"loracle_adapter_validation_ece",
            "Expected calibration error (15 bins) on its validation data"},
           {"loracle_adapter_validation_mce",
            "Maximum calibration error (15 bins) on its validation data"},
           {"loracle_adapter_validation_nll", "Negative log-likelihood on its validation data"},
           {"loracle_adapter_validation_brier", "Brier score on its validation data"},
           {"loracle_adapter_validation_examples", "Validation examples behind those gauges"},
           {"loracle_adapter_temperature", "Temperature applied to each pass's logits"}}) {
    families->gauges.push_back(&BuildGauge().Name(name).Help(help).Register(*registry_));
  }
  adapter_families_ = std::move(families);
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
  queue_seconds_ = &BuildHistogram()
                        .Name("loracle_queue_wait_seconds")
                        .Help("Time a Predict request waited in the batch queue")
                        .Register(*registry_)
                        .Add({}, kLatencyBuckets);
  request_passes_ = &BuildHistogram()
                         .Name("loracle_request_passes")
                         .Help("K = members x MC samples per Predict request")
                         .Register(*registry_)
                         .Add({}, kPassBuckets);
  queued_rows_ = &BuildGauge()
                      .Name("loracle_queued_rows")
                      .Help("Rows waiting in the batch queue")
                      .Register(*registry_)
                      .Add({});
  queued_requests_ = &BuildGauge()
                          .Name("loracle_queued_requests")
                          .Help("Requests waiting in the batch queue")
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
  auto& loads = BuildCounter()
                    .Name("loracle_adapter_loads_total")
                    .Help("Adapter version loads by result (ok, error)")
                    .Register(*registry_);
  loads_ok_ = &loads.Add({{"result", "ok"}});
  loads_failed_ = &loads.Add({{"result", "error"}});
  swaps_ = &BuildCounter()
                .Name("loracle_adapter_swaps_total")
                .Help("Loads that replaced a served version (hot swaps)")
                .Register(*registry_)
                .Add({});
  unloads_ = &BuildCounter()
                  .Name("loracle_adapter_unloads_total")
                  .Help("Adapter unloads")
                  .Register(*registry_)
                  .Add({});
  adapter_resident_bytes_ = &BuildGauge()
                                 .Name("loracle_adapter_resident_bytes")
                                 .Help(
                                     "Bytes of adapter weights held in memory (the budget is "
                                     "--adapter_memory_bytes)")
                                 .Register(*registry_)
                                 .Add({});
  evictions_ = &BuildCounter()
                    .Name("loracle_adapter_evictions_total")
                    .Help(
                        "Adapter versions evicted from memory to keep within "
                        "--adapter_memory_bytes (they stay READY and reload on request)")
                    .Register(*registry_)
                    .Add({});
  auto& reloads = BuildCounter()
                      .Name("loracle_adapter_reloads_total")
                      .Help("Evicted adapter versions reloaded for a request, by result")
                      .Register(*registry_);
  reloads_ok_ = &reloads.Add({{"result", "ok"}});
  reloads_failed_ = &reloads.Add({{"result", "error"}});
  reload_seconds_ = &BuildHistogram()
                         .Name("loracle_adapter_reload_seconds")
                         .Help("Time to reload one evicted adapter version (requests wait for it)")
                         .Register(*registry_)
                         .Add({}, kLatencyBuckets);
  load_seconds_ = &BuildHistogram()
                       .Name("loracle_adapter_load_seconds")
                       .Help("Time to read and prepare one adapter version")
                       .Register(*registry_)
                       .Add({}, kLatencyBuckets);
  job_seconds_ = &BuildHistogram()
                      .Name("loracle_training_job_duration_seconds")
                      .Help("Fine-tune jobs that ended, by final state: time from start to end")
                      .Register(*registry_);
  prometheus::Labels build = {{"version", "unknown"}};
  for (const auto& [key, value] : options.build_info) build[key] = value;
  BuildGauge()
      .Name("loracle_build_info")
      .Help("Always 1; the labels say what is running")
      .Register(*registry_)
      .Add(build)
      .Set(1);
}

Metrics::~Metrics() { exposer_.reset(); }  // stop scrapes before the families go

absl::StatusOr<std::unique_ptr<Metrics>> Metrics::Create(const Options& options) {
  std::unique_ptr<Metrics> m(new Metrics(options));
  if (!options.bind_address.empty()) {
    Metrics* raw = m.get();
    // Scrapes are small and rare: two workers, so one stalled client never delays another
    // scrape by more than its read timeout; request bodies are not expected at all.
    http::HttpServer::Options o;
    o.bind_address = options.bind_address;
    o.threads = 2;
    o.read_timeout = absl::Seconds(2);
    o.write_timeout = absl::Seconds(5);
    o.max_requests_per_connection = 1;  // a scrape every few seconds gains nothing from it
    o.max_body_bytes = 16 * 1024;
    absl::StatusOr<std::unique_ptr<http::HttpServer>> exposer =
        http::HttpServer::Create(o, {{"GET", "/metrics", [raw](const http::Request&) {
                                        http::Response r;
                                        r.content_type = "text/plain; version=0.0.4; charset=utf-8";
                                        r.body = raw->Scrape();
                                        return r;
                                      }}});
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

MethodSeries* Metrics::Method(const std::string& method) {
  absl::MutexLock lock(&mu_);
  std::unique_ptr<MethodSeries>& s = methods_[method];
  if (s == nullptr) {
    s.reset(
        new MethodSeries(requests_, method, &latency_->Add({{"method", method}}, kLatencyBuckets)));
  }
  return s.get();
}

std::shared_ptr<AdapterSeries> Metrics::NewAdapterSeries(const std::string& adapter,
                                                         int64_t version, double temperature,
                                                         const ValidationGauges* validation) {
  AdapterSeries::Families& f = *adapter_families_;
  std::shared_ptr<AdapterSeries> s(new AdapterSeries());
  s->families_ = adapter_families_;
  s->key_ = {adapter, version};
  absl::MutexLock lock(&f.mu);
  AdapterSeries::Families::Live& live = f.live[s->key_];
  if (live.handles++ == 0) {
    const prometheus::Labels labels = {{"adapter", adapter}, {"version", absl::StrCat(version)}};
    live.predictions = &f.predictions->Add(labels);
    live.abstained = &f.abstained->Add(labels);
    live.confidence = &f.confidence->Add(labels, kProbBuckets);
    live.mutual_information = &f.mutual_information->Add(labels, kMiBuckets);
    live.predictive_entropy = &f.predictive_entropy->Add(labels, kEntropyBuckets);
    live.ood_score = &f.ood_score->Add(labels, kOodBuckets);
    live.gauges.assign(f.gauges.size(), nullptr);
    if (validation != nullptr && validation->examples > 0) {
      const double values[] = {validation->accuracy, validation->ece,
                               validation->mce,      validation->nll,
                               validation->brier,    static_cast<double>(validation->examples)};
      for (size_t i = 0; i < 6; ++i) {
        live.gauges[i] = &f.gauges[i]->Add(labels);
        live.gauges[i]->Set(values[i]);
      }
    }
    live.gauges.back() = &f.gauges.back()->Add(labels);
    live.gauges.back()->Set(temperature);
  }
  s->predictions_ = live.predictions;
  s->abstained_ = live.abstained;
  s->confidence_ = live.confidence;
  s->mutual_information_ = live.mutual_information;
  s->predictive_entropy_ = live.predictive_entropy;
  s->ood_score_ = live.ood_score;
  return s;
}

void Metrics::RecordBatch(int64_t rows, int64_t requests, double forward_seconds) {
  batch_rows_->Observe(static_cast<double>(rows));
  batch_requests_->Observe(static_cast<double>(requests));
  forward_seconds_->Observe(forward_seconds);
}

void Metrics::RecordDequeued(double queue_seconds, int passes) {
  queue_seconds_->Observe(queue_seconds);
  request_passes_->Observe(passes);
}

void Metrics::SetQueued(int64_t requests, int64_t rows) {
  queued_requests_->Set(static_cast<double>(requests));
  queued_rows_->Set(static_cast<double>(rows));
}

void Metrics::SetModelReady(bool ready) { model_ready_->Set(ready ? 1 : 0); }

void Metrics::SetAdaptersReady(int count) { adapters_ready_->Set(count); }

void Metrics::RecordAdapterLoad(bool ok, bool swap, double seconds) {
  (ok ? loads_ok_ : loads_failed_)->Increment();
  if (ok && swap) swaps_->Increment();
  load_seconds_->Observe(seconds);
}

void Metrics::RecordAdapterUnload() { unloads_->Increment(); }

void Metrics::RecordAdapterEvictions(int count) {
  if (count > 0) evictions_->Increment(count);
}

void Metrics::RecordAdapterReload(bool ok, double seconds) {
  (ok ? reloads_ok_ : reloads_failed_)->Increment();
  reload_seconds_->Observe(seconds);
}

void Metrics::SetAdapterResidentBytes(int64_t bytes) {
  adapter_resident_bytes_->Set(static_cast<double>(bytes));
}

void Metrics::RecordJobEnded(const std::string& state, double seconds) {
  prometheus::Histogram* h;
  {
    absl::MutexLock lock(&mu_);
    prometheus::Histogram*& series = job_series_[state];
    if (series == nullptr) series = &job_seconds_->Add({{"state", state}}, kJobBuckets);
    h = series;
  }
  h->Observe(seconds);
}

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
  for (prometheus::MetricFamily& f : ProcessFamilies(started_)) families.push_back(std::move(f));
  for (const Collector& c : collectors) {
    for (prometheus::MetricFamily& f : c()) families.push_back(std::move(f));
  }
  return prometheus::TextSerializer().Serialize(families);
}

std::vector<prometheus::MetricFamily> ProcessFamilies(absl::Time started) {
  std::vector<prometheus::MetricFamily> out;
  auto gauge = [&out](const char* name, const char* help, double value) {
    out.push_back(GaugeFamily(name, help, "", std::map<std::string, double>{{"", value}}));
  };
  // /proc/self/stat: fields after the command's closing paren; utime, stime (14, 15), threads
  // (20), rss pages (24).
  std::ifstream stat("/proc/self/stat");
  std::string line;
  if (std::getline(stat, line)) {
    const size_t paren = line.rfind(')');
    std::istringstream fields(paren == std::string::npos ? "" : line.substr(paren + 2));
    std::vector<std::string> f{std::istream_iterator<std::string>(fields),
                               std::istream_iterator<std::string>()};
    // f[0] is field 3 (state).
    if (f.size() > 21) {
      const double tick = static_cast<double>(::sysconf(_SC_CLK_TCK));
      const double page = static_cast<double>(::sysconf(_SC_PAGESIZE));
      prometheus::MetricFamily cpu;
      cpu.name = "process_cpu_seconds_total";
      cpu.help = "User and system CPU time spent in seconds";
      cpu.type = prometheus::MetricType::Counter;
      prometheus::ClientMetric m;
      m.counter.value = (std::stod(f[11]) + std::stod(f[12])) / tick;
      cpu.metric.push_back(m);
      out.push_back(std::move(cpu));
      gauge("process_threads", "Threads of the process", std::stod(f[17]));
      gauge("process_resident_memory_bytes", "Resident memory size in bytes",
            std::stod(f[21]) * page);
    }
  }
  std::error_code ec;
  int fds = 0;
  for (auto it = std::filesystem::directory_iterator("/proc/self/fd", ec);
       !ec && it != std::filesystem::directory_iterator(); it.increment(ec)) {
    ++fds;
  }
  if (!ec) gauge("process_open_fds", "Open file descriptors", fds);
  gauge("process_start_time_seconds", "Start time of the process since the Unix epoch in seconds",
        absl::ToDoubleSeconds(started - absl::UnixEpoch()));
  return out;
}

}  // namespace loracle::metrics
