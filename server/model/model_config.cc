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

}  // namespace

Architecture ModelConfig::architecture() const {
  const ArchitectureSpec* spec = SpecForModelType(model_type);
  return spec != nullptr ? spec->arch : Architecture::kBert;
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
  if (auto it = j.find("architectures"); it != j.end() && it->is_array()) {
    for (const json& a : *it) {
      if (a.is_string()) c.architectures.push_back(a.get<std::string>());
    }
  }
  if (auto it = j.find("id2label"); it != j.end() && it->is_object() && !it->empty()) {
    c.id2label.resize(it->size());
    for (auto& [id, label] : it->items()) {
      size_t pos = 0;
      int64_t k = -1;
      try {
        k = std::stoll(id, &pos);
      } catch (const std::exception&) {
      }
      if (pos != id.size() || k < 0 || k >= static_cast<int64_t>(c.id2label.size()) ||
          !label.is_string() || !c.id2label[static_cast<size_t>(k)].empty()) {
        return Bad(source, absl::StrCat("id2label must map the ids 0..", c.id2label.size() - 1,
                                        " to label strings; bad entry \"", id, "\""));
      }
      c.id2label[static_cast<size_t>(k)] = label.get<std::string>();
    }
  }
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
  if (c.architecture() == Architecture::kDistilBert) {
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
    static const char* const kBaseClass[] = {"BertModel", "RobertaModel", "DistilBertModel"};
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
