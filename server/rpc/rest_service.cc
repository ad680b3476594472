#include "server/rpc/rest_service.h"

#include <algorithm>
#include <memory>
#include <utility>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "nlohmann/json.hpp"
#include "server/adapters/registry.h"
#include "server/metrics/metrics.h"
#include "server/rpc/auth.h"
#include "server/rpc/unary_call.h"

namespace loracle::rpc {
namespace {

using nlohmann::json;

constexpr char kInferMethod[] = "REST /v2/models/infer";
constexpr char kFeedbackRestMethod[] = "REST /v2/models/feedback";
constexpr char kMetadataMethod[] = "REST /v2/models/metadata";

http::Response Json(int status, const json& body) {
  http::Response r;
  r.status = status;
  r.content_type = "application/json";
  r.body = body.dump();
  return r;
}

http::Response Error(const absl::Status& s) {
  return Json(HttpStatusFor(s.code()), json{{"error", std::string(s.message())}});
}

void Record(metrics::MethodSeries* series, absl::Time start, const absl::Status& s) {
  if (series == nullptr) return;
  const std::string name = absl::StatusCodeToString(s.code());
  series->Record(static_cast<int>(s.code()), name.c_str(),
                 absl::ToDoubleSeconds(absl::Now() - start));
}

// The texts of a v2 BYTES input: "data" flat (or one level nested), its "shape" [N] or [N, 1].
absl::StatusOr<std::vector<std::string>> Texts(const json& input, int index) {
  const std::string where = absl::StrCat("inputs[", index, "]");
  if (!input.is_object()) return absl::InvalidArgumentError(where + " must be an object");
  if (input.value("datatype", "") != "BYTES") {
    return absl::InvalidArgumentError(where + ": datatype must be \"BYTES\" (texts)");
  }
  const json* data = input.contains("data") ? &input["data"] : nullptr;
  if (data == nullptr || !data->is_array()) {
    return absl::InvalidArgumentError(where + ": data must be an array of strings");
  }
  std::vector<std::string> texts;
  for (const json& d : *data) {
    if (d.is_string()) {
      texts.push_back(d.get<std::string>());
    } else if (d.is_array() && d.size() == 1 && d[0].is_string()) {
      texts.push_back(d[0].get<std::string>());
    } else {
      return absl::InvalidArgumentError(where + ": data must be an array of strings");
    }
  }
  const json* shape = input.contains("shape") ? &input["shape"] : nullptr;
  const bool shape_ok =
      shape != nullptr && shape->is_array() && !shape->empty() && shape->size() <= 2 &&
      (*shape)[0].is_number_integer() &&
      (*shape)[0].get<int64_t>() == static_cast<int64_t>(texts.size()) &&
      (shape->size() == 1 || ((*shape)[1].is_number_integer() && (*shape)[1].get<int64_t>() == 1));
  if (!shape_ok) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, ": shape must be [", texts.size(), "] (or [", texts.size(), ", 1])"));
  }
  return texts;
}

// The v2 infer request as a PredictCall, and its timeout and output selection.
absl::Status ParseInfer(const std::string& body, const std::string& adapter,
                        serving::PredictCall* out, absl::Duration* timeout,
                        std::vector<std::string>* outputs, std::string* id) {
  const json j = json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return absl::InvalidArgumentError("the body must be a JSON object (Open Inference Protocol)");
  }
  out->adapter = adapter;
  if (j.contains("id")) {
    if (!j["id"].is_string()) return absl::InvalidArgumentError("id must be a string");
    *id = j["id"].get<std::string>();
  }
  if (!j.contains("inputs") || !j["inputs"].is_array() || j["inputs"].empty() ||
      j["inputs"].size() > 2) {
    return absl::InvalidArgumentError(
        "inputs must hold one BYTES tensor of texts (named \"text\", or any name when alone) and "
        "optionally a second named \"text_pair\"");
  }
  const json& inputs = j["inputs"];
  for (size_t i = 0; i < inputs.size(); ++i) {
    absl::StatusOr<std::vector<std::string>> texts = Texts(inputs[i], static_cast<int>(i));
    if (!texts.ok()) return texts.status();
    const std::string name = inputs[i].value("name", "");
    const bool pair = inputs.size() == 2 && name == "text_pair";
    if (inputs.size() == 2 && name != "text" && name != "text_pair") {
      return absl::InvalidArgumentError(
          absl::StrCat("inputs[", i, "] is named \"", name,
                       "\"; with two inputs, name them text and text_pair"));
    }
    for (std::string& t : *texts) {
      (pair ? out->text_pairs : out->inputs).push_back(std::move(t));
    }
  }
  if (inputs.size() == 2 && (out->inputs.empty() || out->text_pairs.empty())) {
    return absl::InvalidArgumentError("with two inputs, one is text and the other text_pair");
  }
  if (j.contains("parameters")) {
    const json& p = j["parameters"];
    if (!p.is_object()) return absl::InvalidArgumentError("parameters must be an object");
    for (const auto& [key, value] : p.items()) {
      if (key == "mc_samples" && value.is_number_integer() && value.get<int64_t>() >= 0 &&
          value.get<int64_t>() <= UINT32_MAX) {
        out->mc_samples = value.get<int64_t>();
      } else if (key == "seed" && value.is_number_integer()) {
        out->seed = value.get<uint64_t>();
      } else if (key == "return_members" && value.is_boolean()) {
        out->return_members = value.get<bool>();
      } else if (key == "abstain_threshold" && value.is_number()) {
        out->abstain_threshold = value.get<double>();
      } else if (key == "coverage" && value.is_number()) {
        out->coverage = value.get<double>();
      } else if (key == "abstain_risk" && value.is_number()) {
        out->abstain_risk = value.get<double>();
      } else if (key == "timeout_ms" && value.is_number_integer() && value.get<int64_t>() > 0) {
        *timeout = absl::Milliseconds(value.get<int64_t>());
      } else {
        return absl::InvalidArgumentError(absl::StrCat(
            "parameters.", key,
            ": unknown or of the wrong type (mc_samples, seed: integers; "
            "return_members: boolean; abstain_threshold, abstain_risk, coverage: numbers; "
            "timeout_ms: integer > "
            "0)"));
      }
    }
  }
  if (j.contains("outputs")) {
    if (!j["outputs"].is_array()) return absl::InvalidArgumentError("outputs must be an array");
    for (const json& o : j["outputs"]) {
      if (!o.is_object() || !o.contains("name") || !o["name"].is_string()) {
        return absl::InvalidArgumentError("each outputs entry needs a name");
      }
      outputs->push_back(o["name"].get<std::string>());
    }
  }
  return absl::OkStatus();
}

json Tensor(const std::string& name, const std::string& datatype, std::vector<int64_t> shape,
            json data) {
  return {{"name", name},
          {"datatype", datatype},
          {"shape", std::move(shape)},
          {"data", std::move(data)}};
}

// `sets`: the call asked for conformal sets (output prediction_set, BOOL [N, C]: label c is in
// input n's set).
absl::StatusOr<json> InferResponse(const serving::PredictReply& r,
                                   const std::vector<std::string>& wanted, const std::string& id,
                                   bool sets) {
  const int64_t n = static_cast<int64_t>(r.predictions.size());
  const int64_t c = static_cast<int64_t>(r.labels.size());
  json probs = json::array(), std = json::array(), label = json::array(), index = json::array(),
       pe = json::array(), ee = json::array(), mi = json::array(), conf = json::array(),
       error_score = json::array(), ood_score = json::array(), abstained = json::array(),
       truncated = json::array(), tokens = json::array(), windows = json::array(),
       ids = json::array(), members = json::array(), in_set = json::array();
  int64_t passes = 0;
  for (const serving::Prediction& p : r.predictions) {
    for (float v : p.probs) probs.push_back(v);
    for (float v : p.prob_std) std.push_back(v);
    label.push_back(p.label);
    index.push_back(p.label_index);
    pe.push_back(p.predictive_entropy);
    ee.push_back(p.expected_entropy);
    mi.push_back(p.mutual_information);
    conf.push_back(p.confidence);
    error_score.push_back(p.error_score);
    ood_score.push_back(p.ood_score);
    abstained.push_back(p.abstained);
    truncated.push_back(p.truncated);
    tokens.push_back(p.num_tokens);
    windows.push_back(p.windows);
    ids.push_back(p.prediction_id);
    passes = static_cast<int64_t>(p.members.size());
    for (const serving::MemberOutput& m : p.members) {
      for (float v : m.probs) members.push_back(v);
    }
    for (const std::string& l : r.labels) {
      in_set.push_back(std::find(p.prediction_set.begin(), p.prediction_set.end(), l) !=
                       p.prediction_set.end());
    }
  }
  std::vector<json> all = {
      Tensor("probabilities", "FP32", {n, c}, probs),
      Tensor("label", "BYTES", {n}, label),
      Tensor("label_index", "INT64", {n}, index),
      Tensor("predictive_entropy", "FP32", {n}, pe),
      Tensor("expected_entropy", "FP32", {n}, ee),
      Tensor("mutual_information", "FP32", {n}, mi),
      Tensor("confidence", "FP32", {n}, conf),
      Tensor("prob_std", "FP32", {n, c}, std),
      Tensor("abstained", "BOOL", {n}, abstained),
      Tensor("truncated", "BOOL", {n}, truncated),
      Tensor("num_tokens", "INT64", {n}, tokens),
      Tensor("windows", "INT64", {n}, windows),
      Tensor("prediction_id", "BYTES", {n}, ids),
      Tensor("error_score", "FP32", {n}, error_score),
      Tensor("ood_score", "FP32", {n}, ood_score),
  };
  if (passes > 0) all.push_back(Tensor("member_probabilities", "FP32", {n, passes, c}, members));
  if (sets) all.push_back(Tensor("prediction_set", "BOOL", {n, c}, in_set));
  json outputs = json::array();
  if (wanted.empty()) {
    for (json& t : all) outputs.push_back(std::move(t));
  } else {
    for (const std::string& w : wanted) {
      bool found = false;
      for (const json& t : all) {
        if (t["name"] == w) {
          outputs.push_back(t);
          found = true;
        }
      }
      if (!found) {
        return absl::InvalidArgumentError(absl::StrCat(
            "outputs: no output named \"", w,
            "\" (member_probabilities needs return_members, prediction_set needs coverage)"));
      }
    }
  }
  json out = {
      {"model_name", r.adapter},
      {"model_version", std::to_string(r.version)},
      {"parameters", {{"labels", r.labels}, {"members", r.members}, {"mc_samples", r.mc_samples}}},
      {"outputs", std::move(outputs)}};
  if (!id.empty()) out["id"] = id;
  return out;
}

}  // namespace

int HttpStatusFor(absl::StatusCode code) {
  switch (code) {
    case absl::StatusCode::kOk:
      return 200;
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kFailedPrecondition:
    case absl::StatusCode::kOutOfRange:
      return 400;
    case absl::StatusCode::kUnauthenticated:
      return 401;
    case absl::StatusCode::kPermissionDenied:
      return 403;
    case absl::StatusCode::kNotFound:
      return 404;
    case absl::StatusCode::kAlreadyExists:
    case absl::StatusCode::kAborted:
      return 409;
    case absl::StatusCode::kResourceExhausted:
      return 429;
    case absl::StatusCode::kCancelled:
      return 499;
    case absl::StatusCode::kUnimplemented:
      return 501;
    case absl::StatusCode::kUnavailable:
      return 503;
    case absl::StatusCode::kDeadlineExceeded:
      return 504;
    default:
      return 500;
  }
}

RestService::RestService(const Options& options,
                         const Published<const serving::Predictor>* predictor,
                         calibration::FeedbackStore* feedback, const TokenAuth* auth,
                         metrics::Metrics* metrics, std::function<bool()> ready)
    : options_(options),
      predictor_(predictor),
      feedback_(feedback),
      auth_(auth),
      infer_(SeriesOf(metrics, kInferMethod)),
      feedback_calls_(SeriesOf(metrics, kFeedbackRestMethod)),
      metadata_(SeriesOf(metrics, kMetadataMethod)),
      ready_(std::move(ready)) {}

std::vector<http::Route> RestService::Routes() {
  const std::string name = "([A-Za-z0-9._-]{1,64})";
  return {
      {"GET", "/v2/health/live",
       [](const http::Request&) {
         return Json(200, json{{"live", true}});
       }},
      {"GET", "/v2/health/ready",
       [this](const http::Request&) {
         const bool ready = ready_();
         return Json(ready ? 200 : 503, json{{"ready", ready}});
       }},
      {"GET", "/v2/models/" + name,
       [this](const http::Request& r) {
         const absl::Time start = absl::Now();
         absl::Status s = auth_ == nullptr ? absl::OkStatus()
                                           : auth_->Check(r.Header("authorization"), kPredictRole);
         http::Response resp = s.ok() ? Metadata(r.matches[0], false) : Error(s);
         Record(metadata_, start, s.ok() && resp.status != 200 ? absl::NotFoundError("") : s);
         return resp;
       }},
      {"GET", "/v2/models/" + name + "/ready",
       [this](const http::Request& r) {
         absl::Status s = auth_ == nullptr ? absl::OkStatus()
                                           : auth_->Check(r.Header("authorization"), kPredictRole);
         return s.ok() ? Metadata(r.matches[0], true) : Error(s);
       }},
      {"POST", "/v2/models/" + name + "/infer",
       [this](const http::Request& r) { return Infer(r, r.matches[0]); }},
      {"POST", "/v2/models/" + name + "/feedback",
       [this](const http::Request& r) { return Feedback(r, r.matches[0]); }},
  };
}

http::Response RestService::Metadata(const std::string& adapter, bool ready_only) {
  const serving::Predictor* predictor = predictor_->get();
  if (predictor == nullptr) {
    return Error(absl::UnavailableError("the model is still loading; retry shortly"));
  }
  absl::StatusOr<adapters::AdapterInfo> info = predictor->options().registry->Get(adapter);
  if (!info.ok()) return Error(info.status());
  const bool ready = info->state == adapters::AdapterState::kReady;
  if (ready_only) {
    return Json(ready ? 200 : 503,
                json{{"name", adapter},
                     {"ready", ready},
                     {"state", std::string(adapters::AdapterStateName(info->state))}});
  }
  const auto n = json::array({-1});
  const auto nc = json::array({-1, static_cast<int64_t>(info->serving.labels.size())});
  json outputs = json::array();
  for (const char* o : {"probabilities", "prob_std"}) {
    outputs.push_back({{"name", o}, {"datatype", "FP32"}, {"shape", nc}});
  }
  for (const char* o : {"predictive_entropy", "expected_entropy", "mutual_information",
                        "confidence", "error_score", "ood_score"}) {
    outputs.push_back({{"name", o}, {"datatype", "FP32"}, {"shape", n}});
  }
  outputs.push_back({{"name", "label"}, {"datatype", "BYTES"}, {"shape", n}});
  outputs.push_back({{"name", "label_index"}, {"datatype", "INT64"}, {"shape", n}});
  outputs.push_back({{"name", "abstained"}, {"datatype", "BOOL"}, {"shape", n}});
  outputs.push_back({{"name", "truncated"}, {"datatype", "BOOL"}, {"shape", n}});
  outputs.push_back({{"name", "num_tokens"}, {"datatype", "INT64"}, {"shape", n}});
  outputs.push_back({{"name", "windows"}, {"datatype", "INT64"}, {"shape", n}});
  outputs.push_back({{"name", "prediction_id"}, {"datatype", "BYTES"}, {"shape", n}});
  outputs.push_back({{"name", "prediction_set"},
                     {"datatype", "BOOL"},
                     {"shape", nc},
                     {"optional", true}});  // with parameters.coverage
  json out = {
      {"name", adapter},
      {"versions", json::array({std::to_string(info->version)})},
      {"platform", "loracle"},
      {"inputs",
       json::array(
           {{{"name", "text"}, {"datatype", "BYTES"}, {"shape", n}},
            {{"name", "text_pair"}, {"datatype", "BYTES"}, {"shape", n}, {"optional", true}}})},
      {"outputs", outputs},
      {"parameters",
       {{"state", std::string(adapters::AdapterStateName(info->state))},
        {"labels", info->serving.labels},
        {"members", info->serving.members},
        {"mc_samples", info->serving.mc_samples},
        {"temperature", info->serving.temperature},
        {"abstain_threshold", info->serving.abstain_threshold},
        {"max_windows", info->serving.max_windows},
        {"window_length", info->serving.window_length},
        {"rank", info->lora.rank},
        {"base_fingerprint", info->serving.base.fingerprint},
        {"base_verified",
         info->state == adapters::AdapterState::kReady && !info->serving.base.fingerprint.empty()},
        {"description", info->serving.description}}}};
  if (!info->error.empty()) out["parameters"]["error"] = info->error;
  return Json(200, out);
}

http::Response RestService::Infer(const http::Request& request, const std::string& adapter) {
  const absl::Time start = absl::Now();
  auto done = [&](const absl::Status& s) {
    Record(infer_, start, s);
    return Error(s);
  };
  if (auth_ != nullptr) {
    if (absl::Status s = auth_->Check(request.Header("authorization"), kPredictRole); !s.ok()) {
      return done(s);
    }
  }
  const serving::Predictor* predictor = predictor_->get();
  if (predictor == nullptr) return done(absl::UnavailableError("the model is still loading"));
  // Shared with the finishing thread: a reply that comes after this handler gave up (its
  // timeout) still writes into live memory.
  struct Call {
    absl::StatusOr<serving::PredictReply> reply;
    absl::Notification done;
  };
  auto call = std::make_shared<Call>();
  serving::PredictCall predict;
  absl::Duration timeout = options_.default_timeout;
  std::vector<std::string> outputs;
  std::string id;
  if (absl::Status s = ParseInfer(request.body, adapter, &predict, &timeout, &outputs, &id);
      !s.ok()) {
    return done(s);
  }
  const absl::Time deadline = start + timeout;
  const bool sets = predict.coverage.has_value();
  predictor->Predict(std::move(predict), deadline, /*cancelled=*/{},
                     [call](absl::StatusOr<serving::PredictReply> reply) {
                       call->reply = std::move(reply);
                       call->done.Notify();
                     });
  // The batcher answers an expired request with DEADLINE_EXCEEDED; the margin covers a forward
  // that started just before the deadline.
  if (!call->done.WaitForNotificationWithDeadline(deadline + absl::Seconds(5))) {
    return done(absl::DeadlineExceededError("no answer within the request's timeout"));
  }
  if (!call->reply.ok()) return done(call->reply.status());
  absl::StatusOr<json> out = InferResponse(*call->reply, outputs, id, sets);
  if (!out.ok()) return done(out.status());
  Record(infer_, start, absl::OkStatus());
  return Json(200, *out);
}

http::Response RestService::Feedback(const http::Request& request, const std::string& adapter) {
  const absl::Time start = absl::Now();
  auto finish = [&](const absl::Status& s, const json& body) {
    Record(feedback_calls_, start, s);
    return s.ok() ? Json(200, body) : Error(s);
  };
  if (auth_ != nullptr) {
    if (absl::Status s = auth_->Check(request.Header("authorization"), kFeedbackRole); !s.ok()) {
      return finish(s, {});
    }
  }
  const json j = json::parse(request.body, nullptr, /*allow_exceptions=*/false);
  std::vector<serving::FeedbackItem> items;
  const auto bad = absl::InvalidArgumentError(
      "the body must be {\"items\": [{\"prediction_id\": ID, \"true_label\": LABEL}, ...]}");
  if (j.is_discarded() || !j.is_object() || !j.contains("items") || !j["items"].is_array()) {
    return finish(bad, {});
  }
  for (const json& item : j["items"]) {
    if (!item.is_object() || !item.contains("prediction_id") ||
        !item["prediction_id"].is_string() || !item.contains("true_label") ||
        !item["true_label"].is_string()) {
      return finish(bad, {});
    }
    items.push_back(
        {item["prediction_id"].get<std::string>(), item["true_label"].get<std::string>()});
  }
  if (items.empty()) return finish(bad, {});
  absl::StatusOr<std::vector<serving::FeedbackOutcome>> outcomes =
      serving::Predictor::RecordFeedback(feedback_, options_.limits, items);
  if (!outcomes.ok()) return finish(outcomes.status(), {});
  json results = json::array();
  int64_t recorded = 0, duplicates = 0;
  for (const serving::FeedbackOutcome& o : *outcomes) {
    json e = {{"prediction_id", o.prediction_id}, {"duplicate", o.duplicate}};
    if (!o.status.ok()) {
      e["error"] = std::string(o.status.message());
      e["status"] = HttpStatusFor(o.status.code());
    } else {
      ++(o.duplicate ? duplicates : recorded);
    }
    results.push_back(std::move(e));
  }
  const absl::Status s;
  return finish(s, {{"model_name", adapter},
                    {"recorded", recorded},
                    {"duplicates", duplicates},
                    {"results", std::move(results)}});
}

}  // namespace loracle::rpc
