#ifndef LORACLE_SERVER_MODEL_MODEL_CONFIG_H_
#define LORACLE_SERVER_MODEL_MODEL_CONFIG_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace loracle::model {

// The architecture fields of a Hugging Face BERT-family `config.json`.
struct ModelConfig {
  std::string model_type = "bert";
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t num_hidden_layers = 0;
  int64_t num_attention_heads = 0;
  int64_t intermediate_size = 0;
  int64_t max_position_embeddings = 0;
  int64_t type_vocab_size = 2;
  int64_t pad_token_id = 0;
  double layer_norm_eps = 1e-12;
  std::string hidden_act = "gelu";  // gelu | gelu_new | relu
};

// Parses config.json text. Required: vocab_size, hidden_size, num_hidden_layers,
// num_attention_heads, intermediate_size, max_position_embeddings; the rest default as in
// transformers' BertConfig. INVALID_ARGUMENT names the missing or bad field; `source` (a path)
// prefixes every message.
absl::StatusOr<ModelConfig> ParseModelConfig(absl::string_view json_text,
                                             absl::string_view source = "config.json");

// Reads and parses `path`. NOT_FOUND when the file is missing.
absl::StatusOr<ModelConfig> ReadModelConfig(const std::string& path);

// The config.json text for `config` (round-trips through ParseModelConfig).
std::string ModelConfigToJson(const ModelConfig& config);

}  // namespace loracle::model

#endif  // LORACLE_SERVER_MODEL_MODEL_CONFIG_H_
