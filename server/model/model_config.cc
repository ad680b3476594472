#include "server/model/model_config.h"

#include <cstring>
#include <exception>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "nlohmann/json.hpp"
#include "server/model/architecture.h"
#include "server/util/file_util.h"

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

absl::Status ParseLabels(const json& j, absl::string_view source, ModelConfig* c) {
  if (auto it = j.find("architectures"); it != j.end() && it->is_array()) {
    for (const json& a : *it) {
      if (a.is_string()) c->architectures.push_back(a.get<std::string>());
    }
  }
  if (auto it = j.find("id2label"); it != j.end() && it->is_object() && !it->empty()) {
    c->id2label.resize(it->size());
    for (auto& [id, label] : it->items()) {
      size_t pos = 0;
      int64_t k = -1;
      try {
        k = std::stoll(id, &pos);
      } catch (const std::exception&) {
      }
      if (pos != id.size() || k < 0 || k >= static_cast<int64_t>(c->id2label.size()) ||
          !label.is_string() || !c->id2label[static_cast<size_t>(k)].empty()) {
        return Bad(source, absl::StrCat("id2label must map the ids 0..", c->id2label.size() - 1,
                                        " to label strings; bad entry \"", id, "\""));
      }
      c->id2label[static_cast<size_t>(k)] = label.get<std::string>();
    }
  }
  return absl::OkStatus();
}

absl::Status GetNumber(const json& j, absl::string_view source, const char* key, double* out) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return absl::OkStatus();
  if (!it->is_number()) {
    return Bad(source, absl::StrCat("field \"", key, "\" must be a number, got ", it->dump()));
  }
  *out = it->get<double>();
  return absl::OkStatus();
}

absl::Status GetBool(const json& j, absl::string_view source, const char* key, bool* out) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return absl::OkStatus();
  if (!it->is_boolean()) {
    return Bad(source, absl::StrCat("field \"", key, "\" must be true or false, got ", it->dump()));
  }
  *out = it->get<bool>();
  return absl::OkStatus();
}

// rope_scaling (or rope_parameters): null, or {"rope_type" | "type": ..., factor, ...}.
absl::Status ParseRopeScaling(const json& r, absl::string_view source, const char* field,
                              ModelConfig* c) {
  if (r.is_null()) return absl::OkStatus();
  if (!r.is_object()) return Bad(source, absl::StrCat("field \"", field, "\" must be an object"));
  std::string type = "default";
  for (const char* key : {"rope_type", "type"}) {
    if (auto it = r.find(key); it != r.end() && it->is_string()) {
      type = it->get<std::string>();
      break;
    }
  }
  if (type != "default" && type != "linear" && type != "llama3") {
    return Bad(source, absl::StrCat(field, ".rope_type \"", type,
                                    "\" is not supported (supported: default, linear, llama3)"));
  }
  RopeScaling& s = c->rope_scaling;
  s.type = type;
  const std::string prefix = absl::StrCat(field, ".");
  auto number = [&](const char* key, bool required, double* out) -> absl::Status {
    auto it = r.find(key);
    if (it == r.end() || it->is_null()) {
      if (required)
        return Bad(source, absl::StrCat("missing required field \"", prefix, key, "\""));
      return absl::OkStatus();
    }
    if (!it->is_number() || !(it->get<double>() > 0)) {
      return Bad(source, absl::StrCat("field \"", prefix, key, "\" must be a positive number"));
    }
    *out = it->get<double>();
    return absl::OkStatus();
  };
  if (auto st = number("rope_theta", false, &c->rope_theta); !st.ok()) return st;
  if (type == "default") return absl::OkStatus();
  if (auto st = number("factor", true, &s.factor); !st.ok()) return st;
  if (type == "linear") return absl::OkStatus();
  double original = 0;
  if (auto st = number("low_freq_factor", true, &s.low_freq_factor); !st.ok()) return st;
  if (auto st = number("high_freq_factor", true, &s.high_freq_factor); !st.ok()) return st;
  if (auto st = number("original_max_position_embeddings", true, &original); !st.ok()) return st;
  if (original > 1e9) {
    return Bad(source,
               absl::StrCat(prefix, "original_max_position_embeddings must be at most 1e9"));
  }
  s.original_max_position_embeddings = static_cast<int64_t>(original);
  if (!(s.high_freq_factor > s.low_freq_factor)) {
    return Bad(source, absl::StrCat(prefix, "high_freq_factor must exceed low_freq_factor"));
  }
  return absl::OkStatus();
}

// LlamaConfig, MistralConfig, Qwen2Config, Qwen3Config. Every field that changes the math is
// read; one loracle does not implement is refused by name.
absl::StatusOr<ModelConfig> ParseDecoderConfig(const json& j, absl::string_view source,
                                               ModelConfig c) {
  c.type_vocab_size = 0;
  c.hidden_act = "silu";
  c.max_position_embeddings = 2048;
  c.pad_token_id = 0;  // padding is never attended (causal, right-padded); any id serves
  const Architecture arch = c.architecture();
  if (arch == Architecture::kMistral) c.max_position_embeddings = 4096 * 32;
  if (arch == Architecture::kQwen2 || arch == Architecture::kQwen3)
    c.max_position_embeddings = 32768;
  struct IntField {
    const char* key;
    bool required;
    int64_t* out;
  };
  const std::vector<IntField> fields = {
      {"vocab_size", true, &c.vocab_size},
      {"hidden_size", true, &c.hidden_size},
      {"num_hidden_layers", true, &c.num_hidden_layers},
      {"num_attention_heads", true, &c.num_attention_heads},
      {"intermediate_size", true, &c.intermediate_size},
      {"max_position_embeddings", false, &c.max_position_embeddings},
      {"num_key_value_heads", false, &c.num_key_value_heads},
      {"head_dim", false, &c.head_dim},
      {"pad_token_id", false, &c.pad_token_id},
  };
  for (const IntField& f : fields) {
    if (auto st = GetInt(j, source, f.key, f.required, f.out); !st.ok()) return st;
  }
  for (const IntField& f : fields) {
    if (f.out == &c.pad_token_id || f.out == &c.num_key_value_heads || f.out == &c.head_dim)
      continue;
    if (*f.out <= 0) {
      return Bad(source, absl::StrCat("field \"", f.key, "\" must be positive, got ", *f.out));
    }
  }
  if (c.num_key_value_heads == 0) c.num_key_value_heads = c.num_attention_heads;
  if (c.num_key_value_heads < 0 || c.num_attention_heads % c.num_key_value_heads != 0) {
    return Bad(source,
               absl::StrCat("num_key_value_heads ", c.num_key_value_heads,
                            " does not divide num_attention_heads ", c.num_attention_heads));
  }
  if (c.head_dim == 0) {
    if (c.hidden_size % c.num_attention_heads != 0) {
      return Bad(source, absl::StrCat("head_dim: hidden_size ", c.hidden_size,
                                      " is not a multiple of num_attention_heads ",
                                      c.num_attention_heads, " and config.json sets no head_dim"));
    }
    c.head_dim = c.hidden_size / c.num_attention_heads;
  }
  if (c.head_dim < 2 || c.head_dim % 2 != 0) {
    return Bad(source, absl::StrCat("head_dim ", c.head_dim,
                                    " must be even (rotary embeddings rotate pairs)"));
  }
  if (c.pad_token_id < 0 || c.pad_token_id >= c.vocab_size) {
    return Bad(source, absl::StrCat("pad_token_id ", c.pad_token_id, " is outside the vocabulary (",
                                    c.vocab_size, ")"));
  }
  if (auto st = GetNumber(j, source, "rms_norm_eps", &c.rms_norm_eps); !st.ok()) return st;
  if (!(c.rms_norm_eps > 0)) return Bad(source, "rms_norm_eps must be positive");
  if (auto st = GetNumber(j, source, "rope_theta", &c.rope_theta); !st.ok()) return st;
  if (auto it = j.find("rope_scaling"); it != j.end()) {
    if (auto st = ParseRopeScaling(*it, source, "rope_scaling", &c); !st.ok()) return st;
  }
  if (auto it = j.find("rope_parameters"); it != j.end()) {
    if (auto st = ParseRopeScaling(*it, source, "rope_parameters", &c); !st.ok()) return st;
  }
  if (!(c.rope_theta > 0)) return Bad(source, "rope_theta must be positive");
  if (auto it = j.find("partial_rotary_factor"); it != j.end() && !it->is_null()) {
    if (!it->is_number() || it->get<double>() != 1.0) {
      return Bad(source, absl::StrCat("partial_rotary_factor ", it->dump(),
                                      " is not supported (supported: 1)"));
    }
  }
  if (auto st = GetBool(j, source, "tie_word_embeddings", &c.tie_word_embeddings); !st.ok())
    return st;
  if (arch == Architecture::kLlama || arch == Architecture::kQwen3) {
    if (auto st = GetBool(j, source, "attention_bias", &c.attention_bias); !st.ok()) return st;
  }
  if (arch == Architecture::kLlama) {
    if (auto st = GetBool(j, source, "mlp_bias", &c.mlp_bias); !st.ok()) return st;
  }
  if (auto it = j.find("hidden_act"); it != j.end()) {
    if (!it->is_string() || it->get<std::string>() != "silu") {
      return Bad(source, absl::StrCat("hidden_act ", it->dump(),
                                      " is not supported (supported: \"silu\")"));
    }
  }
  if (arch == Architecture::kMistral) {
    if (auto st = GetInt(j, source, "sliding_window", false, &c.sliding_window); !st.ok())
      return st;
    if (c.sliding_window < 0) return Bad(source, "sliding_window must be positive or null");
  } else if (arch == Architecture::kQwen2 || arch == Architecture::kQwen3) {
    bool sliding = false;
    if (auto st = GetBool(j, source, "use_sliding_window", &sliding); !st.ok()) return st;
    if (sliding) {
      return Bad(source,
                 "use_sliding_window true is not supported for qwen2/qwen3 (per-layer windows "
                 "from max_window_layers)");
    }
  }
  if (auto it = j.find("layer_types"); it != j.end() && it->is_array()) {
    for (const json& t : *it) {
      const bool full = t.is_string() && t.get<std::string>() == "full_attention";
      const bool window = t.is_string() && t.get<std::string>() == "sliding_attention" &&
                          arch == Architecture::kMistral;
      if (!full && !window) {
        return Bad(source, absl::StrCat("layer_types entry ", t.dump(),
                                        " is not supported (supported: \"full_attention\")"));
      }
    }
  }
  if (auto st = ParseLabels(j, source, &c); !st.ok()) return st;
  return c;
}

}  // namespace

Architecture ModelConfig::architecture() const {
  const ArchitectureSpec* spec = SpecForModelType(model_type);
  return spec != nullptr ? spec->arch : Architecture::kBert;
}

bool ModelConfig::is_decoder() const {
  const Architecture a = architecture();
  return a == Architecture::kLlama || a == Architecture::kMistral || a == Architecture::kQwen2 ||
         a == Architecture::kQwen3;
}

bool ModelConfig::qkv_bias() const {
  return architecture() == Architecture::kQwen2 || (is_decoder() && attention_bias);
}

bool ModelConfig::o_bias() const {
  return architecture() != Architecture::kQwen2 && is_decoder() && attention_bias;
}

int64_t ModelConfig::position_offset() const {
  return architecture() == Architecture::kRoberta ? pad_token_id + 1 : 0;
}

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
  if (SpecForModelType(c.model_type) == nullptr) {
    return Bad(source,
               absl::StrCat("model_type \"", c.model_type,
                            "\" is not supported (supported: ", SupportedModelTypes(), ")"));
  }
  if (c.is_decoder()) return ParseDecoderConfig(j, source, std::move(c));
  const bool distil = c.model_type == "distilbert";
  if (c.model_type == "roberta") c.pad_token_id = 1;
  if (distil) c.type_vocab_size = 0;
  // DistilBertConfig's own names; its attribute_map also accepts BERT's, so either may appear.
  auto key = [&](const char* bert, const char* distilbert) {
    return distil && !j.contains(bert) ? distilbert : bert;
  };
  struct IntField {
    const char* key;
    bool required;
    int64_t* out;
  };
  std::vector<IntField> fields = {
      {"vocab_size", true, &c.vocab_size},
      {key("hidden_size", "dim"), true, &c.hidden_size},
      {key("num_hidden_layers", "n_layers"), true, &c.num_hidden_layers},
      {key("num_attention_heads", "n_heads"), true, &c.num_attention_heads},
      {key("intermediate_size", "hidden_dim"), true, &c.intermediate_size},
      {"max_position_embeddings", true, &c.max_position_embeddings},
      {"pad_token_id", false, &c.pad_token_id},
  };
  if (!distil) fields.push_back({"type_vocab_size", false, &c.type_vocab_size});
  for (const IntField& f : fields) {
    if (auto s = GetInt(j, source, f.key, f.required, f.out); !s.ok()) return s;
  }
  if (!distil) {
    if (auto it = j.find("layer_norm_eps"); it != j.end()) {
      if (!it->is_number()) return Bad(source, "field \"layer_norm_eps\" must be a number");
      c.layer_norm_eps = it->get<double>();
    }
  }  // DistilBERT's LayerNorms use eps 1e-12, fixed in its code.
  if (auto it = j.find(key("hidden_act", "activation")); it != j.end()) {
    if (!it->is_string()) return Bad(source, "the activation field must be a string");
    c.hidden_act = it->get<std::string>();
  }
  if (auto it = j.find("position_embedding_type"); it != j.end() && !it->is_null()) {
    if (!it->is_string() || it->get<std::string>() != "absolute") {
      return Bad(source, absl::StrCat("position_embedding_type ", it->dump(),
                                      " is not supported (supported: \"absolute\")"));
    }
  }
  if (absl::Status st = ParseLabels(j, source, &c); !st.ok()) return st;
  for (const IntField& f : fields) {
    const bool may_be_zero =
        std::strcmp(f.key, "pad_token_id") == 0 || std::strcmp(f.key, "type_vocab_size") == 0;
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
  if (c.max_tokens() < 2) {
    return Bad(source, absl::StrCat("max_position_embeddings ", c.max_position_embeddings,
                                    " leaves no room for tokens"));
  }
  if (!(c.layer_norm_eps > 0)) return Bad(source, "layer_norm_eps must be positive");
  if (c.hidden_act != "gelu" && c.hidden_act != "gelu_new" && c.hidden_act != "relu") {
    return Bad(source, absl::StrCat("hidden_act \"", c.hidden_act,
                                    "\" is not supported (supported: gelu, gelu_new, relu)"));
  }
  return c;
}

absl::StatusOr<ModelConfig> ReadModelConfig(const std::string& path) {
  absl::StatusOr<std::string> text = util::ReadFileToString(path);
  if (!text.ok()) return text.status();
  return ParseModelConfig(*text, path);
}

std::string ModelConfigToJson(const ModelConfig& c) {
  json j;
  if (c.is_decoder()) {
    j = {
        {"model_type", c.model_type},
        {"vocab_size", c.vocab_size},
        {"hidden_size", c.hidden_size},
        {"num_hidden_layers", c.num_hidden_layers},
        {"num_attention_heads", c.num_attention_heads},
        {"num_key_value_heads", c.num_key_value_heads},
        {"head_dim", c.head_dim},
        {"intermediate_size", c.intermediate_size},
        {"max_position_embeddings", c.max_position_embeddings},
        {"pad_token_id", c.pad_token_id},
        {"rms_norm_eps", c.rms_norm_eps},
        {"rope_theta", c.rope_theta},
        {"hidden_act", "silu"},
        {"tie_word_embeddings", c.tie_word_embeddings},
        {"initializer_range", 0.02},
    };
    if (c.rope_scaling.type == "linear") {
      j["rope_scaling"] = {{"rope_type", "linear"}, {"factor", c.rope_scaling.factor}};
    } else if (c.rope_scaling.type == "llama3") {
      j["rope_scaling"] = {
          {"rope_type", "llama3"},
          {"factor", c.rope_scaling.factor},
          {"low_freq_factor", c.rope_scaling.low_freq_factor},
          {"high_freq_factor", c.rope_scaling.high_freq_factor},
          {"original_max_position_embeddings", c.rope_scaling.original_max_position_embeddings}};
    }
    const Architecture a = c.architecture();
    if (a == Architecture::kLlama || a == Architecture::kQwen3)
      j["attention_bias"] = c.attention_bias;
    if (a == Architecture::kLlama) j["mlp_bias"] = c.mlp_bias;
    if (a == Architecture::kMistral) {
      j["sliding_window"] = c.sliding_window > 0 ? json(c.sliding_window) : json();
    }
    if (a == Architecture::kQwen2 || a == Architecture::kQwen3) j["use_sliding_window"] = false;
  } else if (c.architecture() == Architecture::kDistilBert) {
    j = {
        {"model_type", c.model_type},
        {"vocab_size", c.vocab_size},
        {"dim", c.hidden_size},
        {"n_layers", c.num_hidden_layers},
        {"n_heads", c.num_attention_heads},
        {"hidden_dim", c.intermediate_size},
        {"max_position_embeddings", c.max_position_embeddings},
        {"pad_token_id", c.pad_token_id},
        {"activation", c.hidden_act},
        {"sinusoidal_pos_embds", false},
        {"dropout", 0.1},
        {"attention_dropout", 0.1},
        {"seq_classif_dropout", 0.2},
        {"initializer_range", 0.02},
    };
  } else {
    j = {
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
  }
  if (!c.architectures.empty()) {
    j["architectures"] = c.architectures;
  } else {
    static const char* const kBaseClass[] = {"BertModel",  "RobertaModel", "DistilBertModel",
                                             "LlamaModel", "MistralModel", "Qwen2Model",
                                             "Qwen3Model"};
    j["architectures"] = {kBaseClass[static_cast<int>(c.architecture())]};
  }
  if (!c.id2label.empty()) {
    json id2label = json::object(), label2id = json::object();
    for (size_t i = 0; i < c.id2label.size(); ++i) {
      id2label[std::to_string(i)] = c.id2label[i];
      label2id[c.id2label[i]] = i;
    }
    j["id2label"] = id2label;
    j["label2id"] = label2id;
  }
  return j.dump(2) + "\n";
}

}  // namespace loracle::model
