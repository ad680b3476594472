#include "server/rpc/inference_service.h"

#include <algorithm>
#include <chrono>
#include <memory>
#include <optional>
#include <utility>

#include "absl/random/random.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "server/adapters/adapter.h"
#include "server/adapters/registry.h"
#include "server/calibration/feedback_store.h"
#include "server/metrics/metrics.h"
#include "server/model/tokenizer.h"
#include "server/rpc/auth.h"
#include "server/rpc/unary_call.h"
#include "server/serving/batcher.h"

namespace loracle::rpc {
namespace {

using loracle::v1::PredictRequest;
using loracle::v1::PredictResponse;

// One input before its adapter is known: a single text's ids (cut into the adapter's windows
// later), or a text pair's encoding.
struct Tokenized {
  std::vector<int64_t> ids;
  std::optional<model::Encoding> pair;
};

std::string NewPredictionId() {
  thread_local absl::BitGen gen;
  return absl::StrFormat("%016x%016x", absl::Uniform<uint64_t>(gen), absl::Uniform<uint64_t>(gen));
}

void FillResponse(const serving::InferenceRequest& req, const serving::InferenceResult& result,
                  const std::vector<bool>& truncated, bool return_members,
                  calibration::FeedbackStore* feedback, PredictResponse* response) {
  const absl::Time now = absl::Now();
  const adapters::Adapter& adapter = *req.adapter;
  response->set_adapter(adapter.name);
  response->set_version(adapter.version);
  for (const std::string& l : adapter.serving.labels) response->add_labels(l);
  response->set_members(static_cast<uint32_t>(req.members));
  response->set_mc_samples(static_cast<uint32_t>(req.mc_samples));
  size_t first = 0;  // input i's first encoding
  for (size_t i = 0; i < result.inputs.size(); ++i) {
    const serving::InputResult& in = result.inputs[i];
    loracle::v1::Prediction* p = response->add_predictions();
    p->set_prediction_id(NewPredictionId());
    p->set_label_index(in.summary.argmax);
    p->set_label(adapter.serving.labels[static_cast<size_t>(in.summary.argmax)]);
    for (double v : in.summary.mean_probs) p->add_probs(static_cast<float>(v));
    if (feedback != nullptr) {
      const adapters::ServingConfig::Reference& ref = adapter.serving.reference;
      feedback->Remember(p->prediction_id(),
                         {adapter.name, adapter.version, &adapter.serving.labels, ref.examples,
                          &ref.confidence, &ref.mutual_information},
                         {p->probs().begin(), p->probs().end()}, in.summary.confidence,
                         in.summary.mutual_information, now);
    }
    loracle::v1::Uncertainty* u = p->mutable_uncertainty();
    u->set_predictive_entropy(static_cast<float>(in.summary.predictive_entropy));
    u->set_expected_entropy(static_cast<float>(in.summary.expected_entropy));
    u->set_mutual_information(static_cast<float>(in.summary.mutual_information));
    u->set_confidence(static_cast<float>(in.summary.confidence));
    for (double v : in.summary.prob_std) u->add_prob_std(static_cast<float>(v));
    p->set_abstained(in.abstained);
    p->set_truncated(truncated[i]);
    const size_t windows = req.windows.empty() ? 1 : static_cast<size_t>(req.windows[i]);
    size_t tokens = 0;
    for (size_t w = 0; w < windows; ++w) tokens += req.inputs[first + w].input_ids.size();
    first += windows;
    p->set_num_tokens(static_cast<uint32_t>(tokens));
    p->set_windows(static_cast<uint32_t>(windows));
    if (return_members) {
      for (size_t k = 0; k < in.passes.size(); ++k) {
        loracle::v1::MemberOutput* m = p->add_members();
        m->set_member(static_cast<uint32_t>(k / static_cast<size_t>(req.mc_samples)));
        m->set_sample(static_cast<uint32_t>(k % static_cast<size_t>(req.mc_samples)));
        for (float v : in.passes[k]) m->add_probs(v);
      }
    }
    if (adapter.series != nullptr) {
      adapter.series->RecordPrediction(in.abstained, in.summary.confidence,
                                       in.summary.mutual_information,
                                       in.summary.predictive_entropy);
    }
  }
}

loracle::v1::OnlineReport ToProto(const calibration::CalibrationSums& sums) {
  loracle::v1::OnlineReport out;
  const calibration::CalibrationReport r = sums.Report();
  out.set_labelled(static_cast<uint64_t>(sums.count));
  out.set_accuracy(static_cast<float>(r.accuracy));
  out.set_ece(static_cast<float>(r.ece));
  out.set_mce(static_cast<float>(r.mce));
  out.set_nll(static_cast<float>(r.nll));
  out.set_brier(static_cast<float>(r.brier));
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

absl::Status ValidatePredict(const PredictRequest& request,
                             const InferenceService::Options& options) {
  if (request.adapter().empty()) {
    return absl::InvalidArgumentError("adapter is required: name the adapter to predict with");
  }
  if (request.inputs().empty()) {
    return absl::InvalidArgumentError("inputs is empty: send at least one text");
  }
  if (request.inputs_size() > options.max_inputs_per_request) {
    return absl::InvalidArgumentError(absl::StrCat("inputs has ", request.inputs_size(),
                                                   " texts; the limit per request is ",
                                                   options.max_inputs_per_request));
  }
  if (request.text_pairs_size() != 0 && request.text_pairs_size() != request.inputs_size()) {
    return absl::InvalidArgumentError(absl::StrCat("text_pairs has ", request.text_pairs_size(),
                                                   " entries; it must be empty or match the ",
                                                   request.inputs_size(), " inputs"));
  }
  if (request.has_mc_samples() &&
      (request.mc_samples() < 1 ||
       request.mc_samples() > static_cast<uint32_t>(options.max_mc_samples))) {
    return absl::InvalidArgumentError(absl::StrCat(
        "mc_samples must be in [1, ", options.max_mc_samples, "], got ", request.mc_samples()));
  }
  if (request.has_abstain_threshold() && !(request.abstain_threshold() >= 0)) {
    return absl::InvalidArgumentError("abstain_threshold must be >= 0");
  }
  for (int i = 0; i < request.inputs_size(); ++i) {
    for (const std::string* text :
         {&request.inputs(i), i < request.text_pairs_size() ? &request.text_pairs(i) : nullptr}) {
      if (text != nullptr && static_cast<int64_t>(text->size()) > options.max_input_bytes) {
        return absl::InvalidArgumentError(
            absl::StrCat(text == &request.inputs(i) ? "inputs[" : "text_pairs[", i, "] is ",
                         text->size(), " bytes; the limit is ", options.max_input_bytes));
      }
    }
  }
  return absl::OkStatus();
}

void StartPredict(const InferenceService::Options& options, const InferenceBackend& backend,
                  calibration::FeedbackStore* feedback, const PredictRequest& request,
                  PredictResponse* response, absl::Time deadline, std::function<bool()> cancelled,
                  std::function<void(absl::Status)> finish) {
  if (absl::Status s = ValidatePredict(request, options); !s.ok()) return finish(s);

  // Tokenized before the adapter is acquired: an evicted adapter's reload (below) then finishes
  // the call on a load thread with little left to do. Single texts are cut into the adapter's
  // windows once it is known; pairs are encoded now (one window).
  const model::Tokenizer& tokenizer = *backend.tokenizer;
  std::vector<Tokenized> tokenized(static_cast<size_t>(request.inputs_size()));
  for (int i = 0; i < request.inputs_size(); ++i) {
    Tokenized& t = tokenized[static_cast<size_t>(i)];
    absl::Status s;
    if (request.text_pairs_size() > 0) {
      absl::StatusOr<model::Encoding> e =
          tokenizer.Encode(request.inputs(i), request.text_pairs(i), backend.max_length);
      if (e.ok()) t.pair = *std::move(e);
      s = e.status();
    } else {
      absl::StatusOr<std::vector<int64_t>> ids = tokenizer.TokenizeToIds(request.inputs(i));
      if (ids.ok()) t.ids = *std::move(ids);
      s = ids.status();
    }
    if (!s.ok()) {
      return finish(absl::InvalidArgumentError(absl::StrCat("inputs[", i, "]: ", s.message())));
    }
  }
  // Runs here, or on a registry load thread after an evicted adapter was reloaded; request and
  // response stay valid until finish.
  auto submit = [options, feedback, &request, response, &backend, deadline,
                 cancelled = std::move(cancelled), finish, tokenized = std::move(tokenized)](
                    absl::StatusOr<std::shared_ptr<const adapters::Adapter>> adapter) mutable {
    if (!adapter.ok()) return finish(adapter.status());
    auto req = std::make_unique<serving::InferenceRequest>();
    const adapters::ServingConfig& serving = (*adapter)->serving;
    const int length = serving.window_length > 0
                           ? std::min(serving.window_length, backend.max_length)
                           : backend.max_length;
    std::vector<bool> truncated;
    for (size_t i = 0; i < tokenized.size(); ++i) {
      Tokenized& t = tokenized[i];
      if (t.pair.has_value()) {
        truncated.push_back(t.pair->truncated);
        req->inputs.push_back(*std::move(t.pair));
        if (serving.max_windows > 1) req->windows.push_back(1);
        continue;
      }
      absl::StatusOr<std::vector<model::Encoding>> w =
          backend.tokenizer->Windows(t.ids, length, serving.max_windows);
      if (!w.ok()) {
        return finish(
            absl::InvalidArgumentError(absl::StrCat("inputs[", i, "]: ", w.status().message())));
      }
      truncated.push_back(w->front().truncated);
      if (serving.max_windows > 1) req->windows.push_back(static_cast<int>(w->size()));
      for (model::Encoding& e : *w) req->inputs.push_back(std::move(e));
    }
    req->adapter = *adapter;
    req->members = (*adapter)->members;
    req->mc_samples = request.has_mc_samples() ? static_cast<int>(request.mc_samples())
                                               : (*adapter)->serving.mc_samples;
    req->seed = request.seed();
    if (const int passes = req->members * req->mc_samples;
        passes > options.max_passes_per_request) {
      return finish(absl::InvalidArgumentError(
          absl::StrCat("adapter ", request.adapter(), " has ", req->members, " members x ",
                       req->mc_samples, " samples = ", passes,
                       " forward passes per input; the limit is ", options.max_passes_per_request,
                       " (--max_passes_per_request): ask for fewer mc_samples")));
    }
    req->abstain_threshold = request.has_abstain_threshold()
                                 ? request.abstain_threshold()
                                 : (*adapter)->serving.abstain_threshold;
    if (deadline != absl::InfiniteFuture()) req->deadline = deadline;
    req->cancelled = std::move(cancelled);
    const bool return_members = request.return_members();
    serving::InferenceRequest* raw = req.get();
    req->done = [finish, feedback, response, raw, truncated = std::move(truncated),
                 return_members](absl::StatusOr<serving::InferenceResult> result) {
      if (result.ok()) {
        FillResponse(*raw, *result, truncated, return_members, feedback, response);
      }
      finish(result.status());
    };
    if (absl::Status s = backend.batcher->Submit(std::move(req)); !s.ok()) finish(s);
  };
  backend.registry->AcquireAsync(request.adapter(), deadline, std::move(submit));
}

grpc::ServerUnaryReactor* InferenceService::Predict(grpc::CallbackServerContext* ctx,
                                                    const PredictRequest* request,
                                                    PredictResponse* response) {
  const UnaryCall call(ctx, predict_);
  if (!call.Allow(auth_, kPredictRole)) return call.reactor();
  const InferenceBackend* backend = call.Require(*backend_);
  if (backend == nullptr) return call.reactor();
  const absl::Time deadline = ctx->deadline() == std::chrono::system_clock::time_point::max()
                                  ? absl::InfiniteFuture()
                                  : absl::FromChrono(ctx->deadline());
  StartPredict(
      options_, *backend, feedback_, *request, response, deadline,
      [ctx] { return ctx->IsCancelled(); },  // valid until Finish
      [call](const absl::Status& s) { call.Finish(s); });
  return call.reactor();
}

absl::Status RecordFeedback(const InferenceService::Options& options,
                            calibration::FeedbackStore* feedback,
                            const loracle::v1::FeedbackRequest& request,
                            loracle::v1::FeedbackResponse* response) {
  if (feedback == nullptr) return absl::UnimplementedError("this server keeps no feedback");
  const bool single = request.items_size() == 0;
  if (single == request.prediction_id().empty()) {
    return absl::InvalidArgumentError(
        "send prediction_id and true_label, or items (a batch), not both and not neither");
  }
  if (request.items_size() > options.max_feedback_items) {
    return absl::InvalidArgumentError(absl::StrCat("items has ", request.items_size(),
                                                   " entries; the limit per call is ",
                                                   options.max_feedback_items));
  }
  const absl::Time now = absl::Now();
  absl::Status first;
  auto record = [&](const std::string& id, const std::string& label) {
    loracle::v1::FeedbackResult* r = response->add_results();
    r->set_prediction_id(id);
    absl::StatusOr<calibration::FeedbackStore::Result> result = feedback->Record(id, label, now);
    if (!result.ok()) {
      r->set_code(static_cast<int32_t>(result.status().code()));
      r->set_message(std::string(result.status().message()));
      if (first.ok()) first = result.status();
      return;
    }
    if (*result == calibration::FeedbackStore::Result::kDuplicate) {
      r->set_duplicate(true);
      r->set_message("feedback for this prediction was recorded before; ignored");
      response->set_duplicates(response->duplicates() + 1);
    } else {
      response->set_recorded(response->recorded() + 1);
    }
  };
  if (single) {
    record(request.prediction_id(), request.true_label());
    return first;
  }
  for (const loracle::v1::FeedbackItem& item : request.items()) {
    record(item.prediction_id(), item.true_label());
  }
  return absl::OkStatus();
}

grpc::ServerUnaryReactor* InferenceService::Feedback(grpc::CallbackServerContext* ctx,
                                                     const loracle::v1::FeedbackRequest* request,
                                                     loracle::v1::FeedbackResponse* response) {
  const UnaryCall call(ctx, feedback_calls_);
  if (!call.Allow(auth_, kFeedbackRole)) return call.reactor();
  return call.Finish(RecordFeedback(options_, feedback_, *request, response));
}

grpc::ServerUnaryReactor* InferenceService::OnlineCalibration(
    grpc::CallbackServerContext* ctx, const loracle::v1::OnlineCalibrationRequest* request,
    loracle::v1::OnlineCalibrationResponse* response) {
  const UnaryCall call(ctx, online_calibration_);
  if (!call.Allow(auth_, kPredictRole)) return call.reactor();
  const InferenceBackend* backend = call.Require(*backend_);
  if (backend == nullptr) return call.reactor();
  if (feedback_ == nullptr) {
    return call.Finish(absl::UnimplementedError("this server keeps no feedback"));
  }
  bool known = false;
  for (const adapters::AdapterInfo& info : backend->registry->List()) {
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
