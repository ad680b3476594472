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
  // Row layout: requests grouped by adapter; within an adapter, member-major, then request,
  // sample, input. Each (adapter, member) is one contiguous LoraGroup.
  std::map<const adapters::Adapter*, std::vector<size_t>> by_adapter;
  for (size_t i = 0; i < batch.size(); ++i) by_adapter[batch[i]->adapter.get()].push_back(i);

  struct RowRef {
    size_t request, input;
    int member, sample;
  };
  std::vector<RowRef> rows;
  model::LoraRouting routing;
  for (const auto& [adapter, requests] : by_adapter) {
    const model::DropoutSpec& dropout = adapter->serving.dropout;
    const std::vector<model::LoraMember>& members = adapters::MembersOf(*adapter);
    for (int m = 0; m < static_cast<int>(members.size()); ++m) {
      // Two groups per member: requests without Monte Carlo sampling, then those with it, whose
      // rows draw masks seeded by (request seed, member, sample): the same for every input of a
      // request and independent of what else is in the batch.
      for (const bool sampled : {false, true}) {
        model::LoraGroup g;
        g.begin = static_cast<int64_t>(rows.size());
        g.member = &members[static_cast<size_t>(m)];
        for (size_t r : requests) {
          const InferenceRequest& req = *batch[r];
          if ((req.mc_samples > 1 && dropout.active()) != sampled) continue;
          for (int s = 0; s < req.mc_samples; ++s) {
            for (size_t i = 0; i < req.inputs.size(); ++i) {
              rows.push_back({r, i, m, s});
              if (sampled) {
                g.row_seeds.push_back(
                    model::MixSeed(req.seed, static_cast<uint64_t>(m), static_cast<uint64_t>(s)));
              }
            }
          }
        }
        g.end = static_cast<int64_t>(rows.size());
        if (g.end == g.begin) continue;
        if (sampled) g.dropout = &dropout;
        routing.push_back(std::move(g));
      }
    }
  }
  const int64_t n = static_cast<int64_t>(rows.size());
  int64_t seq = 1;
  for (const RowRef& row : rows) {
    seq = std::max<int64_t>(seq, batch[row.request]->inputs[row.input].input_ids.size());
  }
  torch::Tensor ids = torch::full({n, seq}, options_.base->tokenizer->pad_id(), torch::kInt64);
  torch::Tensor mask = torch::zeros({n, seq}, torch::kInt64);
  torch::Tensor types = torch::zeros({n, seq}, torch::kInt64);
  auto ids_a = ids.accessor<int64_t, 2>();
  auto mask_a = mask.accessor<int64_t, 2>();
  auto types_a = types.accessor<int64_t, 2>();
  for (int64_t k = 0; k < n; ++k) {
    const model::Encoding& e = batch[rows[k].request]->inputs[rows[k].input];
    for (size_t t = 0; t < e.input_ids.size(); ++t) {
      ids_a[k][t] = e.input_ids[t];
      mask_a[k][t] = 1;
      types_a[k][t] = e.token_type_ids[t];
    }
  }

  absl::Time start;
  std::vector<torch::Tensor> logits;
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
    const int blas = cpu ? model::SetServingBlasThreads(parts > 1 ? 1 : cores) : cores;
    // One part with BLAS pinned to one thread (a job trains): split the tokens instead.
    model::TokenParallelScope token_split(parts == 1 && blas < cores && parallel ? cores : 1);
    model::Encoder encoder = options_.base->encoder;  // a handle: forwards only read it
    // ids, mask and types are host tensors: the encoder copies them to its device in one go.
    absl::StatusOr<torch::Tensor> pooled =
        model::ForwardInParts(encoder, ids, mask, types, routing, parts);
    if (!pooled.ok()) return pooled.status();
    // Every group's logits, flattened into one tensor: one copy back to the host.
    std::vector<torch::Tensor> flat;
    std::vector<int64_t> classes;
    for (torch::Tensor& l : model::EncoderImpl::Classify(*pooled, routing)) {
      classes.push_back(l.size(1));
      flat.push_back(l.to(torch::kFloat64).reshape({-1}));
    }
    const torch::Tensor host = torch::cat(flat).to(torch::kCPU).contiguous();
    int64_t offset = 0;
    for (size_t g = 0; g < routing.size(); ++g) {
      const int64_t rows_in_group = routing[g].end - routing[g].begin;
      logits.push_back(
          host.narrow(0, offset, rows_in_group * classes[g]).view({rows_in_group, classes[g]}));
      offset += rows_in_group * classes[g];
    }
  }
  if (options_.metrics != nullptr) {
    options_.metrics->RecordBatch(n, static_cast<int64_t>(batch.size()),
                                  absl::ToDoubleSeconds(absl::Now() - start));
  }

  // Gather the K logit vectors of every encoding, member-major then sample.
  std::vector<std::vector<std::vector<std::vector<double>>>> enc_logits(batch.size());
  for (size_t r = 0; r < batch.size(); ++r) enc_logits[r].resize(batch[r]->inputs.size());
  for (size_t g = 0; g < routing.size(); ++g) {
    const int64_t classes = logits[g].size(1);
    const double* p = logits[g].data_ptr<double>();
    for (int64_t k = routing[g].begin; k < routing[g].end; ++k) {
      const double* row = p + (k - routing[g].begin) * classes;
      enc_logits[rows[k].request][rows[k].input].emplace_back(row, row + classes);
    }
  }
  // Per input: each pass's logits averaged over the input's windows, temperature-scaled, and the
  // K passes summarised.
  std::vector<InferenceResult> results(batch.size());
  for (size_t r = 0; r < batch.size(); ++r) {
    const InferenceRequest& req = *batch[r];
    const double temperature = req.adapter->serving.temperature;
    results[r].inputs.resize(req.num_inputs());
    size_t first = 0;
    for (size_t i = 0; i < req.num_inputs(); ++i) {
      const size_t count = req.windows.empty() ? 1 : static_cast<size_t>(req.windows[i]);
      std::vector<std::vector<double>>& sum = enc_logits[r][first];
      for (size_t w = 1; w < count; ++w) {
        const std::vector<std::vector<double>>& more = enc_logits[r][first + w];
        for (size_t k = 0; k < sum.size(); ++k) {
          for (size_t c = 0; c < sum[k].size(); ++c) sum[k][c] += more[k][c];
        }
      }
      std::vector<std::vector<double>> probs;
      for (std::vector<double>& pass : sum) {
        for (double& v : pass) v /= static_cast<double>(count);
        probs.push_back(Softmax(pass, temperature));
      }
      first += count;
      absl::StatusOr<UncertaintySummary> s = Summarize(probs);
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
  for (const model::Encoding& e : request.inputs) longest = std::max(longest, e.input_ids.size());
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
