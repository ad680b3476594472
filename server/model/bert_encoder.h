#ifndef LORACLE_SERVER_MODEL_BERT_ENCODER_H_
#define LORACLE_SERVER_MODEL_BERT_ENCODER_H_

// The BERT-family backbone (model_type bert, roberta, distilbert; backbone.h): an encoder in
// LibTorch whose module tree mirrors
// transformers' BertModel / RobertaModel / DistilBertModel, so named_parameters() are the
// checkpoint's tensor names (architecture.h). Every linear layer is a LoraLinear (lora.h): the
// frozen base weight is shared by all rows of a batch, and each row may add the low-rank delta
// of its own adapter member (LoraRouting), so many adapters and ensemble members run in one
// forward. Not thread-safe to mutate; concurrent forwards on one encoder are safe (they only
// read its parameters).

#include <torch/torch.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "server/model/architecture.h"
#include "server/model/backbone.h"
#include "server/model/dropout.h"
#include "server/model/lora.h"
#include "server/model/model_config.h"
#include "server/model/placement.h"

namespace loracle::model {

class BertEncoderImpl : public BackboneImpl {
 public:
  explicit BertEncoderImpl(const ModelConfig& config);

  // input_ids, attention_mask, token_type_ids: int64 [rows, seq] (token types are ignored when
  // the model has none), on the host or on the encoder's device; host inputs cross to the device
  // in one copy. Returns the [CLS] features the head reads, [rows, hidden]: BERT's pooled
  // output (tanh(W h_cls + b), BertPooler), or h_cls itself for RoBERTa and DistilBERT.
  torch::Tensor forward(const torch::Tensor& input_ids, const torch::Tensor& attention_mask,
                        const torch::Tensor& token_type_ids, const LoraRouting* routing) override;

  // The last layer's hidden states [rows, seq, hidden] (what forward pools), for token-level
  // heads such as masked-language modelling. Inputs as forward's.
  torch::Tensor HiddenStates(const torch::Tensor& input_ids, const torch::Tensor& attention_mask,
                             const torch::Tensor& token_type_ids,
                             const LoraRouting* routing) override;

  // For training the base itself (pretraining): every tensor the hidden states depend on, by
  // name, with requires_grad set. Each layer's query, key and value come as their one fused
  // storage ("<layer>.attention.self.qkv.weight" / ".bias"), which forward reads; their three
  // checkpoint parameters are views of it and see every in-place update. The pooler is left out
  // (HiddenStates does not reach it). Call before To(); not thread-safe.
  std::vector<std::pair<std::string, torch::Tensor>> Unfreeze() override;
  const torch::Tensor& word_embeddings_weight() const override { return word_embeddings_->weight; }

  // Moves every parameter to `placement` (device and floating type), keeping query, key and value
  // views of one fused weight. Call before any forward; not thread-safe.
  void To(const Placement& placement) override;
  absl::Status QuantizeInt8() override;
  torch::Device device() const override { return word_embeddings_->weight.device(); }
  torch::ScalarType dtype() const override { return word_embeddings_->weight.scalar_type(); }
  // Attention of all rows in one batched product with an additive mask (what a GPU wants: one
  // kernel, not one per row) instead of row by row on each row's own keys (what a CPU wants: no
  // work on padding). To() turns it on off the CPU; tests set it to compare the two.
  void set_batched_attention(bool on) override { batched_attention_ = on; }

  const ModelConfig& config() const override { return config_; }
  // LoRA-adaptable linear layers by module path ("encoder.layer.0.attention.self.query").
  const std::vector<std::string>& linear_names() const override { return linear_names_; }
  int LinearIndex(const std::string& module_path) const override;  // -1 when absent
  const LoraLinear& linear(int index) const override {
    return linears_[static_cast<size_t>(index)];
  }

 private:
  struct Layer {
    torch::Tensor qkv_weight, qkv_bias;          // [3h, h], [3h]: query, key, value's storage
    std::shared_ptr<const Int8Linear> qkv_int8;  // --quantize=int8
    LoraLinear query{nullptr}, key{nullptr}, value{nullptr}, attn_out{nullptr};
    torch::nn::LayerNorm attn_norm{nullptr};
    LoraLinear intermediate{nullptr}, output{nullptr};
    torch::nn::LayerNorm out_norm{nullptr};
  };
  // Additive-mask bookkeeping for one forward: per row, the keys it attends when right-padded
  // (else -1, and `additive` [rows, 1, 1, seq] holds 0 / lowest per key).
  struct AttentionMask {
    torch::Tensor mask;       // int64 [rows, seq], on the device
    torch::Tensor host_mask;  // the same, on the host
    std::vector<int64_t> key_lengths;
    torch::Tensor additive;  // defined only when some row is not right-padded
  };
  // embeddings.LayerNorm(word + position + token type).
  torch::Tensor Embed(const torch::Tensor& input_ids, const torch::Tensor& token_type_ids);
  AttentionMask MakeAttentionMask(const torch::Tensor& attention_mask,
                                  const torch::Tensor& host_mask, torch::ScalarType dtype) const;
  // softmax(q k^T / sqrt(d) + mask + dropkey) v per row and head, from the fused QKV output
  // [rows, seq, 3 * hidden]; returns [rows, seq, hidden].
  torch::Tensor SelfAttention(const torch::Tensor& qkv, const AttentionMask& mask,
                              const torch::Tensor& dropkey) const;
  // One transformer layer: attention, add & norm, FFN (with HiddenCut), add & norm.
  torch::Tensor LayerForward(int64_t index, const torch::Tensor& h, const AttentionMask& mask,
                             const LoraRouting* routing, bool hiddenkey);
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
  bool batched_attention_ = false;
};
TORCH_MODULE(BertEncoder);

// The registry entry (backbone.cc): a BertEncoder for `config`.
Backbone MakeBertEncoder(const ModelConfig& config);

}  // namespace loracle::model

#endif  // LORACLE_SERVER_MODEL_BERT_ENCODER_H_
