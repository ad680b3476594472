#include "server/adapters/adapter_config.h"

#include <gtest/gtest.h>

#include <cmath>

namespace loracle::adapters {
namespace {

// An adapter_config.json as PEFT 0.13 writes it for a BERT sequence classifier.
constexpr char kPeftConfig[] = R"({
  "alpha_pattern": {}, "auto_mapping": {"base_model_class": "BertForSequenceClassification",
  "parent_library": "transformers.models.bert.modeling_bert"},
  "base_model_name_or_path": "bert-base-uncased", "bias": "none", "fan_in_fan_out": false,
  "inference_mode": true, "init_lora_weights": true, "layers_pattern": null,
  "layers_to_transform": null, "lora_alpha": 16, "lora_dropout": 0.1,
  "modules_to_save": ["classifier", "score"], "peft_type": "LORA", "r": 8,
  "rank_pattern": {}, "revision": null, "target_modules": ["query", "value"],
  "task_type": "SEQ_CLS", "use_dora": false, "use_rslora": false})";

TEST(AdapterConfigTest, ParsesPeftLoraConfig) {
  auto c = ParsePeftConfig(kPeftConfig, "adapter_config.json");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->rank, 8);
  EXPECT_DOUBLE_EQ(c->lora_alpha, 16);
  EXPECT_DOUBLE_EQ(c->lora_dropout, 0.1);
  EXPECT_EQ(c->target_modules, (std::vector<std::string>{"query", "value"}));
  EXPECT_EQ(c->modules_to_save, (std::vector<std::string>{"classifier", "score"}));
  EXPECT_DOUBLE_EQ(c->scaling(), 2.0);
  c->use_rslora = true;
  EXPECT_DOUBLE_EQ(c->scaling(), 16 / std::sqrt(8.0));
  auto again = ParsePeftConfig(PeftConfigToJson(*c), "x");
  ASSERT_TRUE(again.ok());
  EXPECT_TRUE(again->use_rslora);
}

TEST(AdapterConfigTest, RejectsBadPeftConfigs) {
  EXPECT_NE(ParsePeftConfig(R"({"lora_alpha": 16})", "a").status().message().find("\"r\""),
            std::string::npos);
  EXPECT_FALSE(ParsePeftConfig(R"({"r": 0})", "a").ok());
  EXPECT_NE(ParsePeftConfig(R"({"r": 8, "peft_type": "IA3"})", "a").status().message().find("IA3"),
            std::string::npos);
}

TEST(AdapterConfigTest, TargetsMatchLikePeft) {
  const std::vector<std::string> t = {"query", "value"};
  EXPECT_TRUE(MatchesTarget("encoder.layer.0.attention.self.query", t));
  EXPECT_FALSE(MatchesTarget("encoder.layer.0.attention.self.key", t));
  EXPECT_FALSE(MatchesTarget("encoder.layer.0.attention.self.myquery", t));
  EXPECT_TRUE(MatchesTarget("pooler.dense", {"dense"}));
}

TEST(AdapterConfigTest, ServingConfigValidatesLabelsAndRanges) {
  auto ok =
      ParseServingConfig(R"({"labels": ["ham", "spam"], "members": 4, "temperature": 1.5})", "l");
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ(ok->members, 4);
  EXPECT_EQ(ok->mc_samples, 1);
  EXPECT_NE(ParseServingConfig(R"({"labels": ["x"]})", "l").status().message().find("at least 2"),
            std::string::npos);
  EXPECT_NE(ParseServingConfig(R"({"labels": ["x", "x"]})", "l").status().message().find("repeats"),
            std::string::npos);
  EXPECT_FALSE(ParseServingConfig(R"({"labels": ["a", "b"], "members": 0})", "l").ok());
  EXPECT_FALSE(ParseServingConfig(R"({"labels": ["a", "b"], "temperature": 0})", "l").ok());
  EXPECT_EQ(ok->max_windows, 1) << "texts are cut to one window unless the adapter says so";
  auto windows =
      ParseServingConfig(R"({"labels": ["a", "b"], "max_windows": 4, "window_length": 128})", "l");
  ASSERT_TRUE(windows.ok()) << windows.status();
  EXPECT_EQ(windows->max_windows, 4);
  EXPECT_EQ(windows->window_length, 128);
  auto again = ParseServingConfig(ServingConfigToJson(*windows), "l");
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->max_windows, 4);
  EXPECT_EQ(again->window_length, 128);
  EXPECT_FALSE(ParseServingConfig(R"({"labels": ["a", "b"], "max_windows": 0})", "l").ok());
  EXPECT_FALSE(ParseServingConfig(R"({"labels": ["a", "b"], "max_windows": 65})", "l").ok());
  EXPECT_FALSE(ParseServingConfig(R"({"labels": ["a", "b"], "window_length": 3})", "l").ok());
}

TEST(AdapterConfigTest, ServingConfigKeepsTheValidationReportAndReference) {
  ServingConfig c;
  c.labels = {"ham", "spam"};
  c.temperature = 1.25;
  c.validation = {200, 0.9, 0.03, 0.2, 0.31, 0.08};
  c.reference = {200, {0.25, 0.75}, {1.0, 0.0}};
  auto back = ParseServingConfig(ServingConfigToJson(c), "loracle.json");
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->validation.examples, 200);
  EXPECT_DOUBLE_EQ(back->validation.accuracy, 0.9);
  EXPECT_DOUBLE_EQ(back->validation.ece, 0.03);
  EXPECT_DOUBLE_EQ(back->validation.mce, 0.2);
  EXPECT_DOUBLE_EQ(back->validation.nll, 0.31);
  EXPECT_DOUBLE_EQ(back->validation.brier, 0.08);
  EXPECT_EQ(back->reference.confidence, c.reference.confidence);
  // Without a report nothing is written, and nothing is read back.
  c.validation = {};
  auto none = ParseServingConfig(ServingConfigToJson(c), "loracle.json");
  ASSERT_TRUE(none.ok());
  EXPECT_EQ(none->validation.examples, 0);
  auto bad = ParseServingConfig(
      R"({"labels": ["a", "b"], "validation": {"examples": 3, "accuracy": "high"}})", "l.json");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("validation.accuracy"), std::string::npos) << bad.status();
}

TEST(AdapterConfigTest, ServingConfigKeepsTheOodDetectorsThreshold) {
  ServingConfig c;
  c.labels = {"a", "b"};
  c.ood = {"mahalanobis", "loracle_ood.safetensors", 0.95, 12.5};
  auto back = ParseServingConfig(ServingConfigToJson(c), "loracle.json");
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->ood.method, "mahalanobis");
  EXPECT_EQ(back->ood.file, "loracle_ood.safetensors");
  EXPECT_DOUBLE_EQ(back->ood.quantile, 0.95);
  EXPECT_DOUBLE_EQ(back->ood.threshold, 12.5);
  // Absent: none (adapters published before OOD detectors load as they did).
  auto none = ParseServingConfig(R"({"labels": ["a", "b"]})", "l.json");
  ASSERT_TRUE(none.ok());
  EXPECT_TRUE(none->ood.method.empty());
  for (const char* bad : {
           R"({"labels": ["a", "b"], "ood": {"method": "knn", "file": "f", "quantile": 0.9,
              "threshold": 1}})",
           R"({"labels": ["a", "b"], "ood": {"method": "mahalanobis", "file": "../f",
              "quantile": 0.9, "threshold": 1}})",
           R"({"labels": ["a", "b"], "ood": {"method": "mahalanobis", "file": "f",
              "quantile": 1.5, "threshold": 1}})",
           R"({"labels": ["a", "b"], "ood": {"method": "mahalanobis", "file": "f",
              "quantile": 0.9, "threshold": 0}})",
           R"({"labels": ["a", "b"], "ood": {"method": "mahalanobis", "quantile": 0.9}})",
           R"({"labels": ["a", "b"], "ood": {"method": 5, "file": "f", "quantile": 0.9,
              "threshold": 1}})"}) {
    auto r = ParseServingConfig(bad, "l.json");
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(r.status().message().find("\"ood\""), std::string::npos) << r.status();
  }
}

// Wrong JSON types are INVALID_ARGUMENT, never an exception (a loracle.json from disk).
TEST(AdapterConfigTest, WrongTypesInTheTrustFieldsAreErrorsNotExceptions) {
  for (const char* bad : {R"({"labels": ["a", "b"], "conformal": {"score": 1, "scores": [0.1]}})",
                          R"({"labels": ["a", "b"], "conformal": {"score": null}})",
                          R"({"labels": ["a", "b"], "ood": {"method": ["x"]}})",
                          R"({"labels": ["a", "b"], "error_score": {"name": 3}})"}) {
    absl::StatusOr<ServingConfig> r = ParseServingConfig(bad, "l.json");
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << bad;
  }
}

TEST(AdapterConfigTest, PromptTemplateHoldsTheInputExactlyOnce) {
  absl::StatusOr<ServingConfig> c =
      ParseServingConfig(R"({"labels": ["a", "b"], "prompt_template": "Q: {text}\nA:"})", "l.json");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->prompt_template, "Q: {text}\nA:");
  const PromptParts parts = SplitPromptTemplate(c->prompt_template);
  EXPECT_EQ(parts.prefix, "Q: ");
  EXPECT_EQ(parts.suffix, "\nA:");
  absl::StatusOr<ServingConfig> again = ParseServingConfig(ServingConfigToJson(*c), "l.json");
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->prompt_template, c->prompt_template);
  // A window length of a one-window adapter survives the round trip (it was dropped before).
  absl::StatusOr<ServingConfig> windowed =
      ParseServingConfig(R"({"labels": ["a", "b"], "window_length": 12})", "l.json");
  ASSERT_TRUE(windowed.ok()) << windowed.status();
  EXPECT_EQ(ParseServingConfig(ServingConfigToJson(*windowed), "l.json")->window_length, 12);
  for (const char* bad :
       {R"({"labels": ["a", "b"], "prompt_template": "no slot"})",
        R"({"labels": ["a", "b"], "prompt_template": "{text} and {text}"})",
        R"({"labels": ["a", "b"], "prompt_template": 3})",
        R"({"labels": ["a", "b"], "max_windows": 4, "prompt_template": "{text}"})"}) {
    absl::StatusOr<ServingConfig> r = ParseServingConfig(bad, "l.json");
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_NE(r.status().message().find("prompt_template"), std::string::npos) << r.status();
  }
}

TEST(AdapterConfigTest, AdapterNamesAreSafePathComponents) {
  EXPECT_TRUE(ValidateAdapterName("spam-filter_v2.1").ok());
  EXPECT_FALSE(ValidateAdapterName("").ok());
  EXPECT_FALSE(ValidateAdapterName("../etc").ok());
  EXPECT_FALSE(ValidateAdapterName("a/b").ok());
  EXPECT_FALSE(ValidateAdapterName(".hidden").ok());
  EXPECT_FALSE(ValidateAdapterName(std::string(65, 'a')).ok());
}

}  // namespace
}  // namespace loracle::adapters
