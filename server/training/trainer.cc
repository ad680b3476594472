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
#include "server/model/architecture.h"
#include "server/model/checkpoint.h"
#include "server/model/cpu_runtime.h"
#include "server/model/encoder.h"
#include "server/serving/uncertainty.h"
#include "server/training/losses.h"
#include "server/training/optimisation.h"

namespace loracle::training {
namespace {

using model::LoraMember;

// Rows for `copies` copies of the examples `idx` (copy-major, then example, then the example's
// windows), padded to the longest. Token tensors stay on the host (the encoder copies them to its
// device in one go); labels go to `device`.
struct Batch {
  torch::Tensor ids, mask, types, labels;
  int64_t examples = 0;
  int64_t rows_per_copy = 0;         // the examples' windows
  std::vector<int64_t> row_example;  // per row of a copy: its example, 0..examples-1
  torch::Tensor segment, windows;    // with windows: row_example and windows per example
};

Batch MakeBatch(const EncodedData& data, const std::vector<size_t>& idx, int copies, int64_t pad_id,
                torch::Device device) {
  const int64_t n = static_cast<int64_t>(idx.size());
  Batch b;
  b.examples = n;
  int64_t seq = 1;
  std::vector<int64_t> labels, windows;
  for (int64_t k = 0; k < n; ++k) {
    const size_t i = idx[static_cast<size_t>(k)];
    labels.push_back(data.labels[i]);
    windows.push_back(static_cast<int64_t>(data.end(i) - data.begin(i)));
    for (size_t w = data.begin(i); w < data.end(i); ++w) {
      seq = std::max<int64_t>(seq, data.inputs[w].input_ids.size());
      b.row_example.push_back(k);
    }
  }
  const int64_t rows = static_cast<int64_t>(b.row_example.size());
  b.rows_per_copy = rows;
  b.ids = torch::full({copies * rows, seq}, pad_id, torch::kInt64);
  b.mask = torch::zeros({copies * rows, seq}, torch::kInt64);
  b.types = torch::zeros({copies * rows, seq}, torch::kInt64);
  auto ids = b.ids.accessor<int64_t, 2>();
  auto mask = b.mask.accessor<int64_t, 2>();
  auto types = b.types.accessor<int64_t, 2>();
  int64_t r = 0;
  for (int64_t k = 0; k < n; ++k) {
    const size_t i = idx[static_cast<size_t>(k)];
    for (size_t w = data.begin(i); w < data.end(i); ++w, ++r) {
      const model::Encoding& e = data.inputs[w];
      for (int c = 0; c < copies; ++c) {
        const int64_t row = c * rows + r;
        for (size_t t = 0; t < e.input_ids.size(); ++t) {
          ids[row][static_cast<int64_t>(t)] = e.input_ids[t];
          mask[row][static_cast<int64_t>(t)] = 1;
          types[row][static_cast<int64_t>(t)] = e.token_type_ids[t];
        }
      }
    }
  }
  b.labels = torch::tensor(labels, torch::kInt64).to(device);
  if (rows != n) {
    b.segment = torch::tensor(b.row_example, torch::kInt64).to(device);
    b.windows = torch::tensor(windows, torch::kFloat32).to(device);
  }
  return b;
}

// One routing group per copy: rows [c * R, (c + 1) * R) of R = b.rows_per_copy use
// members[member_of(c)]; with a dropout spec, every window of example k draws its masks from
// MixSeed(seed_of(c), first_example + k), so that masks depend neither on how the examples are
// split into batches or shards nor on the window (one mask set per example, as serving does).
model::LoraRouting Routing(const std::vector<LoraMember>& members, int copies, const Batch& b,
                           const std::function<int(int)>& member_of,
                           const model::DropoutSpec* dropout,
                           const std::function<uint64_t(int)>& seed_of, int64_t first_example) {
  model::LoraRouting routing;
  for (int c = 0; c < copies; ++c) {
    model::LoraGroup g;
    g.begin = c * b.rows_per_copy;
    g.end = (c + 1) * b.rows_per_copy;
    g.member = &members[static_cast<size_t>(member_of(c))];
    if (dropout != nullptr && dropout->active()) {
      g.dropout = dropout;
      for (int64_t k : b.row_example) {
        g.row_seeds.push_back(model::MixSeed(seed_of(c), static_cast<uint64_t>(first_example + k)));
      }
    }
    routing.push_back(std::move(g));
  }
  return routing;
}

// Per copy, [examples, classes] logits: an example's windows' logits averaged.
std::vector<torch::Tensor> Logits(const model::BaseModel& base, const Batch& b,
                                  const model::LoraRouting& routing) {
  model::Encoder encoder = base.encoder;  // a handle; the weights are shared and frozen
  torch::Tensor features = encoder->forward(b.ids, b.mask, b.types, &routing);
  std::vector<torch::Tensor> logits = model::EncoderImpl::Classify(features, routing);
  if (!b.segment.defined()) return logits;
  for (torch::Tensor& l : logits) {
    const torch::Tensor sum =
        torch::zeros({b.examples, l.size(1)}, l.options()).index_add(0, b.segment, l);
    l = sum / b.windows.to(l.dtype()).unsqueeze(1);
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
  const model::EncoderImpl& encoder = *base.encoder;
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

// Logit vectors of every validation example: passes[i][k], k over `copies` member/sample passes.
using Passes = std::vector<std::vector<std::vector<double>>>;

Passes Evaluate(const model::BaseModel& base, const std::vector<LoraMember>& members,
                const EncodedData& data, int samples, const model::DropoutSpec* dropout,
                uint64_t seed, const TrainerOptions& o) {
  const int copies = static_cast<int>(members.size()) * samples;
  Passes out(data.size());
  constexpr size_t kChunk = 32;
  const int shards = static_cast<int>(std::clamp<size_t>(data.size(), 1, ShardThreads(base, o)));
  RunShards(shards, o.idle_priority, [&](int shard) {
    torch::NoGradGuard no_grad;
    const auto [first, last] = ShardRange(data.size(), shards, shard);
    for (size_t start = first; start < last; start += kChunk) {
      std::vector<size_t> idx(std::min(kChunk, last - start));
      std::iota(idx.begin(), idx.end(), start);
      const Batch b = MakeBatch(data, idx, copies, base.tokenizer->pad_id(), base.placement.device);
      // Copy c = member c / samples, sample c % samples; sample s of member m draws its masks
      // from (seed, m, s) and the example's index, as serving seeds a request's passes.
      const model::LoraRouting routing = Routing(
          members, copies, b, [samples](int c) { return c / samples; },
          samples > 1 ? dropout : nullptr,
          [&](int c) { return model::MixSeed(seed, c / samples, c % samples); },
          static_cast<int64_t>(start));
      const std::vector<torch::Tensor> logits = Logits(base, b, routing);
      for (int c = 0; c < copies; ++c) {
        const torch::Tensor l =
            logits[static_cast<size_t>(c)].to(torch::kCPU, torch::kFloat64).contiguous();
        const double* p = l.data_ptr<double>();
        const int64_t classes = l.size(1);
        for (int64_t i = 0; i < b.examples; ++i) {
          out[start + static_cast<size_t>(i)].emplace_back(p + i * classes, p + (i + 1) * classes);
        }
      }
    }
  });
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

void EncodedData::Add(std::vector<model::Encoding> windows, int label) {
  if (starts.empty() && windows.size() != 1) {
    starts.resize(labels.size() + 1);
    std::iota(starts.begin(), starts.end(), size_t{0});
  }
  for (model::Encoding& e : windows) inputs.push_back(std::move(e));
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
            const Batch b = MakeBatch(train, sub, copies, pad, base.placement.device);
            auto routing_for = [&](uint64_t pass) {
              return Routing(
                  members, copies, b, [first_m](int c) { return first_m + c; }, &o.dropout,
                  [&](int c) {
                    return model::MixSeed(model::MixSeed(o.seed, static_cast<uint64_t>(step), pass),
                                          static_cast<uint64_t>(first_m + c));
                  },
                  static_cast<int64_t>(begin));
            };
            const std::vector<torch::Tensor> a = Logits(base, b, routing_for(1));
            torch::Tensor loss = torch::zeros({}, base.placement.device);
            if (hiddenkey) {
              const std::vector<torch::Tensor> bb = Logits(base, b, routing_for(2));
              for (int c = 0; c < copies; ++c) {
                loss = loss + HiddenKeyLoss(a[static_cast<size_t>(c)], bb[static_cast<size_t>(c)],
                                            b.labels, o.kl_weight);
              }
            } else {
              for (int c = 0; c < copies; ++c) {
                loss = loss + CrossEntropy(a[static_cast<size_t>(c)], b.labels);
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
      const Passes passes = Evaluate(base, members, validation, 1, nullptr, o.seed, o);
      absl::StatusOr<calibration::CalibrationReport> val = Report(passes, validation.labels, 1.0);
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
    const Passes deterministic = Evaluate(base, result.members, validation, 1, nullptr, o.seed, o);
    for (int m = 0; m < m_count; ++m) {
      absl::StatusOr<calibration::CalibrationReport> rep =
          Report(MemberPasses(deterministic, m), validation.labels, 1.0);
      if (!rep.ok()) return rep.status();
      r.members.push_back(*rep);
    }
    r.single = r.members[0];
    const Passes ensemble =
        o.mc_samples > 1 && o.dropout.active()
            ? Evaluate(base, result.members, validation, o.mc_samples, &o.dropout, o.seed, o)
            : deterministic;
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
    for (const auto& example : ensemble) {
      std::vector<std::vector<double>> probs;
      for (const std::vector<double>& pass : example) {
        probs.push_back(serving::Softmax(pass, r.temperature));
      }
      absl::StatusOr<serving::UncertaintySummary> s = serving::Summarize(probs);
      if (!s.ok()) return s.status();
      r.validation_confidence.push_back(s->confidence);
      r.validation_mutual_information.push_back(s->mutual_information);
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
