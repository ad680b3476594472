#include "server/model/backbone.h"

#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>
#include <exception>
#include <functional>
#include <string>
#include <thread>

#include "absl/strings/str_cat.h"
#include "server/model/architecture.h"
#include "server/model/bert_encoder.h"
#include "server/model/hidden_key.h"
#include "server/model/llama_decoder.h"

namespace loracle::model {
namespace {

// The registry: config.json's model_type -> the family's factory. A new family is a file of its
// own plus an entry here (and its tensor names in architecture.cc).
struct Family {
  const char* model_type;
  Backbone (*make)(const ModelConfig& config);
};
constexpr Family kFamilies[] = {
    {"bert", MakeBertEncoder},   {"roberta", MakeBertEncoder},  {"distilbert", MakeBertEncoder},
    {"llama", MakeLlamaDecoder}, {"mistral", MakeLlamaDecoder}, {"qwen2", MakeLlamaDecoder},
    {"qwen3", MakeLlamaDecoder},
};

}  // namespace

HiddenKeyMasks DrawHiddenKeyMasks(const LoraRouting& routing, int64_t rows, int64_t seq,
                                  int64_t heads, int64_t intermediate, int64_t layer,
                                  const torch::TensorOptions& options,
                                  const std::function<void(int64_t, torch::Tensor&)>& protect) {
  const double lowest = LowestFinite(options.dtype().toScalarType());
  torch::Tensor dropkey = torch::zeros({rows, heads, 1, seq});
  torch::Tensor hiddencut = torch::ones({rows, seq, intermediate});
  const uint64_t li = static_cast<uint64_t>(layer);
  for (const LoraGroup& g : routing) {
    if (!g.dropout_on() || g.dropout->method != DropoutMethod::kHiddenKey) continue;
    for (int64_t r = g.begin; r < g.end; ++r) {
      const uint64_t seed = g.row_seeds[static_cast<size_t>(r - g.begin)];
      if (g.dropout->dropkey_rate > 0) {
        auto gen = at::make_generator<at::CPUGeneratorImpl>(MixSeed(seed, li, kMaskDropKey));
        torch::Tensor keep =
            torch::empty({heads, 1, seq}).bernoulli_(1.0 - g.dropout->dropkey_rate, gen);
        protect(r, keep);
        dropkey[r].copy_((1.0 - keep) * lowest);
      }
      if (g.dropout->hiddencut_rate > 0) {
        hiddencut[r].copy_(KeepMask({seq, intermediate}, g.dropout->hiddencut_rate,
                                    MixSeed(seed, li, kMaskHiddenCut)));
      }
    }
  }
  return {dropkey.to(options), hiddencut.to(options)};
}

std::vector<torch::Tensor> BackboneImpl::Classify(const torch::Tensor& features,
                                                  const LoraRouting& routing) {
  std::vector<torch::Tensor> out;
  out.reserve(routing.size());
  for (const LoraGroup& g : routing) {
    out.push_back(g.member->Head(features.slice(0, g.begin, g.end)));
  }
  return out;
}

absl::StatusOr<Backbone> CreateBackbone(const ModelConfig& config) {
  for (const Family& f : kFamilies) {
    if (config.model_type == f.model_type) return f.make(config);
  }
  return absl::InvalidArgumentError(
      absl::StrCat("model_type \"", config.model_type,
                   "\" is not supported (supported: ", SupportedModelTypes(), ")"));
}

absl::StatusOr<torch::Tensor> ForwardInParts(BackboneImpl& backbone, const torch::Tensor& input_ids,
                                             const torch::Tensor& attention_mask,
                                             const torch::Tensor& token_type_ids,
                                             const LoraRouting& routing, int parts) {
  const int64_t rows = input_ids.size(0);
  parts = static_cast<int>(std::clamp<int64_t>(parts, 1, std::max<int64_t>(rows, 1)));
  std::vector<torch::Tensor> features(static_cast<size_t>(parts));
  std::vector<std::string> errors(static_cast<size_t>(parts));
  const bool inference = c10::InferenceMode::is_enabled();
  const bool grad = torch::GradMode::is_enabled();
  auto run = [&](int p) {
    c10::InferenceMode inference_guard(inference);
    torch::AutoGradMode grad_guard(grad);
    const int64_t begin = rows * p / parts, end = rows * (p + 1) / parts;
    const LoraRouting part = SliceRouting(routing, begin, end);
    try {
      features[static_cast<size_t>(p)] =
          backbone.forward(input_ids.slice(0, begin, end), attention_mask.slice(0, begin, end),
                           token_type_ids.slice(0, begin, end), &part);
    } catch (const std::exception& e) {
      errors[static_cast<size_t>(p)] = e.what();
    }
  };
  std::vector<std::thread> threads;
  for (int p = 1; p < parts; ++p) threads.emplace_back(run, p);
  run(0);
  for (std::thread& t : threads) t.join();
  for (int p = 0; p < parts; ++p) {
    if (!errors[static_cast<size_t>(p)].empty()) {
      return absl::InternalError(
          absl::StrCat("forward of rows part ", p, ": ", errors[static_cast<size_t>(p)]));
    }
  }
  return parts == 1 ? features[0] : torch::cat(features, 0);
}

}  // namespace loracle::model
