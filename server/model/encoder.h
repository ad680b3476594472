#ifndef LORACLE_SERVER_MODEL_ENCODER_H_
#define LORACLE_SERVER_MODEL_ENCODER_H_

// A BERT-family encoder (BERT, RoBERTa, DistilBERT) in LibTorch whose module tree mirrors
// transformers' BertModel / RobertaModel / DistilBertModel, so named_parameters() are the
// checkpoint's tensor names (architecture.h). Every linear layer is a LoraLinear: the
// frozen base weight is shared by all rows of a batch, and each row may add the low-rank delta
// of its own adapter member (LoraRouting), so many adapters and ensemble members run in one
// forward.

#include <torch/torch.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "server/model/architecture.h"
#include "server/model/dropout.h"
#include "server/model/model_config.h"

namespace loracle::model {

// One LoRA delta: y += scaling * (x A^T) B^T, with A [r, in], B [out, r].
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
  torch::Tensor classifier_bias;    // [num_labels]

  // Classification logits of `features` [rows, hidden].
  torch::Tensor Head(const torch::Tensor& features) const;
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

// A keep-mask of `shape` with entries in {0, 1/(1-p)}, drawn from `seed` (inverted dropout).
torch::Tensor KeepMask(c10::IntArrayRef shape, double p, uint64_t seed);

// The LORA_DROPOUT masks of one row for linear layer `linear_index`: m_A [in] on A's input
// columns and m_B [out] on B's output rows, entries in {0, 1/(1-p)}. Never a mask on the rank.
std::pair<torch::Tensor, torch::Tensor> LoraDropoutMasks(uint64_t row_seed, int linear_index,
                                                         int64_t in, int64_t out, double p);

class LoraLinearImpl : public torch::nn::Module {
 public:
  LoraLinearImpl(int64_t in_features, int64_t out_features, int index);
  // Parameters that are views of storage the caller owns (the encoder's fused QKV weight).
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
  torch::Tensor bias;    // [out]

 private:
  int index_;
};
TORCH_MODULE(LoraLinear);

class EncoderImpl : public torch::nn::Module {
 public:
  explicit EncoderImpl(const ModelConfig& config);

  // input_ids, attention_mask, token_type_ids: int64 [rows, seq] (token types are ignored when
  // the model has none). Returns the [CLS] features the head reads, [rows, hidden]: BERT's pooled
  // output (tanh(W h_cls + b), BertPooler), or h_cls itself for RoBERTa and DistilBERT.
  torch::Tensor forward(const torch::Tensor& input_ids, const torch::Tensor& attention_mask,
                        const torch::Tensor& token_type_ids, const LoraRouting* routing);

  // Classification logits of feature rows [begin, end) with each group's head: one tensor per
  // routing group, [end - begin, num_labels(member)].
  static std::vector<torch::Tensor> Classify(const torch::Tensor& features,
                                             const LoraRouting& routing);

  const ModelConfig& config() const { return config_; }
  // LoRA-adaptable linear layers by module path ("encoder.layer.0.attention.self.query").
  const std::vector<std::string>& linear_names() const { return linear_names_; }
  int LinearIndex(const std::string& module_path) const;  // -1 when absent
  const LoraLinear& linear(int index) const { return linears_[static_cast<size_t>(index)]; }

 private:
  struct Layer {
    torch::Tensor qkv_weight, qkv_bias;  // [3h, h], [3h]: query, key, value's storage
    LoraLinear query{nullptr}, key{nullptr}, value{nullptr}, attn_out{nullptr};
    torch::nn::LayerNorm attn_norm{nullptr};
    LoraLinear intermediate{nullptr}, output{nullptr};
    torch::nn::LayerNorm out_norm{nullptr};
  };
  // The module at dotted `path`, created (as an empty Module) along with its parents if absent.
  std::shared_ptr<torch::nn::Module> Submodule(const std::string& path);
  // `weight`/`bias`: views to use as its parameters; undefined: it allocates its own.
  LoraLinear AddLinear(const LinearSpec& spec, torch::Tensor weight = {}, torch::Tensor bias = {});
  torch::nn::LayerNorm AddLayerNorm(const std::string& path);
  torch::Tensor Activation(const torch::Tensor& x) const;

  ModelConfig config_;
  torch::nn::Embedding word_embeddings_{nullptr}, position_embeddings_{nullptr},
      token_type_embeddings_{nullptr};
  torch::nn::LayerNorm embeddings_norm_{nullptr};
  std::vector<Layer> layers_;
  LoraLinear pooler_{nullptr};
  std::vector<LoraLinear> linears_;
  std::vector<std::string> linear_names_;
  std::map<std::string, std::shared_ptr<torch::nn::Module>> submodules_;
};
TORCH_MODULE(Encoder);

// encoder->forward over `parts` contiguous row ranges at once, the first on the calling thread and
// each other on a thread of its own, concatenated: every row's features as in one forward (masks
// are seeded per row). The caller sets BLAS threads (1 per part fills the cores without
// oversubscribing them). Runs under the caller's InferenceMode / GradMode in every part. Errors
// thrown by torch in any part come back as INTERNAL.
absl::StatusOr<torch::Tensor> ForwardInParts(Encoder& encoder, const torch::Tensor& input_ids,
                                             const torch::Tensor& attention_mask,
                                             const torch::Tensor& token_type_ids,
                                             const LoraRouting& routing, int parts);

}  // namespace loracle::model

#endif  // LORACLE_SERVER_MODEL_ENCODER_H_
