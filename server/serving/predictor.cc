#include "server/serving/predictor.h"

#include <algorithm>
#include <utility>

#include "absl/random/random.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "server/adapters/adapter.h"
#include "server/adapters/registry.h"
#include "server/calibration/conformal.h"
#include "server/calibration/error_score.h"
#include "server/calibration/feedback_store.h"
#include "server/metrics/metrics.h"
#include "server/serving/batcher.h"
#include "server/serving/inference_request.h"
#include "server/text/tokenizer.h"

namespace loracle::serving {
namespace {

// One input before its adapter is known: a single text's ids (cut into the adapter's windows
// later), or a text pair's encoding.
struct Tokenized {
  std::vector<int64_t> ids;
  std::optional<text::Encoding> pair;
};

std::string NewPredictionId() {
  thread_local absl::BitGen gen;
  return absl::StrFormat("%016x%016x", absl::Uniform<uint64_t>(gen), absl::Uniform<uint64_t>(gen));
}

// Per call: `set_threshold`, the conformal threshold of its coverage (unset: no sets);
// `risk_threshold`, the error score above which abstain_risk abstains (unset: none).
struct ReplyOptions {
  bool return_members = false;
  double abstain_threshold = 0;  // on the error score, for adapters with one
  std::optional<double> set_threshold, risk_threshold;
};

PredictReply Reply(const InferenceRequest& req, const InferenceResult& result,
                   const std::vector<bool>& truncated, const ReplyOptions& options,
                   calibration::FeedbackStore* feedback) {
  const absl::Time now = absl::Now();
  const adapters::Adapter& adapter = *req.adapter;
  PredictReply reply;
  reply.adapter = adapter.name;
  reply.version = adapter.version;
  reply.labels = adapter.serving.labels;
  reply.members = req.members;
  reply.mc_samples = req.mc_samples;
  // The adapter's error score (validated when its loracle.json was read); none: 0.
  std::optional<calibration::ErrorScore> kind;
  if (absl::StatusOr<calibration::ErrorScore> k =
          calibration::ParseErrorScore(adapter.serving.error_score.name);
      k.ok()) {
    kind = *k;
  }
  size_t first = 0;  // input i's first encoding
  for (size_t i = 0; i < result.inputs.size(); ++i) {
    const InputResult& in = result.inputs[i];
    Prediction& p = reply.predictions.emplace_back();
    p.prediction_id = NewPredictionId();
    p.label_index = in.summary.argmax;
    p.label = adapter.serving.labels[static_cast<size_t>(in.summary.argmax)];
    for (double v : in.summary.mean_probs) p.probs.push_back(static_cast<float>(v));
    if (feedback != nullptr) {
      const adapters::ServingConfig::Reference& ref = adapter.serving.reference;
      feedback->Remember(
          p.prediction_id,
          {adapter.name, adapter.version, &adapter.serving.labels, ref.examples, &ref.confidence,
           &ref.mutual_information, &adapter.serving.conformal_scores},
          p.probs, in.summary.confidence, in.summary.mutual_information, now);
    }
    p.predictive_entropy = static_cast<float>(in.summary.predictive_entropy);
    p.expected_entropy = static_cast<float>(in.summary.expected_entropy);
    p.mutual_information = static_cast<float>(in.summary.mutual_information);
    p.confidence = static_cast<float>(in.summary.confidence);
    for (double v : in.summary.prob_std) p.prob_std.push_back(static_cast<float>(v));
    const double error_score = kind.has_value() ? ErrorScoreOf(*kind, in.summary) : 0.0;
    p.error_score = static_cast<float>(error_score);
    p.ood_score = static_cast<float>(in.ood_score);
    // abstain_threshold compares the error score where the adapter has one, else (in the runner)
    // mutual information.
    const bool over_threshold =
        kind.has_value() ? options.abstain_threshold > 0 && error_score > options.abstain_threshold
                         : in.abstained;
    p.abstained = over_threshold ||
                  (options.risk_threshold.has_value() && error_score > *options.risk_threshold);
    p.truncated = truncated[i];
    const size_t windows = req.windows.empty() ? 1 : static_cast<size_t>(req.windows[i]);
    for (size_t w = 0; w < windows; ++w) {
      p.num_tokens += static_cast<int64_t>(req.inputs[first + w].input_ids.size());
    }
    first += windows;
    p.windows = static_cast<int64_t>(windows);
    if (options.return_members) {
      for (size_t k = 0; k < in.passes.size(); ++k) {
        p.members.push_back({static_cast<int>(k / static_cast<size_t>(req.mc_samples)),
                             static_cast<int>(k % static_cast<size_t>(req.mc_samples)),
                             in.passes[k]});
      }
    }
    if (options.set_threshold.has_value()) {
      for (int c : calibration::PredictionSet(in.summary.mean_probs, *options.set_threshold)) {
        p.prediction_set.push_back(adapter.serving.labels[static_cast<size_t>(c)]);
      }
    }
    if (adapter.series != nullptr) {
      adapter.series->RecordPrediction(p.abstained, in.summary.confidence,
                                       in.summary.mutual_information, in.summary.predictive_entropy,
                                       adapter.serving.ood.method.empty() ? -1.0 : in.ood_score);
    }
  }
  return reply;
}

}  // namespace

absl::StatusOr<std::unique_ptr<Predictor>> Predictor::Create(const Options& options) {
  if (options.registry == nullptr || options.tokenizer == nullptr || options.batcher == nullptr) {
    return absl::InvalidArgumentError("Predictor needs a registry, a tokenizer and a batcher");
  }
  if (options.max_length < 2) {
    return absl::InvalidArgumentError("Predictor: max_length must be >= 2");
  }
  return std::unique_ptr<Predictor>(new Predictor(options));
}

absl::Status Predictor::Validate(const PredictCall& call, const Limits& limits) {
  if (call.adapter.empty()) {
    return absl::InvalidArgumentError("adapter is required: name the adapter to predict with");
  }
  if (call.inputs.empty()) {
    return absl::InvalidArgumentError("inputs is empty: send at least one text");
  }
  const int64_t n = static_cast<int64_t>(call.inputs.size());
  if (n > limits.max_inputs_per_request) {
    return absl::InvalidArgumentError(absl::StrCat(
        "inputs has ", n, " texts; the limit per request is ", limits.max_inputs_per_request));
  }
  if (!call.text_pairs.empty() && call.text_pairs.size() != call.inputs.size()) {
    return absl::InvalidArgumentError(absl::StrCat("text_pairs has ", call.text_pairs.size(),
                                                   " entries; it must be empty or match the ", n,
                                                   " inputs"));
  }
  if (call.mc_samples.has_value() &&
      (*call.mc_samples < 1 || *call.mc_samples > limits.max_mc_samples)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "mc_samples must be in [1, ", limits.max_mc_samples, "], got ", *call.mc_samples));
  }
  if (call.abstain_threshold.has_value() && !(*call.abstain_threshold >= 0)) {
    return absl::InvalidArgumentError("abstain_threshold must be >= 0");
  }
  if (call.abstain_risk.has_value() && !(*call.abstain_risk > 0 && *call.abstain_risk < 1)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "abstain_risk must be in (0, 1) (e.g. 0.1: at most 10% errors among answered inputs), "
        "got ",
        *call.abstain_risk));
  }
  if (call.coverage.has_value() && !(*call.coverage > 0 && *call.coverage < 1)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "coverage must be in (0, 1) (e.g. 0.9 for sets that hold the true label 90% of the "
        "time), got ",
        *call.coverage));
  }
  for (size_t i = 0; i < call.inputs.size(); ++i) {
    for (const std::string* text :
         {&call.inputs[i], call.text_pairs.empty() ? nullptr : &call.text_pairs[i]}) {
      if (text != nullptr && static_cast<int64_t>(text->size()) > limits.max_input_bytes) {
        return absl::InvalidArgumentError(
            absl::StrCat(text == &call.inputs[i] ? "inputs[" : "text_pairs[", i, "] is ",
                         text->size(), " bytes; the limit is ", limits.max_input_bytes));
      }
    }
  }
  return absl::OkStatus();
}

void Predictor::Predict(PredictCall call, absl::Time deadline, std::function<bool()> cancelled,
                        std::function<void(absl::StatusOr<PredictReply>)> done) const {
  if (absl::Status s = Validate(call, options_.limits); !s.ok()) return done(s);

  // Tokenised before the adapter is acquired: an evicted adapter's reload (below) then finishes
  // the call on a load thread with little left to do. Single texts are cut into the adapter's
  // windows once it is known; pairs are encoded now (one window).
  const text::Tokenizer& tokenizer = *options_.tokenizer;
  std::vector<Tokenized> tokenized(call.inputs.size());
  for (size_t i = 0; i < call.inputs.size(); ++i) {
    Tokenized& t = tokenized[i];
    absl::Status s;
    if (!call.text_pairs.empty()) {
      absl::StatusOr<text::Encoding> e =
          tokenizer.Encode(call.inputs[i], call.text_pairs[i], options_.max_length);
      if (e.ok()) t.pair = *std::move(e);
      s = e.status();
    } else {
      absl::StatusOr<std::vector<int64_t>> ids = tokenizer.TokenizeToIds(call.inputs[i]);
      if (ids.ok()) t.ids = *std::move(ids);
      s = ids.status();
    }
    if (!s.ok()) {
      return done(absl::InvalidArgumentError(absl::StrCat("inputs[", i, "]: ", s.message())));
    }
  }
  const std::string name = call.adapter;
  // Runs here, or on a registry load thread after an evicted adapter was reloaded.
  auto submit = [this, call = std::move(call), deadline, cancelled = std::move(cancelled), done,
                 tokenized = std::move(tokenized)](
                    absl::StatusOr<std::shared_ptr<const adapters::Adapter>> adapter) mutable {
    if (!adapter.ok()) return done(adapter.status());
    auto req = std::make_unique<InferenceRequest>();
    const adapters::ServingConfig& serving = (*adapter)->serving;
    const int length = serving.window_length > 0
                           ? std::min(serving.window_length, options_.max_length)
                           : options_.max_length;
    std::vector<bool> truncated;
    // A prompt template: each text tokenised again inside the adapter's prompt, one window.
    if (!serving.prompt_template.empty()) {
      if (!call.text_pairs.empty()) {
        return done(absl::InvalidArgumentError(
            absl::StrCat("adapter ", call.adapter,
                         " wraps each input in its prompt template, which takes "
                         "single texts, not text_pairs")));
      }
      const adapters::PromptParts prompt = adapters::SplitPromptTemplate(serving.prompt_template);
      for (size_t i = 0; i < call.inputs.size(); ++i) {
        absl::StatusOr<text::Encoding> e =
            options_.tokenizer->EncodePrompt(prompt.prefix, call.inputs[i], prompt.suffix, length);
        if (!e.ok()) {
          return done(
              absl::InvalidArgumentError(absl::StrCat("inputs[", i, "]: ", e.status().message())));
        }
        truncated.push_back(e->truncated);
        req->inputs.push_back(*std::move(e));
      }
      tokenized.clear();
    }
    for (size_t i = 0; i < tokenized.size(); ++i) {
      Tokenized& t = tokenized[i];
      if (t.pair.has_value()) {
        truncated.push_back(t.pair->truncated);
        req->inputs.push_back(*std::move(t.pair));
        if (serving.max_windows > 1) req->windows.push_back(1);
        continue;
      }
      absl::StatusOr<std::vector<text::Encoding>> w =
          options_.tokenizer->Windows(t.ids, length, serving.max_windows);
      if (!w.ok()) {
        return done(
            absl::InvalidArgumentError(absl::StrCat("inputs[", i, "]: ", w.status().message())));
      }
      truncated.push_back(w->front().truncated);
      if (serving.max_windows > 1) req->windows.push_back(static_cast<int>(w->size()));
      for (text::Encoding& e : *w) req->inputs.push_back(std::move(e));
    }
    ReplyOptions reply;
    reply.return_members = call.return_members;
    if (call.abstain_risk.has_value()) {
      const adapters::ServingConfig::ErrorScoring& e = serving.error_score;
      if (e.name.empty() || e.scores.empty()) {
        return done(absl::FailedPreconditionError(absl::StrCat(
            "adapter ", call.adapter, " (version ", (*adapter)->version,
            ") has no error score chosen on validation data, so it cannot abstain by risk "
            "(abstain_risk): fine-tune it with loracle (Training.Submit), or use "
            "abstain_threshold")));
      }
      reply.risk_threshold =
          calibration::ThresholdForRisk(e.scores, e.wrong, *call.abstain_risk).threshold;
    }
    if (call.coverage.has_value()) {
      if (serving.conformal_scores.empty()) {
        return done(absl::FailedPreconditionError(absl::StrCat(
            "adapter ", call.adapter, " (version ", (*adapter)->version,
            ") has no conformal calibration scores, so it cannot serve prediction sets "
            "(coverage): fine-tune it with loracle (Training.Submit), which keeps them")));
      }
      reply.set_threshold =
          calibration::ConformalThreshold(serving.conformal_scores, *call.coverage);
    }
    req->adapter = *adapter;
    req->members = (*adapter)->members;
    req->mc_samples =
        call.mc_samples.has_value() ? static_cast<int>(*call.mc_samples) : serving.mc_samples;
    req->seed = call.seed;
    if (const int passes = req->members * req->mc_samples;
        passes > options_.limits.max_passes_per_request) {
      return done(absl::InvalidArgumentError(absl::StrCat(
          "adapter ", call.adapter, " has ", req->members, " members x ", req->mc_samples,
          " samples = ", passes, " forward passes per input; the limit is ",
          options_.limits.max_passes_per_request,
          " (--max_passes_per_request): ask for fewer mc_samples")));
    }
    const double abstain_threshold =
        call.abstain_threshold.has_value() ? *call.abstain_threshold : serving.abstain_threshold;
    if (calibration::ParseErrorScore(serving.error_score.name).ok()) {
      reply.abstain_threshold = abstain_threshold;  // on the error score
    } else {
      req->abstain_threshold = abstain_threshold;  // on mutual information, in the runner
    }
    if (deadline != absl::InfiniteFuture()) req->deadline = deadline;
    req->cancelled = std::move(cancelled);
    InferenceRequest* raw = req.get();
    req->done = [done, raw, truncated = std::move(truncated), reply,
                 feedback = options_.feedback](absl::StatusOr<InferenceResult> result) {
      if (!result.ok()) return done(result.status());
      done(Reply(*raw, *result, truncated, reply, feedback));
    };
    if (absl::Status s = options_.batcher->Submit(std::move(req)); !s.ok()) done(s);
  };
  options_.registry->AcquireAsync(name, deadline, std::move(submit));
}

absl::StatusOr<std::vector<FeedbackOutcome>> Predictor::RecordFeedback(
    calibration::FeedbackStore* feedback, const Limits& limits,
    const std::vector<FeedbackItem>& items) {
  if (feedback == nullptr) return absl::UnimplementedError("this server keeps no feedback");
  if (static_cast<int64_t>(items.size()) > limits.max_feedback_items) {
    return absl::InvalidArgumentError(absl::StrCat(
        "items has ", items.size(), " entries; the limit per call is ", limits.max_feedback_items));
  }
  const absl::Time now = absl::Now();
  std::vector<FeedbackOutcome> out;
  out.reserve(items.size());
  for (const FeedbackItem& item : items) {
    FeedbackOutcome& o = out.emplace_back();
    o.prediction_id = item.prediction_id;
    absl::StatusOr<calibration::FeedbackStore::Result> r =
        feedback->Record(item.prediction_id, item.true_label, now);
    if (!r.ok()) {
      o.status = r.status();
    } else {
      o.duplicate = *r == calibration::FeedbackStore::Result::kDuplicate;
    }
  }
  return out;
}

}  // namespace loracle::serving
