#ifndef LORACLE_SERVER_MODEL_LLAMA_DECODER_H_
#define LORACLE_SERVER_MODEL_LLAMA_DECODER_H_

// The decoder family (model_type llama, mistral, qwen2, qwen3; backbone.h): a pre-RMSNorm causal
// transformer in LibTorch whose module tree mirrors transformers' LlamaModel / MistralModel /
// Qwen2Model / Qwen3Model, so named_parameters() are the checkpoint's tensor names
// (architecture.h):
//   h = embed_tokens(ids)
//   per layer: h += o_proj(attn(rope(q_proj(n)), rope(k_proj(n)), v_proj(n)))  n = RMSNorm(h)
//              h += down_proj(silu(gate_proj(n)) * up_proj(n))                  n = RMSNorm(h)
//   h = norm(h); the features are h at each row's last real token (what *ForSequenceClassification
//   feeds its `score`).
// Attention is causal (Mistral: within `sliding_window` keys), with grouped-query attention
// (num_key_value_heads K/V heads, each shared by a group of query heads, never repeated in
// memory) and rotary position embeddings (rope_theta, rope_scaling default/linear/llama3). Qwen2
// has q/k/v biases; Qwen3 RMS-normalises each head of q and k before the rotation. Rows are
// right-padded: a real token never attends padding under the causal mask, so padding needs no
// mask of its own. Every projection is a LoraLinear, so rows route to their own adapter members
// as in the encoders; LORA_DROPOUT and INPUT masks work unchanged, HIDDENKEY drops attention
// logits (DropKey, never key 0) and MLP activations (HiddenCut).

#include <torch/torch.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "server/model/backbone.h"
#include "server/model/lora.h"
#include "server/model/model_config.h"
#include "server/model/placement.h"

namespace loracle::model {

class LlamaDecoderImpl : public BackboneImpl {
 public:
  explicit LlamaDecoderImpl(const ModelConfig& config);

  // The final-norm hidden state at each row's last attended position, [rows, hidden].
  torch::Tensor forward(const torch::Tensor& input_ids, const torch::Tensor& attention_mask,
                        const torch::Tensor& token_type_ids, const LoraRouting* routing) override;
  // After the final norm, [rows, seq, hidden].
  torch::Tensor HiddenStates(const torch::Tensor& input_ids, const torch::Tensor& attention_mask,
                             const torch::Tensor& token_type_ids,
                             const LoraRouting* routing) override;
  std::vector<std::pair<std::string, torch::Tensor>> Unfreeze() override;
  const torch::Tensor& word_embeddings_weight() const override { return embed_tokens_->weight; }
  void To(const Placement& placement) override;
  absl::Status QuantizeInt8() override;
  torch::Device device() const override { return embed_tokens_->weight.device(); }
  torch::ScalarType dtype() const override { return embed_tokens_->weight.scalar_type(); }
  // All rows in one batched product over the whole padded length (a GPU's choice) instead of row
  // by row over each row's own length (a CPU's).
  void set_batched_attention(bool on) override { batched_attention_ = on; }

  const ModelConfig& config() const override { return config_; }
  const std::vector<std::string>& linear_names() const override { return linear_names_; }
  int LinearIndex(const std::string& module_path) const override;
  const LoraLinear& linear(int index) const override {
    return linears_[static_cast<size_t>(index)];
  }

 private:
  struct Layer {
    torch::Tensor input_norm, post_norm;  // RMSNorm weights [hidden]
    torch::Tensor q_norm, k_norm;         // Qwen3: [head_dim]; undefined otherwise
    // q, k and v are row blocks of one weight (one GEMM per layer), gate and up of another; each
    // is still its own module and parameter under its checkpoint name. Biases undefined when the
    // architecture has none.
    torch::Tensor qkv_weight, qkv_bias, gate_up_weight, gate_up_bias;
    std::shared_ptr<const Int8Linear> qkv_int8, gate_up_int8;  // --quantize=int8
    LoraLinear q{nullptr}, k{nullptr}, v{nullptr}, o{nullptr};
    LoraLinear gate{nullptr}, up{nullptr}, down{nullptr};
  };
  std::shared_ptr<torch::nn::Module> Submodule(const std::string& path);
  LoraLinear AddLinear(const LinearSpec& spec, bool bias);
  // A linear layer whose parameters are views of caller-owned storage (a fused weight's rows).
  LoraLinear AddLinearView(const LinearSpec& spec, torch::Tensor weight, torch::Tensor bias);
  // Rebuilds each layer's fused storages from its parameters (after Module::to gave them their
  // own) and points the parameters back into them.
  void Fuse();
  torch::Tensor AddNorm(const std::string& path, int64_t size);
  torch::Tensor RmsNorm(const torch::Tensor& x, const torch::Tensor& weight) const;
  // cos and sin [seq, head_dim] of positions 0..seq-1, in `options`' floating type.
  std::pair<torch::Tensor, torch::Tensor> Rotary(int64_t seq,
                                                 const torch::TensorOptions& options) const;
  // q [rows, seq, heads, d], k and v [rows, seq, kv_heads, d] -> [rows, seq, heads * d].
  torch::Tensor Attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                          const std::vector<int64_t>& lengths, const torch::Tensor& dropkey) const;

  ModelConfig config_;
  torch::nn::Embedding embed_tokens_{nullptr};
  torch::Tensor norm_;
  torch::Tensor inv_freq_;  // float32 [head_dim / 2], rope scaling applied
  std::vector<Layer> layers_;
  std::vector<LoraLinear> linears_;
  std::vector<std::string> linear_names_;
  std::map<std::string, std::shared_ptr<torch::nn::Module>> submodules_;
  bool batched_attention_ = false;
};
TORCH_MODULE(LlamaDecoder);

// The registry entry (backbone.cc).
Backbone MakeLlamaDecoder(const ModelConfig& config);

// The rotary inverse frequencies of `config` (float64, [head_dim / 2]): theta^(-2i/d), scaled per
// config.rope_scaling as transformers' ROPE_INIT_FUNCTIONS do.
std::vector<double> RopeInverseFrequencies(const ModelConfig& config);

}  // namespace loracle::model

#endif  // LORACLE_SERVER_MODEL_LLAMA_DECODER_H_
