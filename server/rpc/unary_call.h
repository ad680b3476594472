#ifndef LORACLE_SERVER_RPC_UNARY_CALL_H_
#define LORACLE_SERVER_RPC_UNARY_CALL_H_

// The epilogue every unary RPC shares: answer UNAVAILABLE while the engine is not published,
// record the call's metrics under its gRPC method name, and Finish.

#include <grpcpp/grpcpp.h>

#include <cstdint>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "server/rpc/engine.h"

namespace loracle::metrics {
class Metrics;
class MethodSeries;
}  // namespace loracle::metrics

namespace loracle::rpc {

class TokenAuth;

// Metric label values: the methods' full gRPC names, without the leading '/'.
inline constexpr char kPredictMethod[] = "loracle.v1.Inference/Predict";
inline constexpr char kFeedbackMethod[] = "loracle.v1.Inference/Feedback";
inline constexpr char kOnlineCalibrationMethod[] = "loracle.v1.Inference/OnlineCalibration";
inline constexpr char kListAdaptersMethod[] = "loracle.v1.Adapters/List";
inline constexpr char kGetAdapterMethod[] = "loracle.v1.Adapters/Get";
inline constexpr char kLoadAdapterMethod[] = "loracle.v1.Adapters/Load";
inline constexpr char kUnloadAdapterMethod[] = "loracle.v1.Adapters/Unload";
inline constexpr char kSubmitJobMethod[] = "loracle.v1.Training/Submit";
inline constexpr char kGetJobMethod[] = "loracle.v1.Training/Get";
inline constexpr char kWatchJobMethod[] = "loracle.v1.Training/Watch";
inline constexpr char kCancelJobMethod[] = "loracle.v1.Training/Cancel";
inline constexpr char kListJobsMethod[] = "loracle.v1.Training/List";

// UNAVAILABLE: the base model is still loading.
absl::Status NotReadyError();

// `metrics`'s series for `method`, or null without metrics. For a service's constructor.
metrics::MethodSeries* SeriesOf(metrics::Metrics* metrics, const char* method);

// Records one finished call (any kind of reactor) in `series` (may be null).
void RecordCall(metrics::MethodSeries* series, absl::Time start, const grpc::Status& status);

// One unary call from arrival to Finish. Cheap to copy into a callback; Finish may run on any
// thread, exactly once per call (gRPC's rule for a reactor).
class UnaryCall {
 public:
  // `series` (may be null) records the call.
  UnaryCall(grpc::CallbackServerContext* ctx, metrics::MethodSeries* series);

  grpc::ServerUnaryReactor* reactor() const { return reactor_; }
  // True when `auth` (null: the server is open) lets the call's token use one of `roles`;
  // otherwise finishes the call with UNAUTHENTICATED or PERMISSION_DENIED (rpc/auth.h).
  bool Allow(const TokenAuth* auth, uint32_t roles) const;
  // Records the call and finishes it with `status`; returns the reactor for the handler to return.
  grpc::ServerUnaryReactor* Finish(const absl::Status& status) const;
  // The published engine part, or null after finishing the call with NotReadyError().
  template <typename T>
  T* Require(const Published<T>& published) const {
    T* p = published.get();
    if (p == nullptr) Finish(NotReadyError());
    return p;
  }

 private:
  grpc::CallbackServerContext* ctx_;
  grpc::ServerUnaryReactor* reactor_;
  metrics::MethodSeries* series_;
  absl::Time start_;
};

}  // namespace loracle::rpc

#endif  // LORACLE_SERVER_RPC_UNARY_CALL_H_
