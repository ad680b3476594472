#include "server/adapters/adapter_config.h"

#include <algorithm>
#include <cmath>
#include <regex>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "server/calibration/error_score.h"

namespace loracle::adapters {
namespace {

using json = nlohmann::json;

absl::Status Bad(absl::string_view source, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(source, ": ", what));
}

absl::StatusOr<json> ParseObject(absl::string_view text, absl::string_view source) {
  json j = json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return Bad(source, "not valid JSON");
  if (!j.is_object()) return Bad(source, "top level must be a JSON object");
  return j;
}

absl::Status GetStrings(const json& j, const char* key, absl::string_view source,
                        std::vector<std::string>* out) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return absl::OkStatus();
  if (it->is_string()) {  // PEFT allows a single (regex) string; loracle takes it as one name
    *out = {it->get<std::string>()};
    return absl::OkStatus();
  }
  if (!it->is_array()) return Bad(source, absl::StrCat("\"", key, "\" must be a list of strings"));
  out->clear();
  for (const json& v : *it) {
    if (!v.is_string()) return Bad(source, absl::StrCat("\"", key, "\" must be a list of strings"));
    out->push_back(v.get<std::string>());
  }
  return absl::OkStatus();
}

}  // namespace

double PeftLoraConfig::scaling() const {
  return use_rslora ? lora_alpha / std::sqrt(static_cast<double>(rank)) : lora_alpha / rank;
}

namespace {
// PEFT's get_pattern_key: the first pattern p with re.match(rf".*\.{p}$", path), else exact.
bool PatternMatches(const std::string& pattern, absl::string_view path) {
  if (path == pattern) return true;
  try {
    return std::regex_match(std::string(path), std::regex(".*\\." + pattern));
  } catch (const std::regex_error&) {
    return false;
  }
}
}  // namespace

bool PeftLoraConfig::Targets(absl::string_view module_path, absl::string_view base_prefix) const {
  if (target_regex.empty()) return MatchesTarget(module_path, target_modules);
  try {
    const std::regex re(target_regex);
    return std::regex_match(std::string(module_path), re) ||
           std::regex_match(absl::StrCat(base_prefix, ".", module_path), re);
  } catch (const std::regex_error&) {
    return false;
  }
}

int PeftLoraConfig::RankFor(absl::string_view module_path) const {
  for (const auto& [pattern, r] : rank_pattern) {
    if (PatternMatches(pattern, module_path)) return r;
  }
  return rank;
}

double PeftLoraConfig::ScalingFor(absl::string_view module_path) const {
  const int r = RankFor(module_path);
  double alpha = lora_alpha;
  for (const auto& [pattern, a] : alpha_pattern) {
    if (PatternMatches(pattern, module_path)) {
      alpha = a;
      break;
    }
  }
  return use_rslora ? alpha / std::sqrt(static_cast<double>(r)) : alpha / r;
}

absl::StatusOr<PeftLoraConfig> ParsePeftConfig(absl::string_view text, absl::string_view source) {
  absl::StatusOr<json> parsed = ParseObject(text, source);
  if (!parsed.ok()) return parsed.status();
  const json& j = *parsed;
  PeftLoraConfig c;
  if (auto it = j.find("peft_type"); it != j.end() && it->is_string() && *it != "LORA") {
    return Bad(source, absl::StrCat("peft_type ", it->dump(), " is not supported (only LORA)"));
  }
  auto r = j.find("r");
  if (r == j.end()) return Bad(source, "missing required field \"r\"");
  if (!r->is_number_integer() || r->get<int64_t>() <= 0 || r->get<int64_t>() > 4096) {
    return Bad(source, absl::StrCat("\"r\" must be an integer in [1, 4096], got ", r->dump()));
  }
  c.rank = r->get<int>();
  if (auto it = j.find("lora_alpha"); it != j.end()) {
    if (!it->is_number()) return Bad(source, "\"lora_alpha\" must be a number");
    c.lora_alpha = it->get<double>();
  }
  if (auto it = j.find("lora_dropout"); it != j.end() && !it->is_null()) {
    if (!it->is_number() || it->get<double>() < 0 || it->get<double>() >= 1) {
      return Bad(source, "\"lora_dropout\" must be a number in [0, 1)");
    }
    c.lora_dropout = it->get<double>();
  }
  if (auto it = j.find("use_rslora"); it != j.end() && !it->is_null()) {
    if (!it->is_boolean()) return Bad(source, "\"use_rslora\" must be a boolean");
    c.use_rslora = it->get<bool>();
  }
  if (auto it = j.find("target_modules"); it != j.end() && it->is_string()) {
    c.target_regex = it->get<std::string>();
    c.target_modules.clear();
    try {
      std::regex check(c.target_regex);
    } catch (const std::regex_error& e) {
      return Bad(source, absl::StrCat("target_modules regex \"", c.target_regex, "\": ", e.what()));
    }
  } else if (auto s = GetStrings(j, "target_modules", source, &c.target_modules); !s.ok()) {
    return s;
  }
  c.modules_to_save.clear();
  if (auto s = GetStrings(j, "modules_to_save", source, &c.modules_to_save); !s.ok()) return s;
  if (c.target_modules.empty() && c.target_regex.empty()) {
    return Bad(source, "\"target_modules\" is empty");
  }
  if (auto it = j.find("base_model_name_or_path"); it != j.end() && it->is_string()) {
    c.base_model_name_or_path = it->get<std::string>();
  }
  // Variants that change the forward pass loracle runs: refuse them rather than serve wrong
  // numbers.
  if (auto it = j.find("bias"); it != j.end() && it->is_string() && *it != "none") {
    return Bad(source, absl::StrCat("bias ", it->dump(),
                                    " is not supported (only \"none\": trained base biases)"));
  }
  for (const char* flag : {"use_dora", "fan_in_fan_out"}) {
    if (auto it = j.find(flag); it != j.end() && it->is_boolean() && it->get<bool>()) {
      return Bad(source, absl::StrCat("\"", flag, "\": true is not supported"));
    }
  }
  for (const char* key : {"layers_to_transform", "layers_pattern"}) {
    if (auto it = j.find(key);
        it != j.end() && !it->is_null() && !(it->is_array() && it->empty())) {
      return Bad(source, absl::StrCat("\"", key, "\" is not supported"));
    }
  }
  if (auto it = j.find("rank_pattern"); it != j.end() && it->is_object()) {
    for (auto& [k, v] : it->items()) {
      if (!v.is_number_integer() || v.get<int64_t>() <= 0 || v.get<int64_t>() > 4096) {
        return Bad(source,
                   absl::StrCat("rank_pattern[\"", k, "\"] must be an integer in [1, 4096]"));
      }
      c.rank_pattern.emplace_back(k, v.get<int>());
    }
  }
  if (auto it = j.find("alpha_pattern"); it != j.end() && it->is_object()) {
    for (auto& [k, v] : it->items()) {
      if (!v.is_number())
        return Bad(source, absl::StrCat("alpha_pattern[\"", k, "\"] must be a number"));
      c.alpha_pattern.emplace_back(k, v.get<double>());
    }
  }
  return c;
}

std::string PeftConfigToJson(const PeftLoraConfig& c) {
  json j = {
      {"peft_type", "LORA"},
      {"task_type", "SEQ_CLS"},
      {"r", c.rank},
      {"lora_alpha", c.lora_alpha},
      {"lora_dropout", c.lora_dropout},
      {"use_rslora", c.use_rslora},
      {"target_modules", c.target_regex.empty() ? json(c.target_modules) : json(c.target_regex)},
      {"modules_to_save", c.modules_to_save},
      {"bias", "none"},
      {"fan_in_fan_out", false},
      {"inference_mode", true},
      {"init_lora_weights", true},
      {"base_model_name_or_path", c.base_model_name_or_path},
      {"use_dora", false},
      {"layers_to_transform", nullptr},
      {"layers_pattern", nullptr},
      {"rank_pattern", json::object()},
      {"alpha_pattern", json::object()},
  };
  for (const auto& [k, v] : c.rank_pattern) j["rank_pattern"][k] = v;
  for (const auto& [k, v] : c.alpha_pattern) j["alpha_pattern"][k] = v;
  return j.dump(2) + "\n";
}

namespace {
// `object` has `key` and it is a string (json::value would throw on another type).
bool IsString(const json& object, const char* key) {
  const auto it = object.find(key);
  return it != object.end() && it->is_string();
}
}  // namespace

absl::StatusOr<ServingConfig> ParseServingConfig(absl::string_view text, absl::string_view source) {
  absl::StatusOr<json> parsed = ParseObject(text, source);
  if (!parsed.ok()) return parsed.status();
  const json& j = *parsed;
  ServingConfig c;
  if (auto s = GetStrings(j, "labels", source, &c.labels); !s.ok()) return s;
  if (c.labels.size() < 2) return Bad(source, "\"labels\" must name at least 2 classes");
  for (size_t i = 0; i < c.labels.size(); ++i) {
    for (size_t k = 0; k < i; ++k) {
      if (c.labels[i] == c.labels[k])
        return Bad(source, absl::StrCat("label \"", c.labels[i], "\" repeats"));
    }
  }
  auto get_int = [&](const char* key, int lo, int hi, int* out) -> absl::Status {
    auto it = j.find(key);
    if (it == j.end()) return absl::OkStatus();
    if (!it->is_number_integer() || it->get<int64_t>() < lo || it->get<int64_t>() > hi) {
      return Bad(source, absl::StrCat("\"", key, "\" must be an integer in [", lo, ", ", hi, "]"));
    }
    *out = it->get<int>();
    return absl::OkStatus();
  };
  if (auto s = get_int("members", 1, 64, &c.members); !s.ok()) return s;
  if (auto s = get_int("mc_samples", 1, 64, &c.mc_samples); !s.ok()) return s;
  if (auto s = get_int("max_windows", 1, kMaxWindows, &c.max_windows); !s.ok()) return s;
  if (auto s = get_int("window_length", 0, 4096, &c.window_length); !s.ok()) return s;
  if (c.window_length > 0 && c.window_length < 8) {
    return Bad(source, "\"window_length\" must be 0 (the server's maximum) or in [8, 4096]");
  }
  if (auto it = j.find("temperature"); it != j.end()) {
    if (!it->is_number() || !(it->get<double>() > 0))
      return Bad(source, "\"temperature\" must be > 0");
    c.temperature = it->get<double>();
  }
  if (auto it = j.find("abstain_threshold"); it != j.end()) {
    if (!it->is_number() || it->get<double>() < 0)
      return Bad(source, "\"abstain_threshold\" must be >= 0");
    c.abstain_threshold = it->get<double>();
  }
  if (auto it = j.find("dropout"); it != j.end() && !it->is_null()) {
    if (!it->is_object()) return Bad(source, "\"dropout\" must be an object");
    if (auto m = it->find("method"); m != it->end()) {
      if (!m->is_string()) return Bad(source, "\"dropout.method\" must be a string");
      absl::StatusOr<model::DropoutMethod> method =
          model::ParseDropoutMethod(m->get<std::string>());
      if (!method.ok()) return Bad(source, method.status().message());
      c.dropout.method = *method;
    }
    for (auto [key, field] :
         {std::pair{"rate", &c.dropout.rate}, std::pair{"dropkey_rate", &c.dropout.dropkey_rate},
          std::pair{"hiddencut_rate", &c.dropout.hiddencut_rate}}) {
      if (auto v = it->find(key); v != it->end()) {
        if (!v->is_number())
          return Bad(source, absl::StrCat("\"dropout.", key, "\" must be a number"));
        *field = v->get<double>();
      }
    }
    if (absl::Status s = model::ValidateDropoutSpec(c.dropout); !s.ok())
      return Bad(source, s.message());
  }
  if (auto it = j.find("description"); it != j.end() && it->is_string()) {
    c.description = it->get<std::string>();
  }
  if (auto it = j.find("reference"); it != j.end() && !it->is_null()) {
    const auto examples = it->is_object() ? it->find("examples") : it->end();
    if (!it->is_object() || examples == it->end() || !examples->is_number_integer() ||
        examples->get<int64_t>() < 0) {
      return Bad(source, "\"reference\" must be an object with an integer \"examples\" >= 0");
    }
    c.reference.examples = examples->get<int64_t>();
    for (auto [key, field] : {std::pair{"confidence", &c.reference.confidence},
                              std::pair{"mutual_information", &c.reference.mutual_information}}) {
      const auto v = it->find(key);
      if (v == it->end() || !v->is_array()) {
        return Bad(source, absl::StrCat("\"reference.", key, "\" must be an array of fractions"));
      }
      for (const json& x : *v) {
        if (!x.is_number() || x.get<double>() < 0 || x.get<double>() > 1 + 1e-9) {
          return Bad(source, absl::StrCat("\"reference.", key, "\" must hold numbers in [0, 1]"));
        }
        field->push_back(x.get<double>());
      }
    }
  }
  if (auto it = j.find("validation"); it != j.end() && !it->is_null()) {
    const auto examples = it->is_object() ? it->find("examples") : it->end();
    if (!it->is_object() || examples == it->end() || !examples->is_number_integer() ||
        examples->get<int64_t>() < 0) {
      return Bad(source, "\"validation\" must be an object with an integer \"examples\" >= 0");
    }
    c.validation.examples = static_cast<size_t>(examples->get<int64_t>());
    for (auto [key, field] :
         {std::pair{"accuracy", &c.validation.accuracy}, std::pair{"ece", &c.validation.ece},
          std::pair{"mce", &c.validation.mce}, std::pair{"nll", &c.validation.nll},
          std::pair{"brier", &c.validation.brier}}) {
      const auto v = it->find(key);
      if (v == it->end() || !v->is_number() || v->get<double>() < 0) {
        return Bad(source, absl::StrCat("\"validation.", key, "\" must be a number >= 0"));
      }
      *field = v->get<double>();
    }
  }
  if (auto it = j.find("conformal"); it != j.end() && !it->is_null()) {
    const auto scores = it->is_object() ? it->find("scores") : it->end();
    if (!it->is_object() || !IsString(*it, "score") || (*it)["score"] != "LAC" ||
        scores == it->end() || !scores->is_array()) {
      return Bad(source,
                 "\"conformal\" must be {\"score\": \"LAC\", \"scores\": [numbers in [0, 1]]}");
    }
    for (const json& x : *scores) {
      if (!x.is_number() || !(x.get<double>() >= 0) || x.get<double>() > 1) {
        return Bad(source, "\"conformal.scores\" must hold numbers in [0, 1]");
      }
      c.conformal_scores.push_back(x.get<double>());
    }
    std::sort(c.conformal_scores.begin(), c.conformal_scores.end());
  }
  if (auto it = j.find("error_score"); it != j.end() && !it->is_null()) {
    const auto scores = it->is_object() ? it->find("scores") : it->end();
    const auto wrong = it->is_object() ? it->find("wrong") : it->end();
    const std::string usage =
        "\"error_score\" must be {\"name\": NAME, \"scores\": [ascending numbers], "
        "\"wrong\": [0 or 1, one per score]}";
    if (!it->is_object() || !it->contains("name") || !(*it)["name"].is_string() ||
        scores == it->end() || !scores->is_array() || wrong == it->end() || !wrong->is_array() ||
        scores->size() != wrong->size()) {
      return Bad(source, usage);
    }
    c.error_score.name = (*it)["name"].get<std::string>();
    if (absl::Status s = calibration::ParseErrorScore(c.error_score.name).status(); !s.ok()) {
      return Bad(source, absl::StrCat("\"error_score.name\": ", s.message()));
    }
    for (size_t i = 0; i < scores->size(); ++i) {
      const json& x = (*scores)[i];
      const json& w = (*wrong)[i];
      if (!x.is_number() || !std::isfinite(x.get<double>()) || !w.is_number_integer() ||
          (w.get<int>() != 0 && w.get<int>() != 1) ||
          (i > 0 && x.get<double>() < c.error_score.scores.back())) {
        return Bad(source, usage);
      }
      c.error_score.scores.push_back(x.get<double>());
      c.error_score.wrong.push_back(w.get<int>() == 1);
    }
  }
  if (auto it = j.find("ood"); it != j.end() && !it->is_null()) {
    const std::string usage =
        "\"ood\" must be {\"method\": \"mahalanobis\", \"file\": FILE, \"quantile\": q in "
        "(0, 1), \"threshold\": number > 0}";
    if (!it->is_object() || !IsString(*it, "method") || (*it)["method"] != "mahalanobis" ||
        !it->contains("file") || !(*it)["file"].is_string() || !it->contains("quantile") ||
        !(*it)["quantile"].is_number() || !it->contains("threshold") ||
        !(*it)["threshold"].is_number()) {
      return Bad(source, usage);
    }
    c.ood.method = "mahalanobis";
    c.ood.file = (*it)["file"].get<std::string>();
    c.ood.quantile = (*it)["quantile"].get<double>();
    c.ood.threshold = (*it)["threshold"].get<double>();
    if (c.ood.file.empty() || c.ood.file.find('/') != std::string::npos ||
        !(c.ood.quantile > 0 && c.ood.quantile < 1) || !(c.ood.threshold > 0) ||
        !std::isfinite(c.ood.threshold)) {
      return Bad(source, usage + " (file: a name in the adapter's directory)");
    }
  }
  if (auto it = j.find("label_words"); it != j.end() && !it->is_null()) {
    if (auto s = GetStrings(j, "label_words", source, &c.label_words); !s.ok()) return s;
    if (c.label_words.size() != c.labels.size()) {
      return Bad(source, absl::StrCat("\"label_words\" must give one word per label (",
                                      c.labels.size(), "), not ", c.label_words.size()));
    }
    for (const std::string& w : c.label_words) {
      if (w.empty()) return Bad(source, "\"label_words\" entries must not be empty");
    }
  }
  if (auto it = j.find("prompt_template"); it != j.end() && !it->is_null()) {
    const std::string kSlot = "{text}";
    if (!it->is_string()) return Bad(source, "\"prompt_template\" must be a string");
    c.prompt_template = it->get<std::string>();
    const size_t at = c.prompt_template.find(kSlot);
    if (at == std::string::npos ||
        c.prompt_template.find(kSlot, at + kSlot.size()) != std::string::npos) {
      return Bad(source,
                 "\"prompt_template\" must hold \"{text}\" exactly once, where the "
                 "input goes");
    }
    if (c.max_windows > 1) {
      return Bad(source, "\"prompt_template\" reads one window: \"max_windows\" must be 1");
    }
  }
  if (auto it = j.find("base"); it != j.end() && !it->is_null()) {
    const std::string usage =
        "\"base\" must be {\"fingerprint\": \"lfp1-...\", \"model_type\": TYPE, \"path\": DIR}";
    if (!it->is_object() || !IsString(*it, "fingerprint")) return Bad(source, usage);
    c.base.fingerprint = (*it)["fingerprint"].get<std::string>();
    if (c.base.fingerprint.empty() || c.base.fingerprint.size() > 128) {
      return Bad(source, usage + " (fingerprint: 1 to 128 characters)");
    }
    if (IsString(*it, "model_type")) c.base.model_type = (*it)["model_type"].get<std::string>();
    if (IsString(*it, "path")) c.base.path = (*it)["path"].get<std::string>();
  }
  return c;
}

std::string ServingConfigToJson(const ServingConfig& c) {
  json j = {{"labels", c.labels},
            {"members", c.members},
            {"mc_samples", c.mc_samples},
            {"temperature", c.temperature},
            {"abstain_threshold", c.abstain_threshold}};
  if (c.dropout.method != model::DropoutMethod::kNone) {
    j["dropout"] = {{"method", std::string(model::DropoutMethodName(c.dropout.method))},
                    {"rate", c.dropout.rate},
                    {"dropkey_rate", c.dropout.dropkey_rate},
                    {"hiddencut_rate", c.dropout.hiddencut_rate}};
  }
  if (c.max_windows > 1) j["max_windows"] = c.max_windows;
  if (c.window_length > 0 || c.max_windows > 1) j["window_length"] = c.window_length;
  if (!c.description.empty()) j["description"] = c.description;
  if (c.reference.examples > 0) {
    j["reference"] = {{"examples", c.reference.examples},
                      {"confidence", c.reference.confidence},
                      {"mutual_information", c.reference.mutual_information}};
  }
  if (c.validation.examples > 0) {
    j["validation"] = {{"examples", c.validation.examples}, {"accuracy", c.validation.accuracy},
                       {"ece", c.validation.ece},           {"mce", c.validation.mce},
                       {"nll", c.validation.nll},           {"brier", c.validation.brier}};
  }
  if (!c.conformal_scores.empty()) {
    j["conformal"] = {{"score", "LAC"}, {"scores", c.conformal_scores}};
  }
  if (!c.error_score.name.empty()) {
    std::vector<int> wrong(c.error_score.wrong.begin(), c.error_score.wrong.end());
    j["error_score"] = {
        {"name", c.error_score.name}, {"scores", c.error_score.scores}, {"wrong", wrong}};
  }
  if (!c.ood.method.empty()) {
    j["ood"] = {{"method", c.ood.method},
                {"file", c.ood.file},
                {"quantile", c.ood.quantile},
                {"threshold", c.ood.threshold}};
  }
  if (!c.label_words.empty()) j["label_words"] = c.label_words;
  if (!c.prompt_template.empty()) j["prompt_template"] = c.prompt_template;
  if (!c.base.fingerprint.empty()) {
    j["base"] = {{"fingerprint", c.base.fingerprint},
                 {"model_type", c.base.model_type},
                 {"path", c.base.path}};
  }
  return j.dump(2) + "\n";
}

bool MatchesTarget(absl::string_view module_path, const std::vector<std::string>& targets) {
  for (const std::string& t : targets) {
    if (module_path == t || absl::EndsWith(module_path, absl::StrCat(".", t))) return true;
  }
  return false;
}

absl::Status ValidateAdapterName(absl::string_view name) {
  if (name.empty()) return absl::InvalidArgumentError("adapter name is empty");
  if (name.size() > 64)
    return absl::InvalidArgumentError("adapter name is longer than 64 characters");
  if (name[0] == '.' || name[0] == '-') {
    return absl::InvalidArgumentError(
        absl::StrCat("adapter name \"", name, "\" must not start with '.' or '-'"));
  }
  for (char ch : name) {
    const bool ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
                    (ch >= '0' && ch <= '9') || ch == '.' || ch == '_' || ch == '-';
    if (!ok) {
      return absl::InvalidArgumentError(absl::StrCat(
          "adapter name \"", name, "\" may only contain letters, digits, '.', '_' and '-'"));
    }
  }
  return absl::OkStatus();
}

absl::string_view AdapterStateName(AdapterState state) {
  switch (state) {
    case AdapterState::kLoading:
      return "LOADING";
    case AdapterState::kReady:
      return "READY";
    case AdapterState::kUnloading:
      return "UNLOADING";
    case AdapterState::kFailed:
      return "FAILED";
  }
  return "UNKNOWN";
}

PromptParts SplitPromptTemplate(const std::string& prompt_template) {
  const size_t at = prompt_template.find("{text}");
  if (at == std::string::npos) return {prompt_template, ""};
  return {prompt_template.substr(0, at), prompt_template.substr(at + 6)};
}

}  // namespace loracle::adapters
