#include "server/model/model_config.h"

#include <cstring>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "nlohmann/json.hpp"
#include "server/model/file_util.h"

namespace loracle::model {
namespace {

using json = nlohmann::json;

absl::Status Bad(absl::string_view source, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(source, ": ", what));
}

absl::Status GetInt(const json& j, absl::string_view source, const char* key, bool required,
                    int64_t* out) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) {
    if (required) return Bad(source, absl::StrCat("missing required field \"", key, "\""));
    return absl::OkStatus();
  }
  if (!it->is_number_integer()) {
    return Bad(source, absl::StrCat("field \"", key, "\" must be an integer, got ", it->dump()));
  }
  *out = it->get<int64_t>();
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<ModelConfig> ParseModelConfig(absl::string_view json_text,
                                             absl::string_view source) {
  json j = json::parse(json_text.begin(), json_text.end(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return Bad(source, "not valid JSON");
  if (!j.is_object()) return Bad(source, "top level must be a JSON object");
  ModelConfig c;
  if (auto it = j.find("model_type"); it != j.end()) {
    if (!it->is_string()) return Bad(source, "field \"model_type\" must be a string");
    c.model_type = it->get<std::string>();
  }
  if (c.model_type != "bert") {
    return Bad(source, absl::StrCat("model_type \"", c.model_type,
                                    "\" is not supported (supported: bert)"));
  }
  struct IntField {
    const char* key;
    bool required;
    int64_t* out;
  };
  const IntField fields[] = {
      {"vocab_size", true, &c.vocab_size},
      {"hidden_size", true, &c.hidden_size},
      {"num_hidden_layers", true, &c.num_hidden_layers},
      {"num_attention_heads", true, &c.num_attention_heads},
      {"intermediate_size", true, &c.intermediate_size},
      {"max_position_embeddings", true, &c.max_position_embeddings},
      {"type_vocab_size", false, &c.type_vocab_size},
      {"pad_token_id", false, &c.pad_token_id},
  };
  for (const IntField& f : fields) {
    if (auto s = GetInt(j, source, f.key, f.required, f.out); !s.ok()) return s;
  }
  if (auto it = j.find("layer_norm_eps"); it != j.end()) {
    if (!it->is_number()) return Bad(source, "field \"layer_norm_eps\" must be a number");
    c.layer_norm_eps = it->get<double>();
  }
  if (auto it = j.find("hidden_act"); it != j.end()) {
    if (!it->is_string()) return Bad(source, "field \"hidden_act\" must be a string");
    c.hidden_act = it->get<std::string>();
  }
  for (const IntField& f : fields) {
    const bool may_be_zero = std::strcmp(f.key, "pad_token_id") == 0;
    if (*f.out < 0 || (*f.out == 0 && !may_be_zero)) {
      return Bad(source, absl::StrCat("field \"", f.key, "\" must be positive, got ", *f.out));
    }
  }
  if (c.hidden_size % c.num_attention_heads != 0) {
    return Bad(source,
               absl::StrCat("hidden_size ", c.hidden_size,
                            " is not a multiple of num_attention_heads ", c.num_attention_heads));
  }
  if (c.pad_token_id >= c.vocab_size) {
    return Bad(source,
               absl::StrCat("pad_token_id ", c.pad_token_id, " >= vocab_size ", c.vocab_size));
  }
  if (!(c.layer_norm_eps > 0)) return Bad(source, "layer_norm_eps must be positive");
  if (c.hidden_act != "gelu" && c.hidden_act != "gelu_new" && c.hidden_act != "relu") {
    return Bad(source, absl::StrCat("hidden_act \"", c.hidden_act,
                                    "\" is not supported (supported: gelu, gelu_new, relu)"));
  }
  return c;
}

absl::StatusOr<ModelConfig> ReadModelConfig(const std::string& path) {
  absl::StatusOr<std::string> text = ReadFileToString(path);
  if (!text.ok()) return text.status();
  return ParseModelConfig(*text, path);
}

std::string ModelConfigToJson(const ModelConfig& c) {
  json j = {
      {"architectures", {"BertModel"}},
      {"model_type", c.model_type},
      {"vocab_size", c.vocab_size},
      {"hidden_size", c.hidden_size},
      {"num_hidden_layers", c.num_hidden_layers},
      {"num_attention_heads", c.num_attention_heads},
      {"intermediate_size", c.intermediate_size},
      {"max_position_embeddings", c.max_position_embeddings},
      {"type_vocab_size", c.type_vocab_size},
      {"pad_token_id", c.pad_token_id},
      {"layer_norm_eps", c.layer_norm_eps},
      {"hidden_act", c.hidden_act},
      {"hidden_dropout_prob", 0.1},
      {"attention_probs_dropout_prob", 0.1},
      {"initializer_range", 0.02},
      {"position_embedding_type", "absolute"},
  };
  return j.dump(2) + "\n";
}

}  // namespace loracle::model
