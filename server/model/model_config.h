#ifndef LORACLE_SERVER_MODEL_MODEL_CONFIG_H_
#define LORACLE_SERVER_MODEL_MODEL_CONFIG_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace loracle::model {

// The families loracle runs. The encoders (BERT, RoBERTa, DistilBERT) share one post-LayerNorm
// transformer and differ in tensor names, position ids, token types and classification head; the
// decoders (Llama, Mistral, Qwen2, Qwen3) share one pre-RMSNorm causal transformer with rotary
// positions, grouped-query attention and a SwiGLU MLP, and differ in biases, q/k norms and the
// sliding window (architecture.h).
enum class Architecture { kBert, kRoberta, kDistilBert, kLlama, kMistral, kQwen2, kQwen3 };

// A decoder's rotary-embedding frequency scaling (config.json "rope_scaling", or transformers 5's
// "rope_parameters"): "default" (none), "linear" (inv_freq / factor) or "llama3" (Llama 3.1's
// wavelength-dependent scaling). Other types are refused at parse.
struct RopeScaling {
  std::string type = "default";
  double factor = 1.0;
  double low_freq_factor = 1.0;
  double high_freq_factor = 4.0;
  int64_t original_max_position_embeddings = 0;
};

// The architecture fields of a Hugging Face `config.json` (BertConfig, RobertaConfig or
// DistilBertConfig), in BERT's vocabulary: DistilBERT's dim / n_layers / n_heads / hidden_dim /
// activation land in hidden_size / num_hidden_layers / num_attention_heads / intermediate_size /
// hidden_act.
struct ModelConfig {
  std::string model_type = "bert";  // bert | roberta | distilbert | llama | mistral | qwen2 | qwen3
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t num_hidden_layers = 0;
  int64_t num_attention_heads = 0;
  int64_t intermediate_size = 0;
  int64_t max_position_embeddings = 0;
  int64_t type_vocab_size = 2;  // 0 for DistilBERT (no token type embeddings)
  int64_t pad_token_id = 0;
  double layer_norm_eps = 1e-12;
  std::string hidden_act = "gelu";  // gelu | gelu_new | relu
  // "architectures" (e.g. RobertaForSequenceClassification) and the head's label names by id
  // ("id2label"); empty when the config has none.
  std::vector<std::string> architectures;
  std::vector<std::string> id2label;

  // Decoders only (filled with transformers' defaults at parse).
  int64_t num_key_value_heads = 0;  // grouped-query attention: heads share K/V in groups
  int64_t head_dim = 0;             // per head; hidden_size / heads unless config.json sets it
  double rms_norm_eps = 1e-6;
  double rope_theta = 10000.0;
  RopeScaling rope_scaling;
  bool attention_bias = false;  // q/k/v/o biases (Llama, Qwen3); Qwen2: q/k/v always, o never
  bool mlp_bias = false;        // gate/up/down biases (Llama)
  bool tie_word_embeddings = false;
  int64_t sliding_window = 0;  // Mistral: a query attends the last `sliding_window` keys; 0 = all

  bool is_decoder() const;
  // Whether q/k/v and o have biases.
  bool qkv_bias() const;
  bool o_bias() const;

  Architecture architecture() const;
  // RoBERTa numbers positions from pad_token_id + 1 (transformers'
  // create_position_ids_from_input_ids); BERT and DistilBERT from 0.
  int64_t position_offset() const;
  // Tokens per input the position table allows, special tokens included.
  int64_t max_tokens() const { return max_position_embeddings - position_offset(); }
};

// Parses config.json text. Required: vocab_size, hidden_size, num_hidden_layers,
// num_attention_heads, intermediate_size, max_position_embeddings (or DistilBERT's names); the rest
// default as in transformers. INVALID_ARGUMENT names the missing or bad field, or the unsupported
// model_type / hidden_act / position_embedding_type; `source` (a path) prefixes every message.
absl::StatusOr<ModelConfig> ParseModelConfig(absl::string_view json_text,
                                             absl::string_view source = "config.json");

// Reads and parses `path`. NOT_FOUND when the file is missing.
absl::StatusOr<ModelConfig> ReadModelConfig(const std::string& path);

// The config.json text for `config`, in its model_type's own field names (round-trips through
// ParseModelConfig).
std::string ModelConfigToJson(const ModelConfig& config);

}  // namespace loracle::model

#endif  // LORACLE_SERVER_MODEL_MODEL_CONFIG_H_
