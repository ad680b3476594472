#include "tools/pretrain/pretrainer.h"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/autocast_mode.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <set>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "server/model/architecture.h"
#include "server/model/backbone.h"
#include "server/model/checkpoint.h"
#include "server/model/cpu_runtime.h"
#include "server/model/dropout.h"
#include "server/util/file_util.h"

namespace loracle::pretrain {
namespace {

using training::Optimisation;
using training::RunShards;
using training::ShardedBackward;
using training::ShardRange;
using training::ValidateOptimisationOptions;

constexpr char kHeadPrefix[] = "cls.predictions.";
constexpr uint64_t kEvalSeedPurpose = 0xE7A1;
constexpr int64_t kBf16Rows = 64;        // see MlmLoss
constexpr int64_t kIgnoredLabel = -100;  // cross_entropy's ignore_index

torch::Tensor Activation(const std::string& act, const torch::Tensor& x) {
  if (act == "relu") return torch::relu(x);
  if (act == "gelu_new") return torch::gelu(x, "tanh");
  return torch::gelu(x);
}

// CPU autocast to bfloat16 on the calling thread for the scope's lifetime when `on`: matrix
// products run in bfloat16 (oneDNN; AVX512-BF16 where the CPU has it), parameters, their
// gradients and the optimiser stay float32. Autocast state and its weight-cast cache are
// per thread; the cache is cleared when the outermost scope ends.
class Bf16AutocastScope {
 public:
  explicit Bf16AutocastScope(bool on) : on_(on) {
    if (!on_) return;
    prev_enabled_ = at::autocast::is_cpu_enabled();
    prev_dtype_ = at::autocast::get_autocast_cpu_dtype();
    at::autocast::set_cpu_enabled(true);
    at::autocast::set_autocast_cpu_dtype(at::kBFloat16);
    at::autocast::increment_nesting();
  }
  ~Bf16AutocastScope() {
    if (!on_) return;
    if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
    at::autocast::set_cpu_enabled(prev_enabled_);
    at::autocast::set_autocast_cpu_dtype(prev_dtype_);
  }
  Bf16AutocastScope(const Bf16AutocastScope&) = delete;
  Bf16AutocastScope& operator=(const Bf16AutocastScope&) = delete;

 private:
  bool on_;
  bool prev_enabled_ = false;
  at::ScalarType prev_dtype_ = at::kBFloat16;
};

// The selected tokens' hidden states → the head's cross-entropy, summed (not averaged) so that
// shards can be weighted by their share of the step's predictions; and the correct argmaxes.
struct ShardLoss {
  torch::Tensor loss_sum;
  torch::Tensor bow_sum;  // the bag-of-words term summed over rows, when asked for
  int64_t correct = 0;
};

// `bow_targets` (BagOfWordsTargets of the batch's rows) also asks for the pooled [CLS] output's
// bag-of-words cross-entropy; `pooler` is then the encoder's pooler.
ShardLoss MlmLoss(model::BaseModel& base, MlmHead& head, const MaskedBatch& b, bool count,
                  const torch::Tensor* bow_targets = nullptr,
                  const model::LoraLinear* pooler = nullptr) {
  model::Backbone encoder = base.backbone;
  const torch::Tensor ones = torch::ones_like(b.input_ids);
  const torch::Tensor types = torch::zeros_like(b.input_ids);
  const torch::Tensor h = encoder->HiddenStates(b.input_ids, ones, types, nullptr);
  torch::Tensor positions = b.positions, labels = b.labels;
  if (at::autocast::is_cpu_enabled()) {
    // torch 1.13's bfloat16 products (oneDNN) corrupt memory (bad_alloc, bad_array_new_length
    // after ~1,000 steps) when two threads run products of many distinct shapes, as the MLM
    // head's would (a step's selected-token count varies). Padding the count to a multiple of
    // kBf16Rows leaves a few shapes; the padded rows' label is ignored by the loss.
    const int64_t n = positions.size(0), padded = (n + kBf16Rows - 1) / kBf16Rows * kBf16Rows;
    if (padded > n) {
      positions = torch::cat({positions, torch::zeros({padded - n}, torch::kInt64)});
      labels = torch::cat({labels, torch::full({padded - n}, kIgnoredLabel, torch::kInt64)});
    }
  }
  const torch::Tensor selected = h.reshape({-1, h.size(-1)}).index_select(0, positions);
  // Losses in float32 whatever precision the products ran in (a no-op without autocast).
  const torch::Tensor logits =
      head->forward(selected, encoder->word_embeddings_weight()).to(torch::kFloat32);
  ShardLoss out;
  out.loss_sum =
      torch::nn::functional::cross_entropy(logits, labels,
                                           torch::nn::functional::CrossEntropyFuncOptions()
                                               .reduction(torch::kSum)
                                               .ignore_index(kIgnoredLabel));
  if (count) out.correct = logits.argmax(1).eq(labels).sum().item<int64_t>();
  if (bow_targets != nullptr) {
    const torch::Tensor pooled = torch::tanh(
        torch::nn::functional::linear(h.select(1, 0), (*pooler)->weight, (*pooler)->bias));
    const torch::Tensor log_probs = torch::log_softmax(
        head->forward(pooled, encoder->word_embeddings_weight()).to(torch::kFloat32), 1);
    out.bow_sum = -(*bow_targets * log_probs).sum();
  }
  return out;
}

absl::Status ValidateRows(const TokenRows& rows, const char* what) {
  if (rows.empty()) return absl::InvalidArgumentError(absl::StrCat("no ", what, " rows"));
  for (const auto& r : rows) {
    if (r.size() != rows.front().size() || r.size() < 3) {
      return absl::InvalidArgumentError(
          absl::StrCat(what, " rows must all have the same length (>= 3)"));
    }
  }
  return absl::OkStatus();
}

}  // namespace

TokenRows PackSequences(const std::vector<std::vector<int64_t>>& documents, int seq_len,
                        int64_t cls_id, int64_t sep_id) {
  TokenRows rows;
  if (seq_len < 3) return rows;
  const size_t body = static_cast<size_t>(seq_len) - 2;
  std::vector<int64_t> current;
  current.reserve(body);
  auto push = [&](int64_t id) {
    current.push_back(id);
    if (current.size() == body) {
      std::vector<int64_t> row;
      row.reserve(static_cast<size_t>(seq_len));
      row.push_back(cls_id);
      row.insert(row.end(), current.begin(), current.end());
      row.push_back(sep_id);
      rows.push_back(std::move(row));
      current.clear();
    }
  };
  bool first = true;
  for (const auto& doc : documents) {
    if (doc.empty()) continue;
    if (!first) push(sep_id);
    first = false;
    for (int64_t id : doc) push(id);
  }
  return rows;
}

MaskedBatch MaskRows(const TokenRows& rows, const std::vector<size_t>& idx, uint64_t seed,
                     const MaskingOptions& o) {
  const int64_t n = static_cast<int64_t>(idx.size());
  const int64_t seq = n == 0 ? 0 : static_cast<int64_t>(rows[idx[0]].size());
  MaskedBatch b;
  b.input_ids = torch::empty({n, seq}, torch::kInt64);
  int64_t* ids = b.input_ids.data_ptr<int64_t>();
  std::vector<int64_t> positions, labels;
  const std::set<int64_t> never(o.never_mask.begin(), o.never_mask.end());
  for (int64_t r = 0; r < n; ++r) {
    const std::vector<int64_t>& row = rows[idx[static_cast<size_t>(r)]];
    std::mt19937_64 rng(model::MixSeed(seed, idx[static_cast<size_t>(r)]));
    std::uniform_real_distribution<double> u(0.0, 1.0);
    std::uniform_int_distribution<int64_t> random_token(0, o.vocab_size - 1);
    int64_t* out = ids + r * seq;
    std::copy(row.begin(), row.end(), out);
    const size_t before = positions.size();
    int64_t first_maskable = -1;
    for (int64_t t = 0; t < seq; ++t) {
      const int64_t id = row[static_cast<size_t>(t)];
      const double pick = u(rng), how = u(rng);  // two draws per token, selected or not
      const int64_t replacement = random_token(rng);
      if (never.count(id) > 0) continue;
      if (first_maskable < 0) first_maskable = t;
      if (pick >= o.probability) continue;
      positions.push_back(r * seq + t);
      labels.push_back(id);
      if (how < o.mask_fraction) {
        out[t] = o.mask_id;
      } else if (how < o.mask_fraction + o.random_fraction) {
        out[t] = replacement;
      }
    }
    if (positions.size() == before && first_maskable >= 0) {
      positions.push_back(r * seq + first_maskable);
      labels.push_back(row[static_cast<size_t>(first_maskable)]);
      out[first_maskable] = o.mask_id;
    }
  }
  b.positions = torch::tensor(positions, torch::kInt64);
  b.labels = torch::tensor(labels, torch::kInt64);
  return b;
}

torch::Tensor BagOfWordsTargets(const TokenRows& rows, const std::vector<size_t>& idx,
                                const std::vector<int64_t>& never, int64_t vocab_size) {
  const std::set<int64_t> skip(never.begin(), never.end());
  torch::Tensor t = torch::zeros({static_cast<int64_t>(idx.size()), vocab_size}, torch::kFloat32);
  float* data = t.data_ptr<float>();
  for (size_t r = 0; r < idx.size(); ++r) {
    std::set<int64_t> distinct;
    for (int64_t id : rows[idx[r]]) {
      if (skip.count(id) == 0 && id >= 0 && id < vocab_size) distinct.insert(id);
    }
    for (int64_t id : distinct) {
      data[static_cast<int64_t>(r) * vocab_size + id] = 1.0f / static_cast<float>(distinct.size());
    }
  }
  return t;
}

MlmHeadImpl::MlmHeadImpl(const model::ModelConfig& config, uint64_t seed)
    : activation_(config.hidden_act) {
  const int64_t h = config.hidden_size;
  auto transform = register_module("transform", std::make_shared<torch::nn::Module>());
  dense_ = transform->register_module("dense", torch::nn::Linear(h, h));
  norm_ = transform->register_module(
      "LayerNorm",
      torch::nn::LayerNorm(torch::nn::LayerNormOptions({h}).eps(config.layer_norm_eps)));
  bias_ = register_parameter("bias", torch::zeros({config.vocab_size}));
  torch::NoGradGuard no_grad;
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  dense_->weight.normal_(0.0, 0.02, gen);
  dense_->bias.zero_();
}

torch::Tensor MlmHeadImpl::forward(const torch::Tensor& hidden,
                                   const torch::Tensor& word_embeddings) {
  // LayerNorm in its weights' dtype (float32 under --bf16's autocast; a no-op otherwise).
  const torch::Tensor t =
      norm_(Activation(activation_, dense_(hidden)).to(norm_->weight.scalar_type()));
  return torch::addmm(bias_, t, word_embeddings.t());
}

std::vector<std::pair<std::string, torch::Tensor>> MlmHeadImpl::NamedTensors() const {
  std::vector<std::pair<std::string, torch::Tensor>> out;
  for (const auto& item : named_parameters(/*recurse=*/true)) {
    out.emplace_back(kHeadPrefix + item.key(), item.value());
  }
  return out;
}

MlmEval EvaluateMlm(model::BaseModel& base, MlmHead& head, const TokenRows& rows,
                    const MaskingOptions& masking, uint64_t seed, int threads) {
  constexpr size_t kChunk = 32;
  const int shards = static_cast<int>(std::clamp<size_t>(rows.size(), 1, threads));
  std::vector<double> loss(static_cast<size_t>(shards), 0.0);
  std::vector<int64_t> correct(static_cast<size_t>(shards), 0), count(static_cast<size_t>(shards));
  RunShards(shards, /*idle_priority=*/false, [&](int shard) {
    torch::NoGradGuard no_grad;
    const auto [first, last] = ShardRange(rows.size(), shards, shard);
    for (size_t start = first; start < last; start += kChunk) {
      std::vector<size_t> idx(std::min(kChunk, last - start));
      std::iota(idx.begin(), idx.end(), start);
      const MaskedBatch b = MaskRows(rows, idx, seed, masking);
      const ShardLoss l = MlmLoss(base, head, b, /*count=*/true);
      loss[static_cast<size_t>(shard)] += l.loss_sum.item<double>();
      correct[static_cast<size_t>(shard)] += l.correct;
      count[static_cast<size_t>(shard)] += b.labels.size(0);
    }
  });
  MlmEval e;
  double total_loss = 0;
  int64_t total_correct = 0;
  for (int s = 0; s < shards; ++s) {
    total_loss += loss[static_cast<size_t>(s)];
    total_correct += correct[static_cast<size_t>(s)];
    e.predictions += count[static_cast<size_t>(s)];
  }
  if (e.predictions > 0) {
    e.loss = total_loss / static_cast<double>(e.predictions);
    e.accuracy = static_cast<double>(total_correct) / static_cast<double>(e.predictions);
  }
  return e;
}

absl::StatusOr<PretrainReport> Pretrain(
    model::BaseModel& base, MlmHead& head, const TokenRows& train, const TokenRows& heldout,
    const PretrainOptions& o, int64_t log_every,
    const std::function<void(const PretrainProgress&)>& progress) {
  if (absl::Status s = ValidateRows(train, "training"); !s.ok()) return s;
  if (absl::Status s = ValidateRows(heldout, "held-out"); !s.ok()) return s;
  if (absl::Status s = ValidateOptimisationOptions(o.optimisation); !s.ok()) return s;
  if (o.steps < 1 || o.batch_size < 1 || o.threads < 1 || o.eval_every < 0 || log_every < 1 ||
      !(o.cls_bow_weight >= 0)) {
    return absl::InvalidArgumentError(
        "steps, batch_size, threads and log_every must be >= 1, eval_every and cls_bow_weight >= "
        "0");
  }
  const bool bow = o.cls_bow_weight > 0;
  const int pooler_index = base.backbone->LinearIndex("pooler.dense");
  if (bow && pooler_index < 0) {
    return absl::InvalidArgumentError("cls_bow_weight > 0 needs a model with a pooler (BERT)");
  }
  const MaskingOptions& m = o.masking;
  if (!(m.probability > 0 && m.probability <= 1) || m.mask_fraction < 0 || m.random_fraction < 0 ||
      m.mask_fraction + m.random_fraction > 1 || m.mask_id < 0 || m.mask_id >= m.vocab_size) {
    return absl::InvalidArgumentError(
        "masking: probability in (0, 1], fractions >= 0 summing to <= 1, a [MASK] id in the "
        "vocabulary");
  }
  if (!base.placement.on_cpu() || base.placement.dtype != torch::kFloat32) {
    return absl::InvalidArgumentError("pretraining runs on the CPU in float32");
  }
  const absl::Time start = absl::Now();
  const model::TrainingScope training_scope;  // single-threaded BLAS: one shard per thread
  try {
    std::vector<torch::Tensor> decayed, not_decayed, all;
    auto add = [&](const std::string& name, const torch::Tensor& t) {
      const bool decay = !absl::EndsWith(name, "bias") && !absl::StrContains(name, "LayerNorm") &&
                         !absl::StrContains(name, "layer_norm");
      (decay ? decayed : not_decayed).push_back(t);
      all.push_back(t);
    };
    for (auto& [name, t] : base.backbone->Unfreeze()) add(name, t);
    const model::LoraLinear* pooler = bow ? &base.backbone->linear(pooler_index) : nullptr;
    if (bow) {
      (*pooler)->weight.set_requires_grad(true);
      (*pooler)->bias.set_requires_grad(true);
      add("pooler.dense.weight", (*pooler)->weight);
      add("pooler.dense.bias", (*pooler)->bias);
    }
    for (auto& [name, t] : head->NamedTensors()) {
      t.set_requires_grad(true);
      add(name, t);
    }
    Optimisation optimisation(decayed, not_decayed, {all}, o.optimisation, o.steps);

    const size_t n = train.size();
    const size_t batch = std::min<size_t>(static_cast<size_t>(o.batch_size), n);
    const int64_t seq = static_cast<int64_t>(train.front().size());
    std::vector<size_t> order(n);
    int64_t epoch = -1;
    size_t cursor = n;  // start a new epoch at once
    PretrainReport report;
    double loss_since = 0, bow_since = 0;
    int64_t steps_since = 0;
    auto emit = [&](PretrainProgress p) {
      report.curve.push_back(p);
      if (progress) progress(p);
    };
    for (int64_t step = 0; step < o.steps; ++step) {
      std::vector<size_t> idx;
      while (idx.size() < batch) {
        if (cursor == n) {
          ++epoch;
          std::iota(order.begin(), order.end(), 0);
          std::shuffle(order.begin(), order.end(),
                       std::mt19937_64(model::MixSeed(o.seed, static_cast<uint64_t>(epoch), 2)));
          cursor = 0;
        }
        idx.push_back(order[cursor++]);
      }
      const int shards = static_cast<int>(std::clamp<size_t>(idx.size(), 1, o.threads));
      const uint64_t step_seed = model::MixSeed(o.seed, static_cast<uint64_t>(step), 3);
      std::vector<MaskedBatch> batches;
      std::vector<torch::Tensor> bow_targets;
      int64_t predictions = 0;
      for (int s = 0; s < shards; ++s) {
        const auto [begin, end] = ShardRange(idx.size(), shards, s);
        const std::vector<size_t> shard_idx(idx.begin() + static_cast<int64_t>(begin),
                                            idx.begin() + static_cast<int64_t>(end));
        batches.push_back(MaskRows(train, shard_idx, step_seed, m));
        if (bow) {
          bow_targets.push_back(BagOfWordsTargets(train, shard_idx, m.never_mask, m.vocab_size));
        }
        predictions += batches.back().labels.size(0);
      }
      std::vector<double> bow_loss(static_cast<size_t>(shards), 0.0);
      const double loss = ShardedBackward(shards, false, all, [&](int s) {
        const auto i = static_cast<size_t>(s);
        const Bf16AutocastScope autocast(o.bf16);
        ShardLoss l =
            MlmLoss(base, head, batches[i], false, bow ? &bow_targets[i] : nullptr, pooler);
        torch::Tensor total = l.loss_sum / static_cast<double>(predictions);
        if (bow) {
          const torch::Tensor term = l.bow_sum / static_cast<double>(idx.size());
          bow_loss[i] = term.item<double>();
          total = total + o.cls_bow_weight * term;
        }
        return total;
      });
      if (absl::Status s = optimisation.Step(loss); !s.ok()) return s;
      loss_since += loss;
      for (double b : bow_loss) bow_since += b;
      ++steps_since;
      const int64_t done = step + 1;
      report.tokens += static_cast<int64_t>(idx.size()) * seq;
      const bool eval = done == o.steps || (o.eval_every > 0 && done % o.eval_every == 0);
      if (done % log_every == 0 || eval) {
        PretrainProgress p;
        p.step = done;
        p.total_steps = o.steps;
        p.loss = loss_since / static_cast<double>(steps_since);
        p.cls_bow_loss = bow_since / static_cast<double>(steps_since);
        p.learning_rate = optimisation.last_learning_rate();
        p.elapsed_s = absl::ToDoubleSeconds(absl::Now() - start);
        p.tokens_per_s = static_cast<double>(report.tokens) / std::max(1e-9, p.elapsed_s);
        if (eval) {
          p.has_eval = true;
          p.eval = EvaluateMlm(base, head, heldout, m, model::MixSeed(o.seed, kEvalSeedPurpose),
                               o.threads);
        }
        loss_since = 0;
        bow_since = 0;
        steps_since = 0;
        emit(p);
      }
    }
    report.steps = o.steps;
    report.seconds = absl::ToDoubleSeconds(absl::Now() - start);
    report.tokens_per_s = static_cast<double>(report.tokens) / std::max(1e-9, report.seconds);
    report.heldout = report.curve.back().eval;
    for (torch::Tensor& t : all) {
      t.set_requires_grad(false);
      t.mutable_grad() = torch::Tensor();
    }
    return report;
  } catch (const c10::Error& e) {
    return absl::InternalError(absl::StrCat("pretraining failed: ", e.what_without_backtrace()));
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("pretraining failed: ", e.what()));
  }
}

absl::StatusOr<MlmHead> ReadMlmHead(const std::string& dir, const model::ModelConfig& config) {
  absl::StatusOr<std::unique_ptr<model::SafetensorsFile>> file =
      model::SafetensorsFile::Open(dir + "/model.safetensors");
  if (!file.ok()) return file.status();
  MlmHead head(config, 0);
  torch::NoGradGuard no_grad;
  for (auto& [name, t] : head->NamedTensors()) {
    absl::StatusOr<model::TensorView> view = (*file)->Get(name);
    if (!view.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat(dir, "/model.safetensors: no MLM head tensor \"", name, "\""));
    }
    if (view->shape != t.sizes().vec()) {
      return absl::InvalidArgumentError(
          absl::StrCat(dir, "/model.safetensors: \"", name, "\" has the wrong shape"));
    }
    if (absl::Status s = model::CopyInto(*view, name, t); !s.ok()) return s;
  }
  return head;
}

namespace {

// `named` (float tensors, any device) as `dir`/model.safetensors in `dtype`, with `config` as a
// BertForMaskedLM's config.json and the given vocab.txt and tokenizer_config.json.
absl::Status WriteNamedCheckpoint(const std::string& dir,
                                  const std::vector<std::pair<std::string, torch::Tensor>>& named,
                                  model::ModelConfig config, const std::string& vocab,
                                  const std::string& tokenizer_config, model::DType dtype,
                                  const std::map<std::string, std::string>& metadata) {
  if (dtype != model::DType::kF32 && dtype != model::DType::kF16 && dtype != model::DType::kBF16) {
    return absl::InvalidArgumentError("a checkpoint is written in F32, F16 or BF16");
  }
  if (absl::Status s = util::MakeDirs(dir); !s.ok()) return s;
  std::vector<std::vector<uint8_t>> data;
  data.reserve(named.size());
  std::vector<model::TensorToWrite> tensors;
  for (const auto& [name, t] : named) {
    const torch::Tensor c = t.detach().to(torch::kCPU, torch::kFloat32).contiguous();
    std::vector<float> values(c.data_ptr<float>(), c.data_ptr<float>() + c.numel());
    data.push_back(model::EncodeFloats(values, dtype));
    tensors.push_back({name, dtype, c.sizes().vec(),
                       absl::Span<const uint8_t>(data.back().data(), data.back().size())});
  }
  config.architectures = {"BertForMaskedLM"};
  config.id2label.clear();
  std::map<std::string, std::string> meta = metadata;
  meta["format"] = "pt";
  if (absl::Status s = model::WriteSafetensors(dir + "/model.safetensors", tensors, meta);
      !s.ok()) {
    return s;
  }
  if (absl::Status s =
          util::WriteFileAtomically(dir + "/config.json", model::ModelConfigToJson(config));
      !s.ok()) {
    return s;
  }
  if (absl::Status s = util::WriteFileAtomically(dir + "/vocab.txt", vocab); !s.ok()) return s;
  return util::WriteFileAtomically(dir + "/tokenizer_config.json", tokenizer_config);
}

// The named tensors of `base`'s encoder ("bert."-prefixed) and of `head`.
std::vector<std::pair<std::string, torch::Tensor>> CheckpointTensors(const model::BaseModel& base,
                                                                     const MlmHead& head) {
  const std::string prefix = model::LayoutFor(base.config.architecture()).base_prefix + ".";
  std::vector<std::pair<std::string, torch::Tensor>> named;
  for (const auto& item : base.backbone->named_parameters(/*recurse=*/true)) {
    named.emplace_back(prefix + item.key(), item.value());
  }
  for (auto& item : head->NamedTensors()) named.push_back(std::move(item));
  return named;
}

}  // namespace

absl::Status WriteMlmCheckpoint(const std::string& dir, const model::BaseModel& base,
                                const MlmHead& head, model::DType dtype,
                                const std::map<std::string, std::string>& metadata) {
  if (base.config.architecture() != model::Architecture::kBert) {
    return absl::InvalidArgumentError("only BERT checkpoints have BertForMaskedLM's layout");
  }
  absl::StatusOr<std::string> vocab = util::ReadFileToString(base.dir + "/vocab.txt");
  if (!vocab.ok()) return vocab.status();
  absl::StatusOr<std::string> tokenizer_config =
      util::ReadFileToString(base.dir + "/tokenizer_config.json");
  if (!tokenizer_config.ok()) return tokenizer_config.status();
  return WriteNamedCheckpoint(dir, CheckpointTensors(base, head), base.config, *vocab,
                              *tokenizer_config, dtype, metadata);
}

absl::Status ExtendVocabulary(const std::string& from, const std::string& vocab,
                              const std::string& to) {
  absl::StatusOr<std::unique_ptr<model::BaseModel>> base = model::LoadBaseModel(from);
  if (!base.ok()) return base.status();
  if ((*base)->config.architecture() != model::Architecture::kBert) {
    return absl::InvalidArgumentError("only BERT checkpoints have BertForMaskedLM's layout");
  }
  absl::StatusOr<MlmHead> head = ReadMlmHead(from, (*base)->config);
  if (!head.ok()) return head.status();
  absl::StatusOr<std::string> tokenizer_config =
      util::ReadFileToString(from + "/tokenizer_config.json");
  if (!tokenizer_config.ok()) return tokenizer_config.status();
  const std::vector<std::string> entries = absl::StrSplit(vocab, '\n', absl::SkipEmpty());
  const text::Tokenizer& tokenizer = *(*base)->tokenizer;
  const size_t old_size = static_cast<size_t>(tokenizer.vocab_size());
  if (tokenizer.vocab_size() != (*base)->config.vocab_size) {
    return absl::InvalidArgumentError(absl::StrCat(from, "/vocab.txt has ", old_size,
                                                   " entries, its config.json a vocab_size of ",
                                                   (*base)->config.vocab_size));
  }
  if (entries.size() < old_size) {
    return absl::InvalidArgumentError(absl::StrCat("the new vocabulary has ", entries.size(),
                                                   " entries, fewer than the model's ", old_size));
  }
  std::set<std::string> seen;
  for (size_t i = 0; i < entries.size(); ++i) {
    if (i < old_size && entries[i] != tokenizer.IdToToken(static_cast<int64_t>(i))) {
      return absl::InvalidArgumentError(absl::StrCat(
          "the new vocabulary must begin with the model's: entry ", i + 1, " is \"", entries[i],
          "\", the model's \"", tokenizer.IdToToken(static_cast<int64_t>(i)), "\""));
    }
    if (!seen.insert(entries[i]).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("the new vocabulary has \"", entries[i], "\" twice (entry ", i + 1, ")"));
    }
  }
  // Each added entry's ids under the old vocabulary ("##ing" read as the word "ing").
  std::vector<torch::Tensor> pieces;
  for (size_t i = old_size; i < entries.size(); ++i) {
    absl::string_view word = entries[i];
    if (absl::StartsWith(word, "##") && word.size() > 2) word.remove_prefix(2);
    absl::StatusOr<std::vector<int64_t>> ids = tokenizer.TokenizeToIds(word);
    if (!ids.ok()) return ids.status();
    if (ids->empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("the new entry \"", entries[i], "\" has no tokens in the old vocabulary"));
    }
    pieces.push_back(torch::tensor(*ids, torch::kInt64));
  }
  std::vector<std::pair<std::string, torch::Tensor>> named = CheckpointTensors(**base, *head);
  const std::string embeddings_name = "bert.embeddings.word_embeddings.weight";
  const std::string bias_name = std::string(kHeadPrefix) + "bias";
  torch::NoGradGuard no_grad;
  for (auto& [name, t] : named) {
    if (name != embeddings_name && name != bias_name) continue;
    const torch::Tensor old = t.detach().to(torch::kFloat32);
    std::vector<torch::Tensor> rows = {old};
    for (const torch::Tensor& ids : pieces) rows.push_back(old.index_select(0, ids).mean(0, true));
    t = torch::cat(rows);
  }
  model::ModelConfig config = (*base)->config;
  config.vocab_size = static_cast<int64_t>(entries.size());
  std::string text;
  for (const std::string& e : entries) absl::StrAppend(&text, e, "\n");
  return WriteNamedCheckpoint(to, named, config, text, *tokenizer_config, model::DType::kF32, {});
}

}  // namespace loracle::pretrain
