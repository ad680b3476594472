#include "client/bench.h"

#include <httplib.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <thread>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "loracle/v1/inference.grpc.pb.h"
#include "nlohmann/json.hpp"

namespace loracle::client {
namespace {

// Ordinary English words, one WordPiece token each in the built-in vocabulary.
std::string Text(int tokens, int variant) {
  static const char* kWords[] = {"the",     "meeting", "is",     "about",    "free",    "money",
                                 "please",  "review",  "the",    "attached", "invoice", "before",
                                 "friday",  "and",     "we",     "will",     "send",    "you",
                                 "a",       "new",     "offer",  "today",    "for",     "your",
                                 "account", "thanks",  "update", "on",       "project", "schedule"};
  constexpr int kCount = sizeof(kWords) / sizeof(kWords[0]);
  std::string s;
  for (int i = 0; i < std::max(1, tokens - 2); ++i) {
    if (!s.empty()) s += ' ';
    s += kWords[(i * 7 + variant) % kCount];
  }
  return s;
}

// The q-quantile of ascending `sorted` (nearest rank); 0 when empty.
double Percentile(const std::vector<double>& sorted, double q) {
  if (sorted.empty()) return 0.0;
  const size_t i = static_cast<size_t>(std::ceil(q * static_cast<double>(sorted.size()))) - 1;
  return sorted[std::min(i, sorted.size() - 1)];
}

class Recorder {
 public:
  Recorder(absl::Time measure_from, absl::Time measure_to) : from_(measure_from), to_(measure_to) {}
  // `variants`: the Text variant of each input of the request.
  void Record(absl::Time start, const grpc::Status& s, const loracle::v1::PredictRequest& req,
              const loracle::v1::PredictResponse& resp, const std::vector<int>& variants,
              bool check_versions) {
    // A completion inside the window counts, as in perf_analyzer: throughput = completions /
    // window.
    const absl::Time end = absl::Now();
    absl::MutexLock lock(&mu_);
    if (check_versions && s.ok()) CheckVersion(req, resp, variants);
    if (end < from_ || end > to_) return;
    if (s.ok()) {
      ++result_.ok;
      latencies_ms_.push_back(absl::ToDoubleMilliseconds(end - start));
      for (const auto& p : resp.predictions()) {
        tokens_ += p.num_tokens();
        ++inputs_;
      }
    } else {
      ++result_.errors[CodeName(s)];
    }
  }
  void RecordFeedback(const grpc::Status& s) {
    absl::MutexLock lock(&mu_);
    if (s.ok()) {
      ++result_.feedback_ok;
    } else {
      ++result_.feedback_errors[CodeName(s)];
    }
  }
  void CheckVersion(const loracle::v1::PredictRequest& req,
                    const loracle::v1::PredictResponse& resp, const std::vector<int>& variants)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    ++result_.versions[resp.version()];
    auto& by_variant = result_.version_probs[req.adapter()][resp.version()];
    bool consistent = true;
    for (int i = 0; i < resp.predictions_size() && i < static_cast<int>(variants.size()); ++i) {
      const auto& probs = resp.predictions(i).probs();
      auto [it, first] = by_variant.try_emplace(variants[i], probs.begin(), probs.end());
      if (first) continue;
      if (it->second.size() != static_cast<size_t>(probs.size())) {
        consistent = false;
        continue;
      }
      for (int k = 0; k < probs.size(); ++k) {
        if (std::abs(it->second[k] - probs[k]) > 1e-5f) consistent = false;
      }
    }
    if (!consistent) ++result_.inconsistent;
  }
  BenchResult Finish(double seconds) {
    absl::MutexLock lock(&mu_);
    BenchResult r = result_;
    r.seconds = seconds;
    r.requests_per_s = static_cast<double>(r.ok) / seconds;
    r.inputs_per_s = static_cast<double>(inputs_) / seconds;
    r.mean_tokens = inputs_ > 0 ? static_cast<double>(tokens_) / static_cast<double>(inputs_) : 0;
    std::sort(latencies_ms_.begin(), latencies_ms_.end());
    r.p50_ms = Percentile(latencies_ms_, 0.50);
    r.p90_ms = Percentile(latencies_ms_, 0.90);
    r.p99_ms = Percentile(latencies_ms_, 0.99);
    r.max_ms = latencies_ms_.empty() ? 0 : latencies_ms_.back();
    double sum = 0;
    for (double v : latencies_ms_) sum += v;
    r.mean_ms = latencies_ms_.empty() ? 0 : sum / latencies_ms_.size();
    return r;
  }

 private:
  const absl::Time from_, to_;
  absl::Mutex mu_;
  BenchResult result_ ABSL_GUARDED_BY(mu_);
  std::vector<double> latencies_ms_ ABSL_GUARDED_BY(mu_);
  int64_t tokens_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t inputs_ ABSL_GUARDED_BY(mu_) = 0;
};

// One Predict in flight; deletes itself when done and calls `next` (which may start another).
struct Call {
  grpc::ClientContext ctx;
  loracle::v1::PredictRequest req;
  loracle::v1::PredictResponse resp;
  absl::Time start;
  std::vector<int> variants;  // Text variant of each input
};

struct FeedbackCall {
  grpc::ClientContext ctx;
  loracle::v1::FeedbackRequest req;
  loracle::v1::FeedbackResponse resp;
};

}  // namespace

namespace {

grpc::StatusCode CodeForHttp(int status) {
  switch (status) {
    case 200:
      return grpc::StatusCode::OK;
    case 400:
      return grpc::StatusCode::INVALID_ARGUMENT;
    case 401:
      return grpc::StatusCode::UNAUTHENTICATED;
    case 403:
      return grpc::StatusCode::PERMISSION_DENIED;
    case 404:
      return grpc::StatusCode::NOT_FOUND;
    case 429:
      return grpc::StatusCode::RESOURCE_EXHAUSTED;
    case 503:
      return grpc::StatusCode::UNAVAILABLE;
    case 504:
      return grpc::StatusCode::DEADLINE_EXCEEDED;
    default:
      return grpc::StatusCode::UNKNOWN;
  }
}

// The REST reply's fields the recorder reads, as a PredictResponse.
void FromRest(const nlohmann::json& j, loracle::v1::PredictResponse* out) {
  int64_t version = 0;
  absl::SimpleAtoi(j.value("model_version", "0"), &version);
  out->set_version(version);
  const nlohmann::json* probs = nullptr;
  const nlohmann::json* tokens = nullptr;
  for (const nlohmann::json& o : j["outputs"]) {
    if (o["name"] == "probabilities") probs = &o;
    if (o["name"] == "num_tokens") tokens = &o;
  }
  if (probs == nullptr || tokens == nullptr) return;
  const size_t n = (*tokens)["data"].size();
  const size_t c = n > 0 ? (*probs)["data"].size() / n : 0;
  for (size_t i = 0; i < n; ++i) {
    loracle::v1::Prediction* p = out->add_predictions();
    p->set_num_tokens((*tokens)["data"][i].get<uint32_t>());
    for (size_t k = 0; k < c; ++k) p->add_probs((*probs)["data"][i * c + k].get<float>());
  }
}

BenchResult RunRestBench(const BenchOptions& o) {
  const absl::Time begin = absl::Now();
  const absl::Time measure_from = begin + absl::Seconds(o.warmup_s);
  const absl::Time stop_at = measure_from + absl::Seconds(o.duration_s);
  Recorder recorder(measure_from, stop_at);
  std::atomic<int64_t> sequence{0};
  const size_t colon = o.rest_address.rfind(':');
  const std::string host = o.rest_address.substr(0, colon);
  int port = 0;
  absl::SimpleAtoi(o.rest_address.substr(colon + 1), &port);
  std::vector<std::thread> clients;
  for (int c = 0; c < o.concurrency; ++c) {
    clients.emplace_back([&] {
      httplib::Client http(host, port);
      http.set_keep_alive(true);
      http.set_read_timeout(std::chrono::milliseconds(o.timeout_ms));
      while (absl::Now() < stop_at) {
        const int64_t n = sequence.fetch_add(1);
        loracle::v1::PredictRequest req;
        req.set_adapter(o.adapters[static_cast<size_t>(n) % o.adapters.size()]);
        std::vector<int> variants;
        nlohmann::json texts = nlohmann::json::array();
        for (int i = 0; i < o.inputs_per_request; ++i) {
          variants.push_back(static_cast<int>((n + i) % 30));
          texts.push_back(Text(o.input_tokens, variants.back()));
        }
        nlohmann::json body = {{"inputs",
                                {{{"name", "text"},
                                  {"datatype", "BYTES"},
                                  {"shape", {o.inputs_per_request}},
                                  {"data", texts}}}}};
        if (o.mc_samples > 0) body["parameters"] = {{"mc_samples", o.mc_samples}};
        const absl::Time start = absl::Now();
        auto res = http.Post(absl::StrCat("/v2/models/", req.adapter(), "/infer"), body.dump(),
                             "application/json");
        loracle::v1::PredictResponse resp;
        grpc::Status status;
        if (!res) {
          status = grpc::Status(grpc::StatusCode::UNAVAILABLE, httplib::to_string(res.error()));
        } else if (res->status != 200) {
          status = grpc::Status(CodeForHttp(res->status), res->body);
        } else {
          const nlohmann::json j = nlohmann::json::parse(res->body, nullptr, false);
          if (j.is_discarded() || !j.contains("outputs")) {
            status = grpc::Status(grpc::StatusCode::INTERNAL, "unparsable reply");
          } else {
            FromRest(j, &resp);
          }
        }
        recorder.Record(start, status, req, resp, variants, o.check_versions);
      }
    });
  }
  for (std::thread& t : clients) t.join();
  return recorder.Finish(o.duration_s);
}

}  // namespace

BenchResult RunBench(const std::shared_ptr<grpc::Channel>& channel, const BenchOptions& o) {
  if (!o.rest_address.empty()) return RunRestBench(o);
  auto stub = loracle::v1::Inference::NewStub(channel);
  const absl::Time begin = absl::Now();
  const absl::Time measure_from = begin + absl::Seconds(o.warmup_s);
  const absl::Time stop_at = measure_from + absl::Seconds(o.duration_s);
  Recorder recorder(measure_from, stop_at);
  std::atomic<int64_t> sequence{0};
  absl::Mutex mu;
  int64_t outstanding = 0;  // guarded by mu

  std::vector<double> zipf_cdf;
  if (o.zipf_s > 0) {
    double total = 0;
    for (size_t i = 0; i < o.adapters.size(); ++i) {
      total += 1.0 / std::pow(static_cast<double>(i + 1), o.zipf_s);
      zipf_cdf.push_back(total);
    }
    for (double& c : zipf_cdf) c /= total;
  }
  auto pick = [&](int64_t n) -> const std::string& {
    if (zipf_cdf.empty()) return o.adapters[static_cast<size_t>(n) % o.adapters.size()];
    uint64_t z = static_cast<uint64_t>(n) + 0x9e3779b97f4a7c15ULL;  // splitmix64
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    z ^= z >> 31;
    const double u = static_cast<double>(z >> 11) * 0x1.0p-53;
    const size_t i = static_cast<size_t>(std::upper_bound(zipf_cdf.begin(), zipf_cdf.end(), u) -
                                         zipf_cdf.begin());
    return o.adapters[std::min(i, o.adapters.size() - 1)];
  };

  std::function<void()> issue = [&] {
    const int64_t n = sequence.fetch_add(1);
    auto* call = new Call();
    call->req.set_adapter(pick(n));
    for (int i = 0; i < o.inputs_per_request; ++i) {
      call->variants.push_back(static_cast<int>((n + i) % 30));
      call->req.add_inputs(Text(o.input_tokens, call->variants.back()));
    }
    if (o.mc_samples > 0) call->req.set_mc_samples(static_cast<uint32_t>(o.mc_samples));
    call->ctx.set_deadline(std::chrono::system_clock::now() +
                           std::chrono::milliseconds(o.timeout_ms));
    call->start = absl::Now();
    {
      absl::MutexLock lock(&mu);
      ++outstanding;
    }
    stub->async()->Predict(&call->ctx, &call->req, &call->resp, [&, call](grpc::Status s) {
      recorder.Record(call->start, s, call->req, call->resp, call->variants, o.check_versions);
      if (o.feedback && s.ok()) {
        auto* fb = new FeedbackCall();
        for (const auto& p : call->resp.predictions()) {
          loracle::v1::FeedbackItem* item = fb->req.add_items();
          item->set_prediction_id(p.prediction_id());
          item->set_true_label(p.label());
        }
        fb->ctx.set_deadline(std::chrono::system_clock::now() +
                             std::chrono::milliseconds(o.timeout_ms));
        {
          absl::MutexLock lock(&mu);
          ++outstanding;
        }
        stub->async()->Feedback(&fb->ctx, &fb->req, &fb->resp, [&, fb](grpc::Status fs) {
          recorder.RecordFeedback(fs);
          delete fb;
          absl::MutexLock lock(&mu);
          --outstanding;
        });
      }
      delete call;
      const bool again = o.rate <= 0 && absl::Now() < stop_at;  // closed loop: keep C in flight
      if (again) issue();
      absl::MutexLock lock(&mu);
      --outstanding;
    });
  };

  if (o.rate > 0) {  // open loop: send at a constant rate regardless of completions
    const absl::Duration gap = absl::Seconds(1.0 / o.rate);
    for (absl::Time next = begin; next < stop_at; next += gap) {
      absl::SleepFor(next - absl::Now());
      issue();
    }
  } else {
    for (int i = 0; i < o.concurrency; ++i) issue();
    absl::SleepFor(stop_at - absl::Now());
  }
  auto idle = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) { return outstanding == 0; };
  mu.LockWhen(absl::Condition(&idle));
  mu.Unlock();
  return recorder.Finish(o.duration_s);
}

void PrintBench(const BenchOptions& o, const BenchResult& r, std::ostream& out) {
  out << absl::StrFormat("loracle bench%s: %s, %.1f s measured after %.1f s warm-up\n",
                         o.rest_address.empty() ? "" : " (REST)",
                         o.rate > 0 ? absl::StrFormat("open loop at %.1f req/s", o.rate)
                                    : absl::StrFormat("concurrency %d", o.concurrency),
                         o.duration_s, o.warmup_s);
  out << absl::StrFormat(
      "  adapters: %s; %d input(s)/request of ~%d tokens (server counted %.1f)%s\n",
      absl::StrCat(o.adapters.size() <= 8
                       ? absl::StrJoin(o.adapters, ",")
                       : absl::StrCat(o.adapters.front(), ",...,", o.adapters.back(), " (",
                                      o.adapters.size(), ")"),
                   o.zipf_s > 0 ? absl::StrFormat(", Zipf s=%g", o.zipf_s) : ""),
      o.inputs_per_request, o.input_tokens, r.mean_tokens,
      o.mc_samples > 0 ? absl::StrFormat("; mc_samples %d", o.mc_samples) : "");
  std::vector<std::string> errors;
  for (const auto& [code, n] : r.errors) errors.push_back(absl::StrFormat("%s=%d", code, n));
  out << absl::StrFormat("  requests: %d ok, errors: %s\n", r.ok,
                         errors.empty() ? "none" : absl::StrJoin(errors, " "));
  out << absl::StrFormat("  throughput: %.1f requests/s, %.1f inputs/s\n", r.requests_per_s,
                         r.inputs_per_s);
  out << absl::StrFormat("  latency ms: p50 %.2f  p90 %.2f  p99 %.2f  max %.2f  mean %.2f\n",
                         r.p50_ms, r.p90_ms, r.p99_ms, r.max_ms, r.mean_ms);
  if (o.feedback) {
    std::vector<std::string> fe;
    for (const auto& [code, n] : r.feedback_errors) fe.push_back(absl::StrFormat("%s=%d", code, n));
    out << absl::StrFormat("  feedback: %d ok, errors: %s\n", r.feedback_ok,
                           fe.empty() ? "none" : absl::StrJoin(fe, " "));
  }
  if (o.check_versions) {
    std::vector<std::string> versions;
    for (const auto& [v, n] : r.versions) versions.push_back(absl::StrFormat("%d", v));
    out << absl::StrFormat(
        "  versions: %d answered (%s), %d response(s) inconsistent with their version\n",
        r.versions.size(),
        versions.size() <= 8 ? absl::StrJoin(versions, ",")
                             : absl::StrCat(versions.front(), "..", versions.back()),
        r.inconsistent);
  }
}

std::string BenchJson(const BenchOptions& o, const BenchResult& r) {
  nlohmann::json j = {
      {"options",
       {{"adapters", o.adapters},
        {"zipf_s", o.zipf_s},
        {"concurrency", o.concurrency},
        {"rate", o.rate},
        {"duration_s", o.duration_s},
        {"warmup_s", o.warmup_s},
        {"input_tokens", o.input_tokens},
        {"inputs_per_request", o.inputs_per_request},
        {"mc_samples", o.mc_samples},
        {"check_versions", o.check_versions},
        {"protocol", o.rest_address.empty() ? "grpc" : "rest"}}},
      {"ok", r.ok},
      {"errors", r.errors},
      {"feedback", o.feedback},
      {"feedback_ok", r.feedback_ok},
      {"feedback_errors", r.feedback_errors},
      {"requests_per_s", r.requests_per_s},
      {"inputs_per_s", r.inputs_per_s},
      {"mean_tokens", r.mean_tokens},
      {"latency_ms",
       {{"p50", r.p50_ms},
        {"p90", r.p90_ms},
        {"p99", r.p99_ms},
        {"max", r.max_ms},
        {"mean", r.mean_ms}}},
  };
  if (o.check_versions) {
    nlohmann::json versions = nlohmann::json::object();
    for (const auto& [v, n] : r.versions) versions[std::to_string(v)] = n;
    nlohmann::json probs = nlohmann::json::object();
    for (const auto& [adapter, by_version] : r.version_probs) {
      for (const auto& [v, by_variant] : by_version) {
        for (const auto& [variant, p] : by_variant) {
          probs[adapter][std::to_string(v)][std::to_string(variant)] = p;
        }
      }
    }
    j["versions"] = versions;
    j["inconsistent"] = r.inconsistent;
    j["version_probs"] = probs;
  }
  return j.dump(2) + "\n";
}

}  // namespace loracle::client
