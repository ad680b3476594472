#ifndef LORACLE_SERVER_ADAPTERS_ADAPTER_CONFIG_H_
#define LORACLE_SERVER_ADAPTERS_ADAPTER_CONFIG_H_

// Adapter files on disk (torch-free). One adapter version is a directory:
//   loracle.json                 labels, ensemble size M, default MC samples N, temperature, ...
//   adapter_config.json          PEFT LoraConfig                      } when M == 1
//   adapter_model.safetensors    PEFT weights + classifier head       }
//   member-<i>/adapter_config.json, member-<i>/adapter_model.safetensors   when M > 1
// Weight names follow PEFT for BertForSequenceClassification:
//   base_model.model.bert.<module path>.lora_A.weight   [r, in]
//   base_model.model.bert.<module path>.lora_B.weight   [out, r]
//   base_model.model.classifier.weight / .bias         [num_labels, hidden] / [num_labels]

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "server/calibration/calibration_report.h"
#include "server/model/dropout.h"

namespace loracle::adapters {

inline constexpr char kServingConfigFile[] = "loracle.json";
inline constexpr char kPeftConfigFile[] = "adapter_config.json";
inline constexpr char kPeftWeightsFile[] = "adapter_model.safetensors";

// The fields of PEFT's LoraConfig that loracle uses.
struct PeftLoraConfig {
  int rank = 8;
  double lora_alpha = 16;
  double lora_dropout = 0;
  bool use_rslora = false;
  std::vector<std::string> target_modules = {"query", "value"};
  // PEFT's string form of target_modules: a regular expression the module name must match
  // entirely. Set instead of target_modules.
  std::string target_regex;
  std::vector<std::string> modules_to_save = {"classifier"};
  std::string base_model_name_or_path;
  // Per-module overrides of r and lora_alpha: PEFT's rank_pattern / alpha_pattern, keyed by a
  // module-name pattern matched against the end of the module path.
  std::vector<std::pair<std::string, int>> rank_pattern;
  std::vector<std::pair<std::string, double>> alpha_pattern;
  // alpha / r, or alpha / sqrt(r) with rsLoRA.
  double scaling() const;
  // The rank and scaling of the LoRA pair on `module_path`, patterns applied.
  int RankFor(absl::string_view module_path) const;
  // Whether the linear layer at `module_path` carries LoRA weights; `base_prefix` ("bert") is
  // the base model's attribute, part of the module names a regex sees.
  bool Targets(absl::string_view module_path, absl::string_view base_prefix) const;
  double ScalingFor(absl::string_view module_path) const;
};

// The most windows an adapter may read a text in (ServingConfig::max_windows).
inline constexpr int kMaxWindows = 64;

// loracle's own per-adapter serving settings.
struct ServingConfig {
  std::vector<std::string> labels;
  int members = 1;                 // M
  int mc_samples = 1;              // default N
  double temperature = 1.0;        // logits are divided by this
  double abstain_threshold = 0.0;  // mutual information above which to abstain; 0 = never
  // Test-time dropout for the N > 1 Monte Carlo samples ({"method": "LORA_DROPOUT", "rate": 0.1});
  // with NONE the N samples of a member are identical.
  model::DropoutSpec dropout;
  // Long texts: a single text is read in up to `max_windows` windows of `window_length` tokens
  // (special tokens included; 0 = the server's maximum length) and the windows' logits are
  // averaged (text::Tokenizer::Windows). 1 = cut to the maximum length. Text pairs: one window.
  int max_windows = 1;
  int window_length = 0;
  std::string description;
  // How the adapter's predictions were distributed on its validation data (written by the
  // fine-tune job; "reference" in loracle.json): fractions per drift bin of confidence and mutual
  // information (calibration/drift.h). examples == 0: none; drift is then measured against the
  // first window of live traffic.
  struct Reference {
    int64_t examples = 0;
    std::vector<double> confidence;
    std::vector<double> mutual_information;
  };
  Reference reference;
  // The calibrated ensemble's report on the validation data ("validation" in loracle.json,
  // written by the fine-tune job; examples == 0: none). Exported as gauges per loaded version.
  calibration::CalibrationReport validation;
  // Split-conformal calibration scores (calibration/conformal.h): the LAC scores 1 - p_y of the
  // served probabilities on the validation data, sorted ascending ("conformal" in loracle.json,
  // written by the fine-tune job). Empty: the adapter serves no prediction sets.
  std::vector<double> conformal_scores;
  // The uncertainty that best flagged wrong answers on the validation data
  // (calibration/error_score.h; "error_score" in loracle.json, written by the fine-tune job):
  // its name, and the validation predictions' scores ascending with whether each was wrong
  // (abstain_risk chooses its threshold on them). Empty name: none; Uncertainty.error_score is 0.
  struct ErrorScoring {
    std::string name;
    std::vector<double> scores;
    std::vector<bool> wrong;
  };
  ErrorScoring error_score;
  // How unlike the training inputs an input is (model/ood_detector.h; "ood" in loracle.json,
  // written by the fine-tune job): the detector's statistics live in `file` beside the PEFT files;
  // Uncertainty.ood_score = distance / threshold, where `threshold` is the `quantile` of the
  // validation texts' distances (ood_score > 1 for a share 1 - quantile of inputs like them).
  // Empty method: none; ood_score is 0.
  struct OodScoring {
    std::string method;  // "mahalanobis"
    std::string file;
    double quantile = 0.95;
    double threshold = 0;
  };
  OodScoring ood;
  // The base the adapter was trained on ("base" in loracle.json, stamped by every adapter loracle
  // writes; model/fingerprint.h). Loading refuses an adapter whose fingerprint is not the serving
  // base's. Empty fingerprint (external PEFT adapters, adapters written before fingerprints):
  // unchecked, loaded with a warning.
  struct BaseIdentity {
    std::string fingerprint;  // "lfp1-<16 hex>"
    std::string model_type;
    std::string path;  // the base's directory when it was written (informational)
  };
  BaseIdentity base;
  // Label words ("label_words" in loracle.json; decoder bases): label i's logit is the language
  // model's logit for label_words[i] as the next token after the input (the LM head's row of
  // that token, or the tied embedding's), so the class probabilities are the LM's next-token
  // probabilities renormalised over the label words. Each must be one token of the base's
  // tokenizer. Replaces the classification head; with no PEFT files the adapter is the base
  // itself, zero-shot. Empty: the adapter's own head.
  std::vector<std::string> label_words;
  // A prompt around each input ("prompt_template" in loracle.json): the text with "{text}"
  // (exactly once) standing for the input, e.g. "Review: {text}\nSentiment:". Tokenised as
  // text::Tokenizer::EncodePrompt does: what follows {text} is never truncated, so the label
  // words are read after it. Single texts and one window (max_windows 1) only. Empty: the input
  // alone.
  std::string prompt_template;
};

// The text before and after "{text}" in a prompt template.
struct PromptParts {
  std::string prefix, suffix;
};
PromptParts SplitPromptTemplate(const std::string& prompt_template);

// INVALID_ARGUMENT naming `source` and the field.
absl::StatusOr<PeftLoraConfig> ParsePeftConfig(absl::string_view json_text,
                                               absl::string_view source);
std::string PeftConfigToJson(const PeftLoraConfig& config);
absl::StatusOr<ServingConfig> ParseServingConfig(absl::string_view json_text,
                                                 absl::string_view source);
std::string ServingConfigToJson(const ServingConfig& config);

// True when `module_path` ("encoder.layer.0.attention.self.query") is targeted, by PEFT's rule:
// equal to a target, or ending in "." + target; a single target that is not a plain name is a
// regular expression the whole path must match (PEFT's `target_modules="..."` string form).
bool MatchesTarget(absl::string_view module_path, const std::vector<std::string>& targets);

// Adapter names: 1-64 of [A-Za-z0-9._-], not starting with '.' or '-'.
absl::Status ValidateAdapterName(absl::string_view name);

enum class AdapterState { kLoading, kReady, kUnloading, kFailed };
absl::string_view AdapterStateName(AdapterState state);

// A registry entry as clients see it.
struct AdapterInfo {
  std::string name;
  int64_t version = 0;
  AdapterState state = AdapterState::kLoading;
  std::string error;  // when kFailed
  std::string path;
  ServingConfig serving;
  PeftLoraConfig lora;  // of member 0
  // READY versions: whether the weights are in memory (false: evicted for the memory budget and
  // reloaded on the next request), and their size.
  bool resident = false;
  int64_t memory_bytes = 0;
};

}  // namespace loracle::adapters

#endif  // LORACLE_SERVER_ADAPTERS_ADAPTER_CONFIG_H_
