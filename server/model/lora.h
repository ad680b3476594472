#ifndef LORACLE_SERVER_MODEL_LORA_H_
#define LORACLE_SERVER_MODEL_LORA_H_

// LoRA in LibTorch: one adapter member's weights (LoraMember), the routing of batch rows to
// members (LoraRouting), the seeded dropout masks of the LoRA dropout family (dropout.h), and the
// linear layer that adds each row's delta (LoraLinear). The encoder and the trainer both use it.

#include <torch/torch.h>

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "server/model/architecture.h"
#include "server/model/dropout.h"

namespace loracle::model {

// Purposes mixed into a row's seed (MixSeed) so that each of its masks is an independent stream.
// Part of the reproducibility contract: changing a value changes every sampled prediction.
enum MaskPurpose : uint64_t {
  kMaskA = 1,
  kMaskB = 2,
  kMaskInput = 3,
  kMaskDropKey = 4,
  kMaskHiddenCut = 5
};

// An int8 copy of a frozen base linear layer (--quantize=int8): weights quantized per output
// channel (symmetric, one scale per row), activations quantized per call (dynamic, one scale per
// call) by LibTorch's quantized engine (fbgemm, else oneDNN), products accumulated in int32 and
// returned in float32 with the bias added. For inference only: gradients never flow through it.
class Int8Linear;  // lora.cc

// The quantized engine --quantize=int8 uses on this machine ("fbgemm", "onednn"), or empty when
// LibTorch has none that runs int8 GEMMs here.
std::string Int8Engine();

// Packs weight [out, in] and bias [out] (float32, CPU). FAILED_PRECONDITION when Int8Engine() is
// empty or the tensors are not float32 on the CPU.
absl::StatusOr<std::shared_ptr<const Int8Linear>> PackInt8(const torch::Tensor& weight,
                                                           const torch::Tensor& bias);

// x [..., in] W^T + b as one 2-D addmm (the bias fused into the GEMM's output, where a 3-D input
// would take matmul plus a separate bias pass). With `int8` (the same layer packed by PackInt8),
// float32 CPU inputs under InferenceMode take the int8 product instead; training (grad mode) and
// other inputs keep W.
torch::Tensor FusedLinear(const torch::Tensor& x, const torch::Tensor& weight,
                          const torch::Tensor& bias, const Int8Linear* int8 = nullptr);

// One LoRA delta: y += scaling * (x A^T) B^T, with A [r, in], B [out, r], on the base model's
// device; computed in the activations' floating type whatever A and B's own.
struct LoraPair {
  torch::Tensor a;
  torch::Tensor b;
  double scaling = 1.0;
};

// The LoRA weights and classification head of one adapter (one ensemble member).
struct LoraMember {
  // Indexed by LoraLinear::index(); undefined tensors where the layer is not adapted.
  std::vector<LoraPair> layers;
  // The head (architecture.h HeadLayout): logits = classifier(act(head_dense(features))), where
  // head_dense is skipped when undefined (BERT).
  torch::Tensor head_dense_weight;  // [hidden, hidden]
  torch::Tensor head_dense_bias;    // [hidden]
  HeadActivation head_activation = HeadActivation::kNone;
  torch::Tensor classifier_weight;  // [num_labels, hidden]
  torch::Tensor classifier_bias;  // [num_labels]; undefined for heads without one (decoders' score)

  // Moves every tensor to `options`' device and floating type (not thread-safe).
  void To(const torch::TensorOptions& options);
  // Classification logits of `features` [rows, hidden], in the head's floating type.
  torch::Tensor Head(const torch::Tensor& features) const;
  // Stores `t` as the head tensor checkpoint-named `name` under `head` ("classifier.weight", ...);
  // names that are not head tensors are ignored.
  void SetHeadTensor(const HeadLayout& head, const std::string& name, torch::Tensor t);
};

// Rows [begin, end) of the batch use `member`'s LoRA deltas (null = base model only). With a
// `dropout` spec and one seed per row, row begin+i draws its dropout masks from row_seeds[i]
// (dropout.h); otherwise the rows run without dropout.
struct LoraGroup {
  int64_t begin = 0;
  int64_t end = 0;
  const LoraMember* member = nullptr;
  const DropoutSpec* dropout = nullptr;  // not owned
  std::vector<uint64_t> row_seeds;
  bool dropout_on() const {
    return dropout != nullptr && dropout->active() &&
           static_cast<int64_t>(row_seeds.size()) == end - begin;
  }
};
using LoraRouting = std::vector<LoraGroup>;

// The groups of `routing` over rows [begin, end), re-based so `begin` is row 0; a group cut at an
// edge keeps the seeds of its remaining rows, so those rows draw the same masks.
LoraRouting SliceRouting(const LoraRouting& routing, int64_t begin, int64_t end);

// A keep-mask of `shape` with entries in {0, 1/(1-p)}, drawn from `seed` (inverted dropout), as
// a float32 host tensor: masks are drawn on the host so a seed gives the same mask on any device.
torch::Tensor KeepMask(c10::IntArrayRef shape, double p, uint64_t seed);

// The LORA_DROPOUT masks of one row for linear layer `linear_index`: m_A [in] on A's input
// columns and m_B [out] on B's output rows, entries in {0, 1/(1-p)}. Never a mask on the rank.
std::pair<torch::Tensor, torch::Tensor> LoraDropoutMasks(uint64_t row_seed, int linear_index,
                                                         int64_t in, int64_t out, double p);

class LoraLinearImpl : public torch::nn::Module {
 public:
  // Without `has_bias` the layer has no "bias" parameter (decoders' projections).
  LoraLinearImpl(int64_t in_features, int64_t out_features, int index, bool has_bias = true);
  // Parameters that are views of storage the caller owns (the encoder's fused QKV weight); an
  // undefined `bias_storage`: no bias.
  LoraLinearImpl(torch::Tensor weight_storage, torch::Tensor bias_storage, int index);
  // x: [rows, ..., in]. `routing` may be null (base only).
  torch::Tensor forward(const torch::Tensor& x, const LoraRouting* routing);
  // Adds each routed group's LoRA delta for `x` into its rows of `y` (any view: a column block
  // of a fused output). `y` = this layer's base output for `x`.
  void AddLora(const torch::Tensor& x, torch::Tensor y, const LoraRouting* routing) const;
  int index() const { return index_; }
  int64_t in_features() const { return weight.size(1); }
  int64_t out_features() const { return weight.size(0); }

  torch::Tensor weight;  // [out, in]
  torch::Tensor bias;    // [out]; undefined when the layer has none
  // The base product's int8 copy (--quantize=int8), or null.
  std::shared_ptr<const Int8Linear> int8;

 private:
  int index_;
};
TORCH_MODULE(LoraLinear);

}  // namespace loracle::model

#endif  // LORACLE_SERVER_MODEL_LORA_H_
