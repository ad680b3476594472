#include "server/training/trainer.h"

#include <ATen/CPUGeneratorImpl.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <exception>
#include <numeric>
#include <optional>
#include <random>
#include <thread>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "server/calibration/conformal.h"
#include "server/model/architecture.h"
#include "server/model/backbone.h"
#include "server/model/checkpoint.h"
#include "server/model/cpu_runtime.h"
#include "server/serving/ensemble_engine.h"
#include "server/serving/ensemble_layout.h"
#include "server/serving/uncertainty.h"
#include "server/training/losses.h"
#include "server/training/optimisation.h"
#include "server/util/log.h"

namespace loracle::training {
namespace {

// The seed of a Predict that names none: the report's sampled ensemble uses its masks.
constexpr uint64_t kPredictSeed = 0;

using model::LoraMember;

// The examples `idx` as rows of one ensemble-engine item (serving/ensemble_layout.h): every
// example's windows, example-major. keys[e] = first_key + the position of encoding e's example in
// `idx` (training's per-example masks).
struct Examples {
  std::vector<const text::Encoding*> encodings;
  std::vector<int64_t> keys;
  std::vector<int> windows;  // per example
  std::vector<int64_t> labels;
  int64_t size() const { return static_cast<int64_t>(labels.size()); }
};

Examples Collect(const EncodedData& data, const std::vector<size_t>& idx, int64_t first_key) {
  Examples e;
  for (size_t k = 0; k < idx.size(); ++k) {
    const size_t i = idx[k];
    e.labels.push_back(data.labels[i]);
    e.windows.push_back(static_cast<int>(data.end(i) - data.begin(i)));
    for (size_t w = data.begin(i); w < data.end(i); ++w) {
      e.encodings.push_back(&data.inputs[w]);
      e.keys.push_back(first_key + static_cast<int64_t>(k));
    }
  }
  return e;
}

// Members [first_member, first_member + members) x `samples` passes over `e`; masks drawn when
// `sampled`, per example when `keyed` (training) or per pass (validation, as Predict serves).
serving::EnsembleLayout LayOut(const Examples& e, int first_member, int members, int samples,
                               bool sampled, uint64_t seed, bool keyed) {
  serving::LayoutItem it;
  it.first_member = first_member;
  it.members = members;
  it.samples = samples;
  it.sampled = sampled;
  it.seed = seed;
  it.encodings = static_cast<int64_t>(e.encodings.size());
  if (keyed) it.example_keys = &e.keys;
  return serving::LayOut({it});
}

serving::PackedRows Pack(const serving::EnsembleLayout& layout, const Examples& e, int64_t pad_id) {
  return serving::PackRows(
      layout,
      [&](const serving::RowRef& r) -> const text::Encoding& {
        return *e.encodings[static_cast<size_t>(r.encoding)];
      },
      pad_id);
}

model::LoraRouting RouteTo(const serving::EnsembleLayout& layout,
                           const std::vector<LoraMember>& members,
                           const model::DropoutSpec* dropout) {
  return serving::Route(
      layout, [&](size_t) -> const std::vector<LoraMember>& { return members; },
      [&](size_t) { return dropout; });
}

// Training's forward under autograd: per routing group (one per member), [examples, classes]
// logits, an example's windows' logits averaged.
std::vector<torch::Tensor> Logits(const model::BaseModel& base, const serving::PackedRows& rows,
                                  const model::LoraRouting& routing, const Examples& e) {
  model::Backbone encoder = base.backbone;  // a handle; the weights are shared and frozen
  torch::Tensor features = encoder->forward(rows.ids, rows.mask, rows.types, &routing);
  std::vector<torch::Tensor> logits = model::BackboneImpl::Classify(features, routing);
  if (static_cast<int64_t>(e.encodings.size()) == e.size()) return logits;
  std::vector<int64_t> segment;
  for (int64_t k = 0; k < e.size(); ++k) {
    segment.insert(segment.end(), static_cast<size_t>(e.windows[static_cast<size_t>(k)]), k);
  }
  const torch::Device device = base.placement.device;
  const torch::Tensor seg = torch::tensor(segment, torch::kInt64).to(device);
  const torch::Tensor counts =
      torch::tensor(std::vector<float>(e.windows.begin(), e.windows.end())).to(device);
  for (torch::Tensor& l : logits) {
    const torch::Tensor sum = torch::zeros({e.size(), l.size(1)}, l.options()).index_add(0, seg, l);
    l = sum / counts.to(l.dtype()).unsqueeze(1);
  }
  return logits;
}

// Threads that split a step's examples: the CPU's cores, or one on a GPU (which runs a whole batch
// in parallel by itself).
size_t ShardThreads(const model::BaseModel& base, const TrainerOptions& o) {
  return base.placement.on_cpu() ? static_cast<size_t>(o.threads) : 1;
}

// PEFT's initialisation: A kaiming-uniform (a = sqrt(5): U(-1/sqrt(in), 1/sqrt(in))), B zero; the
// head as transformers initialises a Linear: N(0, 0.02) weights, zero biases.
absl::StatusOr<LoraMember> InitMember(const model::BaseModel& base, const TrainerOptions& o,
                                      int64_t num_labels, uint64_t seed) {
  // Drawn on the host (the same initial weights on every device); float32 on the base's device,
  // whatever its dtype (the forward casts them: lora.h).
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  const torch::Device device = base.placement.device;
  const model::BackboneImpl& encoder = *base.backbone;
  const model::Architecture arch = encoder.config().architecture();
  const std::string& base_prefix = model::LayoutFor(arch).base_prefix;
  LoraMember m;
  m.layers.resize(encoder.linear_names().size());
  int targeted = 0;
  for (size_t i = 0; i < encoder.linear_names().size(); ++i) {
    const std::string& path = encoder.linear_names()[i];
    if (!o.lora.Targets(path, base_prefix)) continue;
    const auto& linear = encoder.linear(static_cast<int>(i));
    const int64_t in = linear->in_features(), out = linear->out_features();
    const int rank = o.lora.RankFor(path);
    const double bound = 1.0 / std::sqrt(static_cast<double>(in));
    m.layers[i].a =
        torch::empty({rank, in}).uniform_(-bound, bound, gen).to(device).requires_grad_(true);
    m.layers[i].b = torch::zeros({out, rank}, device).requires_grad_(true);
    m.layers[i].scaling = o.lora.ScalingFor(path);
    ++targeted;
  }
  if (targeted == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("target_modules matches no linear layer of the base model (its layers are "
                     "named like \"",
                     encoder.linear_names().front(), "\")"));
  }
  const model::HeadLayout& head = model::HeadFor(arch);
  for (const auto& [name, shape] : model::HeadTensorShapes(encoder.config(), num_labels)) {
    torch::Tensor t =
        (shape.size() == 2 ? torch::empty(shape).normal_(0.0, 0.02, gen) : torch::zeros(shape))
            .to(device);
    t.requires_grad_(true);
    m.SetHeadTensor(head, name, std::move(t));
  }
  m.head_activation = head.activation;
  return m;
}

// The trainable tensors of `m`: matrices (decayed) and biases (not decayed).
void MemberParams(const LoraMember& m, std::vector<torch::Tensor>* matrices,
                  std::vector<torch::Tensor>* biases) {
  for (const model::LoraPair& p : m.layers) {
    if (!p.a.defined()) continue;
    matrices->push_back(p.a);
    matrices->push_back(p.b);
  }
  for (const torch::Tensor& t : {m.head_dense_weight, m.classifier_weight}) {
    if (t.defined()) matrices->push_back(t);
  }
  for (const torch::Tensor& t : {m.head_dense_bias, m.classifier_bias}) {
    if (t.defined()) biases->push_back(t);
  }
}

// A detached deep copy (the best epoch's weights; the result).
std::vector<LoraMember> Snapshot(const std::vector<LoraMember>& members) {
  std::vector<LoraMember> out = members;
  auto copy = [](torch::Tensor& t) {
    if (t.defined()) t = t.detach().clone();
  };
  for (LoraMember& m : out) {
    for (model::LoraPair& p : m.layers) {
      copy(p.a);
      copy(p.b);
    }
    copy(m.head_dense_weight);
    copy(m.head_dense_bias);
    copy(m.classifier_weight);
    copy(m.classifier_bias);
  }
  return out;
}

// Logit vectors of every validation example: passes[i][k], k over the members x samples passes,
// member-major. Run by the ensemble engine as serving runs a request of these texts: the same
// layout, masks (sample s of member m draws PassSeed(seed, m, s) for every example) and window
// averaging.
using Passes = std::vector<serving::PassLogits>;

absl::StatusOr<Passes> Evaluate(const model::BaseModel& base,
                                const std::vector<LoraMember>& members, const EncodedData& data,
                                int samples, const model::DropoutSpec* dropout, uint64_t seed,
                                const TrainerOptions& o, torch::Tensor* features = nullptr) {
  Passes out(data.size());
  // With `features`: each example's pooled features averaged over its passes and windows, as
  // serving averages them for the OOD score.
  std::vector<std::vector<torch::Tensor>> feature_chunks;
  constexpr size_t kChunk = 32;
  const int shards = static_cast<int>(std::clamp<size_t>(data.size(), 1, ShardThreads(base, o)));
  const bool sampled = samples > 1 && dropout != nullptr && dropout->active();
  std::vector<absl::Status> status(static_cast<size_t>(shards));
  feature_chunks.resize(static_cast<size_t>(shards));
  RunShards(shards, o.idle_priority, [&](int shard) {
    torch::NoGradGuard no_grad;
    const auto [first, last] = ShardRange(data.size(), shards, shard);
    for (size_t start = first; start < last; start += kChunk) {
      std::vector<size_t> idx(std::min(kChunk, last - start));
      std::iota(idx.begin(), idx.end(), start);
      const Examples e = Collect(data, idx, 0);
      const serving::EnsembleLayout layout =
          LayOut(e, 0, static_cast<int>(members.size()), samples, sampled, seed, false);
      const model::LoraRouting routing = RouteTo(layout, members, dropout);
      torch::Tensor rows;
      absl::StatusOr<std::vector<torch::Tensor>> logits =
          serving::ForwardLogits(base, Pack(layout, e, base.tokenizer->pad_id()), routing, 1,
                                 features != nullptr ? &rows : nullptr);
      if (!logits.ok()) {
        status[static_cast<size_t>(shard)] = logits.status();
        return;
      }
      if (features != nullptr) {
        feature_chunks[static_cast<size_t>(shard)].push_back(
            serving::MeanFeatures(layout, rows, {e.windows})[0]);
      }
      std::vector<std::vector<serving::PassLogits>> passes =
          serving::GatherPasses(layout, *logits, {e.windows});
      for (size_t i = 0; i < idx.size(); ++i) out[start + i] = std::move(passes[0][i]);
    }
  });
  for (const absl::Status& s : status) {
    if (!s.ok()) return s;
  }
  if (features != nullptr) {
    std::vector<torch::Tensor> all;
    for (auto& chunks : feature_chunks) all.insert(all.end(), chunks.begin(), chunks.end());
    *features = torch::cat(all);
  }
  return out;
}

// The passes of member m alone (its one deterministic pass per example).
Passes MemberPasses(const Passes& all, int m) {
  Passes out;
  for (const auto& example : all) out.push_back({example[static_cast<size_t>(m)]});
  return out;
}

absl::StatusOr<calibration::CalibrationReport> Report(const Passes& passes,
                                                      const std::vector<int>& labels,
                                                      double temperature) {
  return calibration::Evaluate(calibration::EnsembleProbs(passes, temperature), labels);
}

// The OOD detector (model/ood_detector.h): fitted on the training split's features (one pass per
// member, no dropout), its threshold the conformal kOodQuantile quantile of the validation
// texts' distances with features as serving averages them. A fit that fails (degenerate
// features) leaves the adapter without one, with a warning; it does not fail the job.
absl::Status FitOod(const model::BaseModel& base, const std::vector<LoraMember>& members,
                    const EncodedData& train, const EncodedData& validation,
                    const torch::Tensor& validation_features, int64_t classes,
                    const TrainerOptions& o, TrainedMembers* result) {
  torch::Tensor train_features;
  absl::StatusOr<Passes> passes =
      Evaluate(base, members, train, 1, nullptr, kPredictSeed, o, &train_features);
  if (!passes.ok()) return passes.status();
  absl::StatusOr<model::OodDetector> detector =
      model::OodDetector::Fit(train_features, train.labels, static_cast<int>(classes));
  if (!detector.ok()) {
    LORACLE_LOG(WARNING, "no OOD detector for this adapter: %s", detector.status().ToString());
    return absl::OkStatus();
  }
  const torch::Tensor d = detector->Distances(validation_features);
  std::vector<double> distances(d.data_ptr<double>(), d.data_ptr<double>() + d.numel());
  std::sort(distances.begin(), distances.end());
  const size_t n = distances.size();
  // The ceil((n + 1) q)-th smallest: a new text exchangeable with the validation texts exceeds
  // it with probability <= 1 - q.
  const size_t k =
      std::min(n, static_cast<size_t>(std::ceil(static_cast<double>(n + 1) * kOodQuantile)));
  const double threshold = distances[std::max<size_t>(k, 1) - 1];
  if (!(threshold > 0) || !std::isfinite(threshold)) {
    LORACLE_LOG(WARNING, "no OOD detector for this adapter: validation distances are degenerate");
    return absl::OkStatus();
  }
  TrainingReport& r = result->report;
  r.ood_threshold = threshold;
  r.ood_shrinkage = detector->shrinkage();
  for (double x : distances) r.ood_validation_scores.push_back(x / threshold);
  result->ood = std::make_shared<const model::OodDetector>(*std::move(detector));
  return absl::OkStatus();
}

// Each example's passes of the first k members (deterministic passes: one per member).
Passes FirstMembers(const Passes& all, size_t k) {
  Passes out;
  for (const auto& example : all) {
    out.emplace_back(example.begin(), example.begin() + static_cast<int64_t>(k));
  }
  return out;
}

// The ensemble of the first k members, calibrated (its own temperature), for every k; the best
// single member calibrated; the AURC (1 - confidence) of both.
absl::Status CompareMembers(const Passes& deterministic, const std::vector<int>& labels,
                            TrainingReport* r) {
  auto calibrated = [&](const Passes& passes) -> absl::StatusOr<calibration::CalibrationReport> {
    absl::StatusOr<double> t = calibration::FitEnsembleTemperature(passes, labels);
    if (!t.ok()) return t.status();
    return Report(passes, labels, *t);
  };
  auto aurc = [&](const Passes& passes) -> absl::StatusOr<double> {
    absl::StatusOr<double> t = calibration::FitEnsembleTemperature(passes, labels);
    if (!t.ok()) return t.status();
    std::vector<double> scores;
    std::vector<bool> wrong;
    for (size_t i = 0; i < passes.size(); ++i) {
      absl::StatusOr<serving::UncertaintySummary> s = serving::Summarise(passes[i], *t);
      if (!s.ok()) return s.status();
      scores.push_back(1 - s->confidence);
      wrong.push_back(s->argmax != labels[i]);
    }
    return calibration::Aurc(scores, wrong);
  };
  const size_t m_count = deterministic.empty() ? 0 : deterministic[0].size();
  double best_nll = 0;
  for (size_t m = 0; m < m_count; ++m) {
    absl::StatusOr<calibration::CalibrationReport> one =
        calibrated(MemberPasses(deterministic, static_cast<int>(m)));
    if (!one.ok()) return one.status();
    if (m == 0 || one->nll < best_nll) {
      best_nll = one->nll;
      r->best_member = static_cast<int>(m);
      r->best_member_calibrated = *one;
    }
    absl::StatusOr<calibration::CalibrationReport> first =
        calibrated(FirstMembers(deterministic, m + 1));
    if (!first.ok()) return first.status();
    r->ensemble_nll_by_members.push_back(first->nll);
  }
  absl::StatusOr<double> best_aurc = aurc(MemberPasses(deterministic, r->best_member));
  if (!best_aurc.ok()) return best_aurc.status();
  r->best_member_aurc = *best_aurc;
  absl::StatusOr<double> all_aurc = aurc(deterministic);
  if (!all_aurc.ok()) return all_aurc.status();
  r->members_aurc = *all_aurc;
  return absl::OkStatus();
}

OptimisationOptions OptimisationOf(const TrainerOptions& o) {
  return {o.learning_rate, o.warmup_fraction, o.weight_decay, o.max_grad_norm};
}

absl::Status ValidateOptions(const TrainerOptions& o, const EncodedData& train,
                             const EncodedData& validation) {
  for (const EncodedData* d : {&train, &validation}) {
    if (d->starts.empty()
            ? d->inputs.size() != d->labels.size()
            : d->starts.size() != d->labels.size() + 1 || d->starts.back() != d->inputs.size()) {
      return absl::InvalidArgumentError("encoded data: inputs, labels and starts disagree");
    }
  }
  if (train.size() == 0) return absl::InvalidArgumentError("no training examples");
  if (validation.size() == 0) return absl::InvalidArgumentError("no validation examples");
  if (o.members < 1 || o.mc_samples < 1 || o.epochs < 1 || o.batch_size < 1 || o.threads < 1) {
    return absl::InvalidArgumentError(
        "members, mc_samples, epochs, batch_size and threads must be >= 1");
  }
  if (o.max_steps < 0) return absl::InvalidArgumentError("max_steps must be >= 0");
  if (absl::Status s = ValidateOptimisationOptions(OptimisationOf(o)); !s.ok()) return s;
  return model::ValidateDropoutSpec(o.dropout);
}

}  // namespace

void EncodedData::Add(std::vector<text::Encoding> windows, int label) {
  if (starts.empty() && windows.size() != 1) {
    starts.resize(labels.size() + 1);
    std::iota(starts.begin(), starts.end(), size_t{0});
  }
  for (text::Encoding& e : windows) inputs.push_back(std::move(e));
  labels.push_back(label);
  if (!starts.empty()) starts.push_back(inputs.size());
}

absl::StatusOr<TrainedMembers> Trainer::Train(
    const model::BaseModel& base, const std::vector<std::string>& labels, const EncodedData& train,
    const EncodedData& validation, const TrainerOptions& o,
    const std::function<void(const TrainingProgress&)>& progress,
    const std::function<bool()>& cancelled) {
  if (absl::Status s = ValidateOptions(o, train, validation); !s.ok()) return s;
  const absl::Time start = absl::Now();
  const model::TrainingScope training_scope;  // single-threaded BLAS while this runs
  std::optional<model::IdlePriorityScope> priority;
  if (o.idle_priority) priority.emplace();
  const int m_count = o.members;
  const int64_t n_labels = static_cast<int64_t>(labels.size());
  try {
    std::vector<LoraMember> members;
    std::vector<torch::Tensor> matrices, biases;
    for (int m = 0; m < m_count; ++m) {
      absl::StatusOr<LoraMember> member =
          InitMember(base, o, n_labels, model::MixSeed(o.seed, static_cast<uint64_t>(m), 1));
      if (!member.ok()) return member.status();
      members.push_back(*std::move(member));
    }
    std::vector<std::vector<torch::Tensor>> member_params(members.size());
    for (size_t m = 0; m < members.size(); ++m) {
      std::vector<torch::Tensor> mat, bias;
      MemberParams(members[m], &mat, &bias);
      matrices.insert(matrices.end(), mat.begin(), mat.end());
      biases.insert(biases.end(), bias.begin(), bias.end());
      member_params[m] = mat;
      member_params[m].insert(member_params[m].end(), bias.begin(), bias.end());
    }
    const int64_t n = static_cast<int64_t>(train.size());
    const int64_t steps_per_epoch = (n + o.batch_size - 1) / o.batch_size;
    int64_t total = steps_per_epoch * o.epochs;
    if (o.max_steps > 0) total = std::min(total, o.max_steps);
    Optimisation optimisation(matrices, biases, member_params, OptimisationOf(o), total);
    const bool hiddenkey =
        o.dropout.active() && o.dropout.method == model::DropoutMethod::kHiddenKey;
    const int64_t pad = base.tokenizer->pad_id();
    const torch::Device device = base.placement.device;

    TrainingProgress p;
    p.total_steps = total;
    std::vector<LoraMember> best = Snapshot(members);
    double best_nll = INFINITY;
    int since_best = 0;
    int64_t best_step = 0;
    double loss_avg = 0;
    int64_t step = 0, examples_seen = 0;
    for (int epoch = 0; epoch < o.epochs && step < total; ++epoch) {
      std::vector<size_t> order(train.size());
      std::iota(order.begin(), order.end(), 0);
      std::shuffle(order.begin(), order.end(),
                   std::mt19937_64(model::MixSeed(o.seed, static_cast<uint64_t>(epoch), 2)));
      for (int64_t first = 0; first < n && step < total; first += o.batch_size) {
        if (cancelled && cancelled()) return absl::CancelledError("cancelled");
        const std::vector<size_t> idx(order.begin() + first,
                                      order.begin() + std::min<int64_t>(n, first + o.batch_size));
        // One chunk of members at a time (all M, or one), each chunk's examples split into
        // shards that run forward + backward on threads of their own.
        const int chunk =
            o.member_schedule == TrainerOptions::MemberSchedule::kOneForward ? m_count : 1;
        const int shards =
            static_cast<int>(std::clamp<size_t>(idx.size(), 1, ShardThreads(base, o)));
        double step_loss = 0;
        for (int first_m = 0; first_m < m_count; first_m += chunk) {
          const int copies = std::min(chunk, m_count - first_m);
          std::vector<torch::Tensor> params;
          for (int m = first_m; m < first_m + copies; ++m) {
            const auto& mp = member_params[static_cast<size_t>(m)];
            params.insert(params.end(), mp.begin(), mp.end());
          }
          step_loss += ShardedBackward(shards, o.idle_priority, params, [&](int shard) {
            const auto [begin, end] = ShardRange(idx.size(), shards, shard);
            const std::vector<size_t> sub(idx.begin() + static_cast<int64_t>(begin),
                                          idx.begin() + static_cast<int64_t>(end));
            const Examples e = Collect(train, sub, static_cast<int64_t>(begin));
            const torch::Tensor labels = torch::tensor(e.labels, torch::kInt64).to(device);
            // Pass `pass` of this step: member first_m + c draws, for every example, masks from
            // ExampleSeed(PassSeed(MixSeed(seed, step, pass), first_m + c, 0), its position).
            auto layout_for = [&](uint64_t pass) {
              return LayOut(e, first_m, copies, 1, o.dropout.active(),
                            model::MixSeed(o.seed, static_cast<uint64_t>(step), pass), true);
            };
            const serving::EnsembleLayout first_pass = layout_for(1);
            const serving::PackedRows rows = Pack(first_pass, e, pad);
            const std::vector<torch::Tensor> a =
                Logits(base, rows, RouteTo(first_pass, members, &o.dropout), e);
            torch::Tensor loss = torch::zeros({}, base.placement.device);
            if (hiddenkey) {
              const std::vector<torch::Tensor> bb =
                  Logits(base, rows, RouteTo(layout_for(2), members, &o.dropout), e);
              for (int c = 0; c < copies; ++c) {
                loss = loss + HiddenKeyLoss(a[static_cast<size_t>(c)], bb[static_cast<size_t>(c)],
                                            labels, o.kl_weight);
              }
            } else {
              for (int c = 0; c < copies; ++c) {
                loss = loss + CrossEntropy(a[static_cast<size_t>(c)], labels);
              }
            }
            // Every loss is a mean over rows: weighting each shard by its share of the step's
            // examples makes the shards' sum the step's mean.
            return loss * (static_cast<double>(end - begin) / static_cast<double>(idx.size()));
          });
        }
        const double value = step_loss / m_count;
        if (absl::Status s = optimisation.Step(value); !s.ok()) return s;
        const double lr = optimisation.last_learning_rate();
        ++step;
        examples_seen += static_cast<int64_t>(idx.size());
        loss_avg = step == 1 ? value : 0.9 * loss_avg + 0.1 * value;
        const double elapsed = absl::ToDoubleSeconds(absl::Now() - start);
        p.step = step;
        p.epoch = epoch;
        p.loss = loss_avg;
        p.learning_rate = lr;
        p.examples_per_s = elapsed > 0 ? static_cast<double>(examples_seen) / elapsed : 0;
        p.eta_s = elapsed / static_cast<double>(step) * static_cast<double>(total - step);
        if (progress) progress(p);
      }
      // Early stopping on the ensemble's validation NLL (members' deterministic passes).
      absl::StatusOr<Passes> passes = Evaluate(base, members, validation, 1, nullptr, 0, o);
      if (!passes.ok()) return passes.status();
      absl::StatusOr<calibration::CalibrationReport> val = Report(*passes, validation.labels, 1.0);
      if (!val.ok()) return val.status();
      p.has_validation = true;
      p.validation = *val;
      if (progress) progress(p);
      if (val->nll < best_nll) {
        best_nll = val->nll;
        best = Snapshot(members);
        since_best = 0;
        best_step = step;
      } else if (o.patience > 0 && ++since_best >= o.patience) {
        break;
      }
    }

    TrainedMembers result;
    result.members = std::move(best);
    TrainingReport& r = result.report;
    r.steps = step;
    r.best_step = best_step;
    r.validation_examples = validation.size();
    r.validation_labels = validation.labels;
    torch::Tensor validation_features;
    absl::StatusOr<Passes> evaluated = Evaluate(base, result.members, validation, 1, nullptr,
                                                kPredictSeed, o, &validation_features);
    if (!evaluated.ok()) return evaluated.status();
    Passes deterministic = *std::move(evaluated);
    for (int m = 0; m < m_count; ++m) {
      absl::StatusOr<calibration::CalibrationReport> rep =
          Report(MemberPasses(deterministic, m), validation.labels, 1.0);
      if (!rep.ok()) return rep.status();
      r.members.push_back(*rep);
    }
    r.single = r.members[0];
    r.members_trained = m_count;
    if (absl::Status s = CompareMembers(deterministic, validation.labels, &r); !s.ok()) return s;
    if (o.choose_members && m_count > 1) {
      // Keep the first k members, k growing only while a member cuts the calibrated validation
      // NLL by kMemberPayoff of the kept ensemble's.
      size_t keep = 1;
      for (size_t k = 2; k <= r.ensemble_nll_by_members.size(); ++k) {
        if (r.ensemble_nll_by_members[k - 1] <=
            r.ensemble_nll_by_members[keep - 1] * (1 - kMemberPayoff)) {
          keep = k;
        }
      }
      if (keep < static_cast<size_t>(m_count)) {
        result.members.resize(keep);
        absl::StatusOr<Passes> kept = Evaluate(base, result.members, validation, 1, nullptr,
                                               kPredictSeed, o, &validation_features);
        if (!kept.ok()) return kept.status();
        deterministic = *std::move(kept);
      }
    }
    // The ensemble as a Predict without a seed serves it: M x N passes, masks PassSeed(0, m, s).
    Passes ensemble = deterministic;
    if (o.mc_samples > 1 && o.dropout.active()) {
      absl::StatusOr<Passes> sampled = Evaluate(base, result.members, validation, o.mc_samples,
                                                &o.dropout, kPredictSeed, o, &validation_features);
      if (!sampled.ok()) return sampled.status();
      ensemble = *std::move(sampled);
    }
    absl::StatusOr<calibration::CalibrationReport> ens = Report(ensemble, validation.labels, 1.0);
    if (!ens.ok()) return ens.status();
    r.ensemble = *ens;
    absl::StatusOr<double> t = calibration::FitEnsembleTemperature(ensemble, validation.labels);
    if (!t.ok()) return t.status();
    r.temperature = *t;
    absl::StatusOr<calibration::CalibrationReport> cal =
        Report(ensemble, validation.labels, r.temperature);
    if (!cal.ok()) return cal.status();
    r.calibrated = *cal;
    std::vector<serving::UncertaintySummary> summaries;
    for (const serving::PassLogits& example : ensemble) {
      absl::StatusOr<serving::UncertaintySummary> s = serving::Summarise(example, r.temperature);
      if (!s.ok()) return s.status();
      summaries.push_back(*s);
      r.validation_probs.push_back(s->mean_probs);
      r.validation_confidence.push_back(s->confidence);
      r.validation_mutual_information.push_back(s->mutual_information);
    }
    absl::StatusOr<std::vector<double>> scores =
        calibration::LacScores(r.validation_probs, validation.labels);
    if (!scores.ok()) return scores.status();
    r.conformal_scores = *std::move(scores);
    absl::StatusOr<calibration::ErrorScoreChoice> choice =
        calibration::ChooseErrorScore(summaries, validation.labels);
    if (!choice.ok()) return choice.status();
    r.error_score = choice->score;
    r.error_score_aurc = choice->aurc;
    r.error_score_wins = choice->wins;
    std::vector<std::pair<double, bool>> scored;
    for (size_t i = 0; i < summaries.size(); ++i) {
      scored.emplace_back(calibration::ErrorScoreOf(r.error_score, summaries[i]),
                          summaries[i].argmax != validation.labels[i]);
    }
    std::sort(scored.begin(), scored.end());
    for (const auto& [score, wrong] : scored) {
      r.error_scores.push_back(score);
      r.error_wrong.push_back(wrong);
    }
    if (o.fit_ood) {
      if (absl::Status s = FitOod(base, result.members, train, validation, validation_features,
                                  n_labels, o, &result);
          !s.ok()) {
        return s;
      }
    }
    r.seconds = absl::ToDoubleSeconds(absl::Now() - start);
    return result;
  } catch (const c10::Error& e) {
    return absl::InternalError(absl::StrCat("training failed: ", e.what_without_backtrace()));
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("training failed: ", e.what()));
  }
}

}  // namespace loracle::training
