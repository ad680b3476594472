#ifndef LORACLE_CLIENT_BENCH_H_
#define LORACLE_CLIENT_BENCH_H_

#include <grpcpp/grpcpp.h>

#include <cstdint>
#include <map>
#include <memory>
#include <ostream>
#include <string>
#include <vector>

#include "absl/status/status.h"

namespace loracle::client {

// A load generator for Inference.Predict, in the manner of Triton's perf_analyzer.
struct BenchOptions {
  std::vector<std::string> adapters;  // requests cycle through these (or see zipf_s)
  // > 0: the adapter of each request is drawn Zipf-distributed instead, P(adapters[i]) ∝
  // 1/(i+1)^zipf_s (deterministic given the request's sequence number): many tenants, few hot.
  double zipf_s = 0;
  int concurrency = 8;     // closed loop: this many calls always in flight
  double rate = 0;         // > 0: open loop at this many requests per second instead
  double duration_s = 10;  // measured window
  double warmup_s = 1;     // before it, not measured
  int input_tokens = 128;  // approximate tokens per input, including [CLS]/[SEP]
  int inputs_per_request = 1;
  int mc_samples = 0;  // 0 = the adapter's default
  int timeout_ms = 30000;
  // After each successful Predict, send Feedback for its predictions (true label: the predicted
  // one), without delaying the next Predict: load with the feedback loop on.
  bool feedback = false;
  // Check that every response is one version's answer: all responses naming the same adapter
  // version give one input the same probabilities (within 1e-5). For adapters whose answers are
  // deterministic (no test-time sampling, or a fixed seed); checks every completion, warm-up too.
  bool check_versions = false;
  // "HOST:PORT" of a server's REST port: the same closed-loop load over HTTP/JSON
  // (POST /v2/models/{adapter}/infer, one keep-alive connection per client) instead of gRPC.
  // Closed loop only (rate must be 0); feedback is not sent.
  std::string rest_address;
};

struct BenchResult {
  int64_t ok = 0;
  std::map<std::string, int64_t> errors;  // by status code name
  double seconds = 0;                     // measured window
  double requests_per_s = 0;
  double inputs_per_s = 0;
  double mean_tokens = 0;  // tokens per input as the server counted them
  double p50_ms = 0, p90_ms = 0, p99_ms = 0, max_ms = 0, mean_ms = 0;
  int64_t feedback_ok = 0;                         // Feedback calls (with `feedback`)
  std::map<std::string, int64_t> feedback_errors;  // by status code name
  // With check_versions: responses by the version they name; responses whose probabilities
  // differ from the first of the same (adapter, version, input); and that first answer's
  // probabilities by adapter, version and input variant (0..29).
  std::map<int64_t, int64_t> versions;
  int64_t inconsistent = 0;
  std::map<std::string, std::map<int64_t, std::map<int, std::vector<float>>>> version_probs;
};

// "OK", "INVALID_ARGUMENT", ... for a gRPC status (absl and gRPC share the canonical codes).
inline std::string CodeName(const grpc::Status& s) {
  return absl::StatusCodeToString(static_cast<absl::StatusCode>(s.error_code()));
}

BenchResult RunBench(const std::shared_ptr<grpc::Channel>& channel, const BenchOptions& options);

// Human-readable report, and the JSON the `--json_out` flag writes.
void PrintBench(const BenchOptions& options, const BenchResult& result, std::ostream& out);
std::string BenchJson(const BenchOptions& options, const BenchResult& result);

}  // namespace loracle::client

#endif  // LORACLE_CLIENT_BENCH_H_
