#include "client/bench.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <thread>

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
  void Record(absl::Time start, const grpc::Status& s, const loracle::v1::PredictResponse& resp) {
    // A completion inside the window counts, as in perf_analyzer: throughput = completions /
    // window.
    const absl::Time end = absl::Now();
    if (end < from_ || end > to_) return;
    absl::MutexLock lock(&mu_);
    if (s.ok()) {
      ++result_.ok;
      latencies_ms_.push_back(absl::ToDoubleMilliseconds(end - start));
      for (const auto& p : resp.predictions()) {
        tokens_ += p.num_tokens();
        ++inputs_;
      }
    } else {
      ++result_.errors[CodeName(s.error_code())];
    }
  }
  void RecordFeedback(const grpc::Status& s) {
    absl::MutexLock lock(&mu_);
    if (s.ok()) {
      ++result_.feedback_ok;
    } else {
      ++result_.feedback_errors[CodeName(s.error_code())];
    }
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
};

struct FeedbackCall {
  grpc::ClientContext ctx;
  loracle::v1::FeedbackRequest req;
  loracle::v1::FeedbackResponse resp;
};

}  // namespace

const char* CodeName(grpc::StatusCode code) {
  static const char* kNames[] = {"OK",
                                 "CANCELLED",
                                 "UNKNOWN",
                                 "INVALID_ARGUMENT",
                                 "DEADLINE_EXCEEDED",
                                 "NOT_FOUND",
                                 "ALREADY_EXISTS",
                                 "PERMISSION_DENIED",
                                 "RESOURCE_EXHAUSTED",
                                 "FAILED_PRECONDITION",
                                 "ABORTED",
                                 "OUT_OF_RANGE",
                                 "UNIMPLEMENTED",
                                 "INTERNAL",
                                 "UNAVAILABLE",
                                 "DATA_LOSS",
                                 "UNAUTHENTICATED"};
  const int c = static_cast<int>(code);
  return c >= 0 && c <= 16 ? kNames[c] : "UNKNOWN";
}

BenchResult RunBench(const std::shared_ptr<grpc::Channel>& channel, const BenchOptions& o) {
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
      call->req.add_inputs(Text(o.input_tokens, static_cast<int>((n + i) % 30)));
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
      recorder.Record(call->start, s, call->resp);
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
  out << absl::StrFormat("loracle bench: %s, %.1f s measured after %.1f s warm-up\n",
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
        {"mc_samples", o.mc_samples}}},
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
  return j.dump(2) + "\n";
}

}  // namespace loracle::client
