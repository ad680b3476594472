#include "server/training/fine_tune_job.h"

#include <google/protobuf/util/json_util.h>

#include <algorithm>
#include <map>
#include <memory>
#include <optional>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "server/adapters/adapter_weights.h"
#include "server/adapters/registry.h"
#include "server/adapters/store.h"
#include "server/calibration/conformal.h"
#include "server/calibration/drift.h"
#include "server/model/architecture.h"
#include "server/model/checkpoint.h"
#include "server/training/dataset.h"
#include "server/util/file_util.h"

namespace loracle::training {
namespace {

using loracle::v1::SubmitRequest;

loracle::v1::CalibrationReport ToProto(const calibration::CalibrationReport& r) {
  loracle::v1::CalibrationReport out;
  calibration::FillProto(r, &out);
  return out;
}

loracle::v1::ValidationReport ToProto(const TrainingReport& r) {
  loracle::v1::ValidationReport out;
  out.set_examples(static_cast<uint32_t>(r.validation_examples));
  for (const auto& m : r.members) *out.add_members() = ToProto(m);
  *out.mutable_single() = ToProto(r.single);
  *out.mutable_ensemble() = ToProto(r.ensemble);
  out.set_temperature(static_cast<float>(r.temperature));
  *out.mutable_calibrated() = ToProto(r.calibrated);
  out.set_error_score(std::string(calibration::ErrorScoreName(r.error_score)));
  for (size_t i = 0; i < r.error_score_aurc.size(); ++i) {
    loracle::v1::ErrorScoreCandidate* c = out.add_error_score_candidates();
    c->set_name(std::string(calibration::ErrorScoreName(calibration::kErrorScores[i])));
    c->set_aurc(static_cast<float>(r.error_score_aurc[i]));
    if (i < r.error_score_wins.size()) {
      c->set_bootstrap_wins(static_cast<float>(r.error_score_wins[i]));
    }
  }
  out.set_members_trained(static_cast<uint32_t>(r.members_trained));
  for (double x : r.ensemble_nll_by_members) out.add_ensemble_nll_by_members(static_cast<float>(x));
  out.set_best_member(static_cast<uint32_t>(r.best_member));
  *out.mutable_best_member_calibrated() = ToProto(r.best_member_calibrated);
  out.set_best_member_aurc(static_cast<float>(r.best_member_aurc));
  out.set_members_aurc(static_cast<float>(r.members_aurc));
  if (r.ood_threshold > 0) {
    loracle::v1::OodReport* ood = out.mutable_ood();
    ood->set_method("mahalanobis");
    ood->set_threshold(static_cast<float>(r.ood_threshold));
    ood->set_quantile(static_cast<float>(kOodQuantile));
    ood->set_shrinkage(static_cast<float>(r.ood_shrinkage));
    double sum = 0;
    for (double x : r.ood_validation_scores) sum += x;
    ood->set_validation_mean_score(
        static_cast<float>(sum / std::max<size_t>(r.ood_validation_scores.size(), 1)));
  }
  if (!r.conformal_scores.empty()) {
    for (double target : {0.8, 0.9, 0.95}) {
      const double threshold = calibration::ConformalThreshold(r.conformal_scores, target);
      double covered = 0, size = 0;
      for (size_t i = 0; i < r.validation_probs.size(); ++i) {
        const std::vector<int> set = calibration::PredictionSet(r.validation_probs[i], threshold);
        size += static_cast<double>(set.size());
        covered += std::find(set.begin(), set.end(), r.validation_labels[i]) != set.end();
      }
      const double n = static_cast<double>(std::max<size_t>(r.validation_probs.size(), 1));
      loracle::v1::ConformalPoint* p = out.add_conformal();
      p->set_target(static_cast<float>(target));
      p->set_coverage(static_cast<float>(covered / n));
      p->set_mean_set_size(static_cast<float>(size / n));
    }
  }
  return out;
}

// Inline examples, or the file at `path` under `data_dir`.
absl::StatusOr<std::vector<Example>> ExamplesOf(
    const google::protobuf::RepeatedPtrField<loracle::v1::Example>& inline_examples,
    const std::string& path, const std::string& data_dir, int64_t max_bytes) {
  if (!path.empty()) {
    absl::StatusOr<std::string> resolved = ResolveDataPath(data_dir, path);
    if (!resolved.ok()) return resolved.status();
    return ReadExamples(*resolved, max_bytes);
  }
  std::vector<Example> out;
  for (const loracle::v1::Example& e : inline_examples) {
    out.push_back({e.text(), e.text_pair(), e.label()});
  }
  return out;
}

absl::StatusOr<EncodedData> Encode(const model::BaseModel& base, const std::vector<Example>& ex,
                                   const std::vector<size_t>& idx,
                                   const std::map<std::string, int>& label_ids, int max_length,
                                   int max_windows, absl::string_view what) {
  EncodedData out;
  for (size_t i : idx) {
    std::optional<absl::string_view> pair;
    if (!ex[i].text_pair.empty()) pair = ex[i].text_pair;
    absl::StatusOr<std::vector<text::Encoding>> e =
        base.tokenizer->EncodeWindows(ex[i].text, pair, max_length, max_windows);
    if (!e.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat(what, " example ", i, ": ", e.status().message()));
    }
    out.Add(*std::move(e), label_ids.at(ex[i].label));
  }
  return out;
}

std::vector<size_t> Range(size_t n) {
  std::vector<size_t> out(n);
  for (size_t i = 0; i < n; ++i) out[i] = i;
  return out;
}

}  // namespace

absl::StatusOr<TrainerOptions> TrainerOptionsFor(const SubmitRequest& r,
                                                 const model::BaseModel& base) {
  TrainerOptions o;
  o.lora.rank = r.lora().rank() > 0 ? static_cast<int>(r.lora().rank()) : 8;
  o.lora.lora_alpha = r.lora().alpha() > 0 ? r.lora().alpha() : 16;
  o.lora.use_rslora = r.lora().use_rslora();
  o.lora.target_modules.assign(r.lora().target_modules().begin(), r.lora().target_modules().end());
  if (o.lora.target_modules.empty()) {
    // Every linear layer of the encoder: stronger, more diverse members than PEFT's
    // query/value default (tests/bench/README.md, "Defaults fitted to the data").
    o.lora.target_modules = model::AllLinearTargetModules(base.config.architecture());
  }
  o.lora.modules_to_save = model::HeadModules(base.config.architecture());
  const auto& d = r.dropout();
  switch (d.method()) {
    case loracle::v1::DROPOUT_METHOD_UNSPECIFIED:  // independently trained members instead
      o.dropout = {};
      break;
    case loracle::v1::DROPOUT_METHOD_LORA_DROPOUT:
      o.dropout = {model::DropoutMethod::kLoraDropout, d.rate() > 0 ? d.rate() : 0.1};
      break;
    case loracle::v1::DROPOUT_METHOD_INPUT:
      o.dropout = {model::DropoutMethod::kInput, d.rate() > 0 ? d.rate() : 0.1};
      break;
    case loracle::v1::DROPOUT_METHOD_HIDDENKEY:
      o.dropout = {model::DropoutMethod::kHiddenKey, 0,
                   d.dropkey_rate() > 0 ? d.dropkey_rate() : 0.1,
                   d.hiddencut_rate() > 0 ? d.hiddencut_rate() : 0.1};
      o.kl_weight = d.kl_weight() > 0 ? d.kl_weight() : 0.5;
      break;
    case loracle::v1::DROPOUT_METHOD_NONE:
      o.dropout = {};
      break;
    default:
      return absl::InvalidArgumentError(absl::StrCat("unknown dropout method ", d.method()));
  }
  // Unset M: up to kDefaultMembers members, keeping the first ones that pay on validation.
  o.members = r.ensemble_members() > 0 ? static_cast<int>(r.ensemble_members()) : kDefaultMembers;
  o.choose_members = r.ensemble_members() == 0;
  o.mc_samples =
      r.mc_samples() > 0 ? static_cast<int>(r.mc_samples()) : (o.dropout.active() ? 4 : 1);
  // Epochs: a budget; the weights kept are the best validation epoch's, and `patience` epochs
  // without a better validation NLL end the run early.
  o.epochs = r.epochs() > 0 ? static_cast<int>(r.epochs()) : kDefaultEpochs;
  o.max_steps = static_cast<int64_t>(r.max_steps());
  o.learning_rate = r.learning_rate() > 0 ? r.learning_rate() : 1e-3;
  o.batch_size = r.batch_size() > 0 ? static_cast<int>(r.batch_size()) : 16;
  const auto& opt = r.optimizer();
  o.warmup_fraction = opt.warmup_fraction() > 0 ? opt.warmup_fraction() : 0.06;
  o.weight_decay = opt.weight_decay() > 0 ? opt.weight_decay() : 0.01;
  o.max_grad_norm = opt.max_grad_norm() > 0 ? opt.max_grad_norm() : 1.0;
  o.patience = opt.patience() > 0 ? static_cast<int>(opt.patience()) : kDefaultPatience;
  o.seed = r.seed() != 0 ? r.seed() : 1;
  return o;
}

absl::StatusOr<JobOutcome> RunFineTune(const SubmitRequest& r, JobContext& context,
                                       const FineTuneContext& env) {
  const model::BaseModel& base = *env.base;
  absl::StatusOr<std::vector<Example>> train_ex =
      ExamplesOf(r.examples(), r.data_path(), env.data_dir, env.limits.max_bytes);
  if (!train_ex.ok()) return train_ex.status();
  absl::StatusOr<std::vector<Example>> val_ex =
      ExamplesOf(r.validation_examples(), r.validation_path(), env.data_dir, env.limits.max_bytes);
  if (!val_ex.ok()) return val_ex.status();

  std::vector<Example> all = *train_ex;
  all.insert(all.end(), val_ex->begin(), val_ex->end());
  if (absl::Status s = CheckDataLimits(all, {r.labels().begin(), r.labels().end()}, env.limits);
      !s.ok()) {
    return s;
  }
  absl::StatusOr<std::vector<std::string>> labels =
      ResolveLabels(all, {r.labels().begin(), r.labels().end()});
  if (!labels.ok()) return labels.status();
  std::map<std::string, int> label_ids;
  for (size_t i = 0; i < labels->size(); ++i) label_ids[(*labels)[i]] = static_cast<int>(i);

  absl::StatusOr<TrainerOptions> options = TrainerOptionsFor(r, base);
  if (!options.ok()) return options.status();
  options->threads = std::max(1, env.threads);
  options->idle_priority = env.idle_priority;
  const int max_length =
      std::min<int>(r.max_length() > 0 ? static_cast<int>(r.max_length()) : 128, base.max_length);
  const int max_windows = r.max_windows() > 0 ? static_cast<int>(r.max_windows()) : 1;
  const int train_windows = r.train_windows() > 0
                                ? std::min(static_cast<int>(r.train_windows()), max_windows)
                                : max_windows;

  // The validation set: given, or a stratified share of the training data.
  std::vector<size_t> train_idx = Range(train_ex->size());
  std::vector<Example> validation = *val_ex;
  std::vector<size_t> val_idx = Range(validation.size());
  if (validation.empty()) {
    std::vector<int> ids;
    for (const Example& e : *train_ex) ids.push_back(label_ids.at(e.label));
    const Split split =
        StratifiedSplit(ids, r.validation_split() > 0 ? r.validation_split() : 0.1, options->seed);
    if (split.validation.empty()) {
      return absl::InvalidArgumentError(
          "too few examples to hold out a validation set; send validation_examples or more data");
    }
    train_idx = split.train;
    val_idx = split.validation;
    validation = *train_ex;
  }
  absl::StatusOr<EncodedData> train =
      Encode(base, *train_ex, train_idx, label_ids, max_length, train_windows, "training");
  if (!train.ok()) return train.status();
  absl::StatusOr<EncodedData> val =
      Encode(base, validation, val_idx, label_ids, max_length, max_windows, "validation");
  if (!val.ok()) return val.status();
  context.Update(
      [&](loracle::v1::Job& j) {
        j.set_train_examples(static_cast<uint32_t>(train->size()));
        j.set_validation_examples(static_cast<uint32_t>(val->size()));
      },
      /*persist=*/true);

  absl::StatusOr<TrainedMembers> trained = Trainer::Train(
      base, *labels, *train, *val, *options,
      [&context](const TrainingProgress& p) {
        context.Update(
            [&p](loracle::v1::Job& j) {
              j.set_step(static_cast<uint32_t>(p.step));
              j.set_total_steps(static_cast<uint32_t>(p.total_steps));
              j.set_epoch(static_cast<uint32_t>(p.epoch));
              j.set_loss(static_cast<float>(p.loss));
              j.set_learning_rate(static_cast<float>(p.learning_rate));
              j.set_examples_per_s(static_cast<float>(p.examples_per_s));
              j.set_eta_s(static_cast<float>(p.eta_s));
              if (p.has_validation) *j.mutable_validation() = ToProto(p.validation);
            },
            /*persist=*/p.has_validation);
      },
      [&context] { return context.Cancelled(); });
  if (!trained.ok()) return trained.status();
  if (context.Cancelled()) return absl::CancelledError("cancelled before publishing");

  adapters::Adapter identity;
  identity.name = r.adapter();
  identity.serving.labels = *labels;
  identity.serving.members = static_cast<int>(trained->members.size());
  identity.serving.mc_samples = options->dropout.active() ? options->mc_samples : 1;
  identity.serving.temperature = trained->report.temperature;
  identity.serving.dropout = options->dropout;
  if (max_windows > 1) {
    identity.serving.max_windows = max_windows;
    identity.serving.window_length = max_length;
  }
  const calibration::DriftHistogram reference = calibration::HistogramOf(
      trained->report.validation_confidence, trained->report.validation_mutual_information);
  identity.serving.reference = {reference.examples, reference.confidence,
                                reference.mutual_information};
  const calibration::CalibrationReport& calibrated = trained->report.calibrated;
  identity.serving.validation = calibrated;
  identity.serving.conformal_scores = trained->report.conformal_scores;
  identity.serving.error_score = {
      std::string(calibration::ErrorScoreName(trained->report.error_score)),
      trained->report.error_scores, trained->report.error_wrong};
  if (trained->ood != nullptr) {
    identity.serving.ood = {"mahalanobis", model::kOodFile, kOodQuantile,
                            trained->report.ood_threshold};
  }
  identity.serving.description = absl::StrCat("fine-tuned by loracle on ", train->size(),
                                              " examples (", val->size(), " for validation)");
  identity.lora = options->lora;
  identity.lora.base_model_name_or_path = base.dir;
  std::shared_ptr<const adapters::Adapter> adapter =
      adapters::MakeAdapter(std::move(identity), std::move(trained->members), trained->ood);
  loracle::v1::ValidationReport report = ToProto(trained->report);
  report.set_members_kept(static_cast<uint32_t>(adapters::MembersOf(*adapter).size()));
  absl::StatusOr<int64_t> version = env.store->Publish(r.adapter(), [&](const std::string& dir) {
    if (absl::Status s = adapters::SaveAdapter(dir, *adapter, base); !s.ok()) return s;
    std::string json;
    google::protobuf::util::JsonPrintOptions p;
    p.add_whitespace = true;
    p.preserve_proto_field_names = true;
    if (!google::protobuf::util::MessageToJsonString(report, &json, p).ok()) {
      return absl::InternalError("cannot encode the validation report");
    }
    return util::WriteFileAtomically(dir + "/training_report.json", json);
  });
  if (!version.ok()) {
    return absl::Status(version.status().code(),
                        absl::StrCat("publishing ", r.adapter(), ": ", version.status().message()));
  }
  absl::StatusOr<adapters::AdapterInfo> loaded =
      env.registry->Load({r.adapter(), *version, "", /*pin=*/false});
  if (!loaded.ok()) {
    return absl::Status(
        loaded.status().code(),
        absl::StrCat("version ", *version, " of ", r.adapter(),
                     " was published but failed to load: ", loaded.status().message()));
  }
  JobOutcome out;
  out.published_version = *version;
  out.report = report;
  return out;
}

}  // namespace loracle::training
