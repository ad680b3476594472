#include "server/serving/ensemble_runner.h"

#include <torch/torch.h>

#include <algorithm>
#include <map>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "server/adapters/adapter_weights.h"
#include "server/metrics/metrics.h"
#include "server/model/checkpoint.h"
#include "server/model/cpu_runtime.h"
#include "server/serving/ensemble_engine.h"

namespace loracle::serving {

absl::StatusOr<std::unique_ptr<EnsembleRunner>> EnsembleRunner::Create(const Options& options) {
  if (options.base == nullptr)
    return absl::InvalidArgumentError("EnsembleRunner needs a base model");
  std::unique_ptr<EnsembleRunner> r(new EnsembleRunner());
  r->options_ = options;
  return r;
}

EnsembleRunner::~EnsembleRunner() = default;

absl::StatusOr<std::vector<InferenceResult>> EnsembleRunner::Forward(
    const std::vector<std::unique_ptr<InferenceRequest>>& batch) {
  // Layout: one item per request; rows of one adapter member are contiguous. Requests with Monte
  // Carlo sampling draw masks seeded by (request seed, member, sample): the same for every input
  // of a request and independent of what else is in the batch.
  std::vector<LayoutItem> items;
  std::vector<std::vector<int>> windows;
  for (const std::unique_ptr<InferenceRequest>& req : batch) {
    LayoutItem it;
    it.adapter = req->adapter.get();
    it.members = req->members;
    it.samples = req->mc_samples;
    it.sampled = req->mc_samples > 1 && req->adapter->serving.dropout.active();
    it.seed = req->seed;
    it.encodings = static_cast<int64_t>(req->inputs.size());
    items.push_back(it);
    windows.push_back(req->windows);
  }
  const EnsembleLayout layout = LayOut(items);
  const PackedRows packed = PackRows(
      layout,
      [&](const RowRef& row) -> const text::Encoding& {
        return batch[row.item]->inputs[static_cast<size_t>(row.encoding)];
      },
      options_.base->tokenizer->pad_id());
  const model::LoraRouting routing = Route(
      layout,
      [&](size_t item) -> const std::vector<model::LoraMember>& {
        return adapters::MembersOf(*batch[item]->adapter);
      },
      [&](size_t item) { return &batch[item]->adapter->serving.dropout; });
  const int64_t n = static_cast<int64_t>(layout.rows.size());
  const int64_t seq = packed.ids.size(1);

  // Requests whose adapter scores how unlike its training inputs they are need the features.
  std::vector<bool> ood(batch.size(), false);
  bool any_ood = false;
  for (size_t r = 0; r < batch.size(); ++r) {
    ood[r] = adapters::OodOf(*batch[r]->adapter) != nullptr;
    any_ood = any_ood || ood[r];
  }
  torch::Tensor features;

  absl::Time start;
  absl::StatusOr<std::vector<torch::Tensor>> logits;
  {
    absl::MutexLock lock(&forward_mu_);
    start = absl::Now();
    c10::InferenceMode guard;
    const bool cpu = options_.base->placement.on_cpu();
    const int cores = options_.cores > 0 ? options_.cores : model::Cores();
    // A GPU runs the whole batch as one forward; the CPU splits it over its cores.
    const bool parallel = options_.parallel_rows && cpu;
    int parts = RowParts(n, seq, cores, parallel);
    // While a job trains, BLAS is single-threaded (model::TrainingScope): only row parts use
    // more than one core.
    if (parallel && model::TrainingActive()) {
      parts = static_cast<int>(std::clamp<int64_t>(n, 1, cores));
    }
    // int8: the heavy GEMMs run on the quantized engine, split by tokens below; BLAS keeps one
    // thread, so its pool's spinning workers do not compete with the token parts for the cores.
    const bool int8 = options_.base->placement.int8;
    const int blas = cpu ? model::SetServingBlasThreads(parts > 1 || int8 ? 1 : cores) : cores;
    // One part with BLAS pinned to one thread (a job trains, or int8, whose engine runs on
    // torch's one intra-op thread): split the tokens instead.
    model::TokenParallelScope token_split(parts == 1 && (blas < cores || int8) && parallel ? cores
                                                                                           : 1);
    logits = ForwardLogits(*options_.base, packed, routing, parts, any_ood ? &features : nullptr);
  }
  if (!logits.ok()) return logits.status();
  if (options_.metrics != nullptr) {
    options_.metrics->RecordBatch(n, static_cast<int64_t>(batch.size()),
                                  absl::ToDoubleSeconds(absl::Now() - start));
  }

  // Per input: its K passes (windows averaged), at the adapter's temperature, summarised.
  const std::vector<std::vector<PassLogits>> passes = GatherPasses(layout, *logits, windows);
  std::vector<torch::Tensor> ood_scores(batch.size());
  if (any_ood) {
    c10::InferenceMode guard;
    const std::vector<torch::Tensor> means = MeanFeatures(layout, features, windows, ood);
    for (size_t r = 0; r < batch.size(); ++r) {
      if (!ood[r]) continue;
      ood_scores[r] = adapters::OodOf(*batch[r]->adapter)->Distances(means[r]) /
                      batch[r]->adapter->serving.ood.threshold;
    }
  }
  std::vector<InferenceResult> results(batch.size());
  for (size_t r = 0; r < batch.size(); ++r) {
    const InferenceRequest& req = *batch[r];
    results[r].inputs.resize(req.num_inputs());
    if (ood_scores[r].defined()) {
      const double* d = ood_scores[r].data_ptr<double>();
      for (size_t i = 0; i < req.num_inputs(); ++i) results[r].inputs[i].ood_score = d[i];
    }
    for (size_t i = 0; i < req.num_inputs(); ++i) {
      std::vector<std::vector<double>> probs;
      absl::StatusOr<UncertaintySummary> s =
          Summarise(passes[r][i], req.adapter->serving.temperature, &probs);
      if (!s.ok()) return s.status();
      InputResult& out = results[r].inputs[i];
      out.summary = *std::move(s);
      out.abstained = Abstains(out.summary, req.abstain_threshold);
      for (const auto& pass : probs) out.passes.emplace_back(pass.begin(), pass.end());
    }
  }
  return results;
}

int EnsembleRunner::RowParts(int64_t rows, int64_t seq, int cores, bool parallel_rows) {
  if (!parallel_rows) return 1;
  return static_cast<int>(
      std::clamp<int64_t>(std::min(rows, rows * seq / kMinTokensPerPart), 1, std::max(cores, 1)));
}

int EnsembleRunner::LengthBucket(const InferenceRequest& request) {
  size_t longest = 1;
  for (const text::Encoding& e : request.inputs) longest = std::max(longest, e.input_ids.size());
  int bucket = 16;  // padding to the next power of two (at least 16) costs at most 2x
  while (static_cast<size_t>(bucket) < longest) bucket *= 2;
  return bucket;
}

void EnsembleRunner::Run(std::vector<std::unique_ptr<InferenceRequest>> batch) {
  // One forward per length bucket, so a short request never pays a long one's padding.
  std::map<int, std::vector<std::unique_ptr<InferenceRequest>>> buckets;
  for (auto& request : batch) {
    const int bucket = LengthBucket(*request);
    buckets[bucket].push_back(std::move(request));
  }
  for (auto& [length, requests] : buckets) {
    absl::StatusOr<std::vector<InferenceResult>> results;
    try {
      results = Forward(requests);
    } catch (const c10::Error& e) {
      results =
          absl::InternalError(absl::StrCat("forward pass failed: ", e.what_without_backtrace()));
    } catch (const std::exception& e) {
      results = absl::InternalError(absl::StrCat("forward pass failed: ", e.what()));
    }
    for (size_t r = 0; r < requests.size(); ++r) {
      if (results.ok()) {
        requests[r]->done(std::move((*results)[r]));
      } else {
        requests[r]->done(results.status());
      }
    }
  }
}

}  // namespace loracle::serving
