#include "server/rpc/inference_service.h"

#include <chrono>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "server/adapters/registry.h"
#include "server/calibration/feedback_store.h"
#include "server/metrics/metrics.h"
#include "server/rpc/auth.h"
#include "server/rpc/unary_call.h"

namespace loracle::rpc {
namespace {

using loracle::v1::PredictRequest;
using loracle::v1::PredictResponse;

loracle::v1::OnlineReport ToProto(const calibration::CalibrationSums& sums) {
  loracle::v1::OnlineReport out;
  const calibration::CalibrationReport r = sums.Report();
  out.set_labelled(static_cast<uint64_t>(sums.count));
  calibration::FillProto(r, &out);
  for (int b = 0; b < calibration::CalibrationSums::kBins; ++b) {
    loracle::v1::ReliabilityBin* bin = out.add_bins();
    const double n = static_cast<double>(sums.bin_count[b]);
    bin->set_upper(static_cast<float>(b + 1) / calibration::CalibrationSums::kBins);
    bin->set_count(static_cast<uint64_t>(sums.bin_count[b]));
    if (n > 0) {
      bin->set_mean_confidence(static_cast<float>(sums.bin_confidence[b] / n));
      bin->set_accuracy(static_cast<float>(sums.bin_correct[b] / n));
    }
  }
  return out;
}

}  // namespace

serving::PredictCall ToCall(const PredictRequest& request) {
  serving::PredictCall call;
  call.adapter = request.adapter();
  call.inputs.assign(request.inputs().begin(), request.inputs().end());
  call.text_pairs.assign(request.text_pairs().begin(), request.text_pairs().end());
  if (request.has_mc_samples()) call.mc_samples = request.mc_samples();
  call.seed = request.seed();
  if (request.has_abstain_threshold()) call.abstain_threshold = request.abstain_threshold();
  if (request.has_coverage()) call.coverage = request.coverage();
  if (request.has_abstain_risk()) call.abstain_risk = request.abstain_risk();
  call.return_members = request.return_members();
  return call;
}

void ToProto(const serving::PredictReply& reply, PredictResponse* response) {
  response->set_adapter(reply.adapter);
  response->set_version(reply.version);
  for (const std::string& l : reply.labels) response->add_labels(l);
  response->set_members(static_cast<uint32_t>(reply.members));
  response->set_mc_samples(static_cast<uint32_t>(reply.mc_samples));
  for (const serving::Prediction& in : reply.predictions) {
    loracle::v1::Prediction* p = response->add_predictions();
    p->set_prediction_id(in.prediction_id);
    p->set_label_index(in.label_index);
    p->set_label(in.label);
    p->mutable_probs()->Add(in.probs.begin(), in.probs.end());
    loracle::v1::Uncertainty* u = p->mutable_uncertainty();
    u->set_predictive_entropy(in.predictive_entropy);
    u->set_expected_entropy(in.expected_entropy);
    u->set_mutual_information(in.mutual_information);
    u->set_confidence(in.confidence);
    u->set_error_score(in.error_score);
    u->set_ood_score(in.ood_score);
    u->mutable_prob_std()->Add(in.prob_std.begin(), in.prob_std.end());
    p->set_abstained(in.abstained);
    p->set_truncated(in.truncated);
    p->set_num_tokens(static_cast<uint32_t>(in.num_tokens));
    p->set_windows(static_cast<uint32_t>(in.windows));
    for (const std::string& l : in.prediction_set) p->add_prediction_set(l);
    for (const serving::MemberOutput& m : in.members) {
      loracle::v1::MemberOutput* out = p->add_members();
      out->set_member(static_cast<uint32_t>(m.member));
      out->set_sample(static_cast<uint32_t>(m.sample));
      out->mutable_probs()->Add(m.probs.begin(), m.probs.end());
    }
  }
}

grpc::ServerUnaryReactor* InferenceService::Predict(grpc::CallbackServerContext* ctx,
                                                    const PredictRequest* request,
                                                    PredictResponse* response) {
  const UnaryCall call(ctx, predict_);
  if (!call.Allow(auth_, kPredictRole)) return call.reactor();
  const serving::Predictor* predictor = call.Require(*predictor_);
  if (predictor == nullptr) return call.reactor();
  const absl::Time deadline = ctx->deadline() == std::chrono::system_clock::time_point::max()
                                  ? absl::InfiniteFuture()
                                  : absl::FromChrono(ctx->deadline());
  // `response` stays valid until Finish; the reply is copied into it on the finishing thread.
  predictor->Predict(
      ToCall(*request), deadline, [ctx] { return ctx->IsCancelled(); },  // valid until Finish
      [call, response](absl::StatusOr<serving::PredictReply> reply) {
        if (reply.ok()) ToProto(*reply, response);
        call.Finish(reply.status());
      });
  return call.reactor();
}

absl::Status RecordFeedback(const serving::Predictor::Limits& limits,
                            calibration::FeedbackStore* feedback,
                            const loracle::v1::FeedbackRequest& request,
                            loracle::v1::FeedbackResponse* response) {
  if (feedback == nullptr) return absl::UnimplementedError("this server keeps no feedback");
  const bool single = request.items_size() == 0;
  if (single == request.prediction_id().empty()) {
    return absl::InvalidArgumentError(
        "send prediction_id and true_label, or items (a batch), not both and not neither");
  }
  std::vector<serving::FeedbackItem> items;
  if (single) {
    items.push_back({request.prediction_id(), request.true_label()});
  } else {
    for (const loracle::v1::FeedbackItem& item : request.items()) {
      items.push_back({item.prediction_id(), item.true_label()});
    }
  }
  absl::StatusOr<std::vector<serving::FeedbackOutcome>> outcomes =
      serving::Predictor::RecordFeedback(feedback, limits, items);
  if (!outcomes.ok()) return outcomes.status();
  absl::Status first;
  for (const serving::FeedbackOutcome& o : *outcomes) {
    loracle::v1::FeedbackResult* r = response->add_results();
    r->set_prediction_id(o.prediction_id);
    if (!o.status.ok()) {
      r->set_code(static_cast<int32_t>(o.status.code()));
      r->set_message(std::string(o.status.message()));
      if (first.ok()) first = o.status;
    } else if (o.duplicate) {
      r->set_duplicate(true);
      r->set_message("feedback for this prediction was recorded before; ignored");
      response->set_duplicates(response->duplicates() + 1);
    } else {
      response->set_recorded(response->recorded() + 1);
    }
  }
  // A single item's failure is the call's; a batch's failures are per item.
  return single ? first : absl::OkStatus();
}

grpc::ServerUnaryReactor* InferenceService::Feedback(grpc::CallbackServerContext* ctx,
                                                     const loracle::v1::FeedbackRequest* request,
                                                     loracle::v1::FeedbackResponse* response) {
  const UnaryCall call(ctx, feedback_calls_);
  if (!call.Allow(auth_, kFeedbackRole)) return call.reactor();
  return call.Finish(RecordFeedback(limits_, feedback_, *request, response));
}

grpc::ServerUnaryReactor* InferenceService::OnlineCalibration(
    grpc::CallbackServerContext* ctx, const loracle::v1::OnlineCalibrationRequest* request,
    loracle::v1::OnlineCalibrationResponse* response) {
  const UnaryCall call(ctx, online_calibration_);
  if (!call.Allow(auth_, kPredictRole)) return call.reactor();
  const serving::Predictor* predictor = call.Require(*predictor_);
  if (predictor == nullptr) return call.reactor();
  if (feedback_ == nullptr) {
    return call.Finish(absl::UnimplementedError("this server keeps no feedback"));
  }
  bool known = false;
  for (const adapters::AdapterInfo& info : predictor->options().registry->List()) {
    known |= info.name == request->adapter();
  }
  if (!known) {
    return call.Finish(absl::NotFoundError(
        absl::StrCat("no adapter named '", request->adapter(), "' (see Adapters.List)")));
  }
  response->set_adapter(request->adapter());
  for (const calibration::FeedbackStore::VersionReport& r : feedback_->Reports()) {
    if (r.adapter != request->adapter()) continue;
    loracle::v1::VersionCalibration* v = response->add_versions();
    v->set_version(r.version);
    *v->mutable_since_load() = ToProto(r.since_load);
    *v->mutable_recent() = ToProto(r.window);
    v->set_duplicates(static_cast<uint64_t>(r.duplicates));
    v->set_predictions(static_cast<uint64_t>(r.predictions));
    if (r.has_drift) {
      v->set_psi_confidence(static_cast<float>(r.psi_confidence));
      v->set_psi_mutual_information(static_cast<float>(r.psi_mutual_information));
      v->set_drift_reference(r.reference_from_validation ? "validation" : "first_window");
    }
  }
  return call.Finish(absl::OkStatus());
}

}  // namespace loracle::rpc
