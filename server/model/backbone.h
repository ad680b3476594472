#ifndef LORACLE_SERVER_MODEL_BACKBONE_H_
#define LORACLE_SERVER_MODEL_BACKBONE_H_

// The interface every model family implements (torch): token ids + per-row LoRA deltas and
// dropout masks (LoraRouting) -> the pooled features the classification head reads, or the
// per-position hidden states. One family per file (bert_encoder.h: BERT, RoBERTa, DistilBERT),
// found by config.json's model_type in CreateBackbone's registry (backbone.cc), as transformers'
// models/<family>/ and vLLM's model_executor/models/<family>.py are. Checkpoint reading
// (checkpoint.h), placement and LoRA (lora.h) are shared by all families.
//
// Not thread-safe to mutate; concurrent forwards on one backbone are safe (they only read its
// parameters).

#include <torch/torch.h>

#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "server/model/lora.h"
#include "server/model/model_config.h"
#include "server/model/placement.h"

namespace loracle::model {

class BackboneImpl : public torch::nn::Module {
 public:
  ~BackboneImpl() override = default;

  // input_ids, attention_mask, token_type_ids: int64 [rows, seq], right-padded (token types are
  // ignored by families without them), on the host or on the backbone's device; host inputs cross
  // to the device in one copy. `routing` may be null (the base alone). Returns the pooled
  // features [rows, hidden] the head reads.
  virtual torch::Tensor forward(const torch::Tensor& input_ids, const torch::Tensor& attention_mask,
                                const torch::Tensor& token_type_ids,
                                const LoraRouting* routing) = 0;
  // The last layer's hidden states [rows, seq, hidden], for token-level heads.
  virtual torch::Tensor HiddenStates(const torch::Tensor& input_ids,
                                     const torch::Tensor& attention_mask,
                                     const torch::Tensor& token_type_ids,
                                     const LoraRouting* routing) = 0;

  // For training the base itself (pretraining): every tensor the hidden states depend on, by
  // name, with requires_grad set. Call before To(); not thread-safe.
  virtual std::vector<std::pair<std::string, torch::Tensor>> Unfreeze() = 0;
  virtual const torch::Tensor& word_embeddings_weight() const = 0;

  // Moves every parameter to `placement` (device and floating type). Call before any forward.
  virtual void To(const Placement& placement) = 0;
  // --quantize=int8: packs an int8 copy of every frozen base linear layer that runs per token
  // (lora.h Int8Linear) for inference; the float32 weights stay for training. Call after To() on a
  // float32 CPU placement. FAILED_PRECONDITION as PackInt8.
  virtual absl::Status QuantizeInt8() = 0;
  virtual torch::Device device() const = 0;
  virtual torch::ScalarType dtype() const = 0;
  // Attention of all rows in one batched product (a GPU's choice) instead of row by row.
  virtual void set_batched_attention(bool on) = 0;

  virtual const ModelConfig& config() const = 0;
  // LoRA-adaptable linear layers by module path, in LoraLinear::index() order.
  virtual const std::vector<std::string>& linear_names() const = 0;
  virtual int LinearIndex(const std::string& module_path) const = 0;  // -1 when absent
  virtual const LoraLinear& linear(int index) const = 0;

  // Classification logits of each routing group's feature rows with its member's head: one
  // tensor per group, [end - begin, num_labels(member)].
  static std::vector<torch::Tensor> Classify(const torch::Tensor& features,
                                             const LoraRouting& routing);
};
TORCH_MODULE(Backbone);

// The backbone of config.model_type's family, with freshly initialised parameters (the loader
// then copies the checkpoint's tensors in). INVALID_ARGUMENT naming the supported model types
// when no family serves it.
absl::StatusOr<Backbone> CreateBackbone(const ModelConfig& config);

// backbone->forward over `parts` contiguous row ranges at once, the first on the calling thread
// and each other on a thread of its own, concatenated: every row's features as in one forward
// (masks are seeded per row). The caller sets BLAS threads (1 per part fills the cores without
// oversubscribing them). Runs under the caller's InferenceMode / GradMode in every part. Errors
// thrown by torch in any part come back as INTERNAL.
absl::StatusOr<torch::Tensor> ForwardInParts(BackboneImpl& backbone, const torch::Tensor& input_ids,
                                             const torch::Tensor& attention_mask,
                                             const torch::Tensor& token_type_ids,
                                             const LoraRouting& routing, int parts);

}  // namespace loracle::model

#endif  // LORACLE_SERVER_MODEL_BACKBONE_H_
