#ifndef LORACLE_SERVER_SERVING_ENSEMBLE_ENGINE_H_
#define LORACLE_SERVER_SERVING_ENSEMBLE_ENGINE_H_

// The ensemble engine's torch phases (the torch-free ones are in ensemble_layout.h): pack an
// EnsembleLayout's tokens, route its groups to adapter members, and run one forward to each
// group's logits. EnsembleRunner serves with them; the trainer's validation report, temperature
// fit and drift reference run the same code, and its training loop packs and routes through it
// (its forward under autograd stays its own, for the loss). Thread-safe: concurrent calls only
// read the base model.

#include <torch/torch.h>

#include <cstdint>
#include <functional>
#include <vector>

#include "absl/status/statusor.h"
#include "server/model/lora.h"
#include "server/serving/ensemble_layout.h"
#include "server/text/tokenizer.h"

namespace loracle::model {
struct BaseModel;
}

namespace loracle::serving {

// Every row's tokens, right-padded with `pad_id` to the longest row: int64 [rows, seq] host
// tensors (the encoder copies them to its device in one go).
struct PackedRows {
  torch::Tensor ids, mask, types;
};
PackedRows PackRows(const EnsembleLayout& layout,
                    const std::function<const text::Encoding&(const RowRef&)>& encoding,
                    int64_t pad_id);

// Group g runs member g.member of members_of(g.item), with dropout_of(g.item)'s masks when the
// group is sampled. The members must outlive the routing.
model::LoraRouting Route(
    const EnsembleLayout& layout,
    const std::function<const std::vector<model::LoraMember>&(size_t item)>& members_of,
    const std::function<const model::DropoutSpec*(size_t item)>& dropout_of);

// One forward of every row (in `parts` row parts on threads of their own; the caller sets the
// BLAS threads and the InferenceMode / NoGradGuard), then each group's head: one float64 host
// tensor [group rows, classes] per group, brought back in one copy. With `features`, also every
// row's pooled features (what the heads read), [rows, hidden] on the backbone's device.
absl::StatusOr<std::vector<torch::Tensor>> ForwardLogits(const model::BaseModel& base,
                                                         const PackedRows& rows,
                                                         const model::LoraRouting& routing,
                                                         int parts,
                                                         torch::Tensor* features = nullptr);

// Each input's mean feature over its rows (every pass and window): for each item, float32 host
// [inputs, hidden], inputs as `windows[item]` groups encodings (empty = one each). Items listed
// in `wanted` only (others get an undefined tensor); empty `wanted` = every item.
std::vector<torch::Tensor> MeanFeatures(const EnsembleLayout& layout,
                                        const torch::Tensor& row_features,
                                        const std::vector<std::vector<int>>& windows,
                                        const std::vector<bool>& wanted = {});

// ForwardLogits' tensors as GatherPasses wants them.
std::vector<std::vector<PassLogits>> GatherPasses(const EnsembleLayout& layout,
                                                  const std::vector<torch::Tensor>& group_logits,
                                                  const std::vector<std::vector<int>>& windows);

}  // namespace loracle::serving

#endif  // LORACLE_SERVER_SERVING_ENSEMBLE_ENGINE_H_
