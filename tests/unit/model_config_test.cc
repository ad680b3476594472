#include "server/model/model_config.h"

#include <gtest/gtest.h>

namespace loracle::model {
namespace {

// bert-base-uncased's config.json, as published.
constexpr char kBertBase[] = R"({
  "architectures": ["BertForMaskedLM"], "attention_probs_dropout_prob": 0.1,
  "gradient_checkpointing": false, "hidden_act": "gelu", "hidden_dropout_prob": 0.1,
  "hidden_size": 768, "initializer_range": 0.02, "intermediate_size": 3072,
  "layer_norm_eps": 1e-12, "max_position_embeddings": 512, "model_type": "bert",
  "num_attention_heads": 12, "num_hidden_layers": 12, "pad_token_id": 0,
  "position_embedding_type": "absolute", "transformers_version": "4.6.0.dev0",
  "type_vocab_size": 2, "use_cache": true, "vocab_size": 30522})";

TEST(ModelConfigTest, ParsesBertBase) {
  auto c = ParseModelConfig(kBertBase);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->hidden_size, 768);
  EXPECT_EQ(c->num_hidden_layers, 12);
  EXPECT_EQ(c->num_attention_heads, 12);
  EXPECT_EQ(c->intermediate_size, 3072);
  EXPECT_EQ(c->vocab_size, 30522);
  EXPECT_DOUBLE_EQ(c->layer_norm_eps, 1e-12);
  EXPECT_EQ(c->hidden_act, "gelu");
}

TEST(ModelConfigTest, RoundTripsThroughJson) {
  auto c = ParseModelConfig(kBertBase);
  ASSERT_TRUE(c.ok());
  auto again = ParseModelConfig(ModelConfigToJson(*c));
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->vocab_size, c->vocab_size);
  EXPECT_EQ(again->max_position_embeddings, c->max_position_embeddings);
}

TEST(ModelConfigTest, MissingFieldIsNamed) {
  auto c = ParseModelConfig(R"({"model_type": "bert", "vocab_size": 10, "hidden_size": 8,
      "num_hidden_layers": 1, "intermediate_size": 16, "max_position_embeddings": 8})",
                            "/models/x/config.json");
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(c.status().message().find("num_attention_heads"), std::string::npos) << c.status();
  EXPECT_NE(c.status().message().find("/models/x/config.json"), std::string::npos);
}

TEST(ModelConfigTest, BadValuesAreExplained) {
  const std::pair<const char*, const char*> cases[] = {
      {R"({"model_type":"gpt2"})", "not supported"},
      {R"({"vocab_size":"ten","hidden_size":8,"num_hidden_layers":1,"num_attention_heads":2,"intermediate_size":16,"max_position_embeddings":8})",
       "must be an integer"},
      {R"({"vocab_size":10,"hidden_size":9,"num_hidden_layers":1,"num_attention_heads":2,"intermediate_size":16,"max_position_embeddings":8})",
       "not a multiple"},
      {R"({"vocab_size":10,"hidden_size":8,"num_hidden_layers":0,"num_attention_heads":2,"intermediate_size":16,"max_position_embeddings":8})",
       "must be positive"},
      {R"({"vocab_size":10,"hidden_size":8,"num_hidden_layers":1,"num_attention_heads":2,"intermediate_size":16,"max_position_embeddings":8,"hidden_act":"swish"})",
       "hidden_act"},
      {"[1,2]", "JSON object"},
      {"{", "not valid JSON"},
  };
  for (const auto& [json, expect] : cases) {
    auto c = ParseModelConfig(json);
    ASSERT_FALSE(c.ok()) << json;
    EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(c.status().message().find(expect), std::string::npos) << json << " -> " << c.status();
  }
}

TEST(ModelConfigTest, MissingFileIsNotFound) {
  EXPECT_EQ(ReadModelConfig("/nonexistent/config.json").status().code(),
            absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace loracle::model

namespace loracle::model {
namespace {

// A Llama 3.2-1B config.json as transformers writes it (shortened vocabulary).
constexpr char kLlama32[] = R"({
  "architectures": ["LlamaForCausalLM"], "attention_bias": false, "attention_dropout": 0.0,
  "bos_token_id": 128000, "eos_token_id": 128001, "head_dim": 64, "hidden_act": "silu",
  "hidden_size": 2048, "initializer_range": 0.02, "intermediate_size": 8192,
  "max_position_embeddings": 131072, "mlp_bias": false, "model_type": "llama",
  "num_attention_heads": 32, "num_hidden_layers": 16, "num_key_value_heads": 8,
  "pretraining_tp": 1, "rms_norm_eps": 1e-05,
  "rope_scaling": {"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                   "original_max_position_embeddings": 8192, "rope_type": "llama3"},
  "rope_theta": 500000.0, "tie_word_embeddings": true, "torch_dtype": "bfloat16",
  "use_cache": true, "vocab_size": 128256})";

TEST(DecoderConfigTest, ParsesLlamaThreeWithItsRopeScaling) {
  auto c = ParseModelConfig(kLlama32);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_TRUE(c->is_decoder());
  EXPECT_EQ(c->architecture(), Architecture::kLlama);
  EXPECT_EQ(c->num_key_value_heads, 8);
  EXPECT_EQ(c->head_dim, 64);
  EXPECT_DOUBLE_EQ(c->rope_theta, 500000.0);
  EXPECT_EQ(c->rope_scaling.type, "llama3");
  EXPECT_DOUBLE_EQ(c->rope_scaling.factor, 32.0);
  EXPECT_EQ(c->rope_scaling.original_max_position_embeddings, 8192);
  EXPECT_TRUE(c->tie_word_embeddings);
  EXPECT_FALSE(c->qkv_bias());
  EXPECT_EQ(c->type_vocab_size, 0);
  auto again = ParseModelConfig(ModelConfigToJson(*c));
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->rope_scaling.type, "llama3");
  EXPECT_EQ(again->num_key_value_heads, 8);
}

TEST(DecoderConfigTest, QwenBiasesAndMistralWindow) {
  auto qwen2 = ParseModelConfig(R"({"model_type": "qwen2", "vocab_size": 100, "hidden_size": 16,
      "num_hidden_layers": 1, "num_attention_heads": 4, "num_key_value_heads": 2,
      "intermediate_size": 32, "use_sliding_window": false, "sliding_window": 32768})");
  ASSERT_TRUE(qwen2.ok()) << qwen2.status();
  EXPECT_TRUE(qwen2->qkv_bias());
  EXPECT_FALSE(qwen2->o_bias());
  EXPECT_EQ(qwen2->sliding_window, 0) << "Qwen2's window is off unless use_sliding_window";
  auto mistral = ParseModelConfig(R"({"model_type": "mistral", "vocab_size": 100,
      "hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 4,
      "intermediate_size": 32, "sliding_window": 4096})");
  ASSERT_TRUE(mistral.ok()) << mistral.status();
  EXPECT_EQ(mistral->sliding_window, 4096);
  EXPECT_EQ(mistral->num_key_value_heads, 4);
}

// Every field that would change the math and is not implemented is refused by name.
TEST(DecoderConfigTest, UnimplementedFieldsAreRefusedByName) {
  const std::string base = R"("vocab_size": 100, "hidden_size": 16, "num_hidden_layers": 1,
      "num_attention_heads": 4, "intermediate_size": 32)";
  const std::vector<std::pair<std::string, std::string>> cases = {
      {R"("model_type": "llama", "rope_scaling": {"rope_type": "yarn", "factor": 4})",
       "rope_scaling.rope_type \"yarn\""},
      {R"("model_type": "llama", "rope_scaling": {"type": "dynamic", "factor": 2})",
       "rope_scaling.rope_type \"dynamic\""},
      {R"("model_type": "llama", "rope_scaling": {"rope_type": "llama3", "factor": 8})",
       "rope_scaling.low_freq_factor"},
      {R"("model_type": "llama", "num_key_value_heads": 3)", "num_key_value_heads"},
      {R"("model_type": "llama", "head_dim": 5)", "head_dim"},
      {R"("model_type": "llama", "hidden_act": "gelu")", "hidden_act"},
      {R"("model_type": "llama", "partial_rotary_factor": 0.5)", "partial_rotary_factor"},
      {R"("model_type": "qwen2", "use_sliding_window": true)", "use_sliding_window"},
      {R"("model_type": "qwen3", "layer_types": ["full_attention", "sliding_attention"])",
       "layer_types"},
      {R"("model_type": "llama", "pad_token_id": 100)", "pad_token_id"},
      {R"("model_type": "gemma")", "model_type \"gemma\" is not supported"},
  };
  for (const auto& [fields, named] : cases) {
    auto c = ParseModelConfig("{" + fields + ", " + base + "}", "m/config.json");
    ASSERT_FALSE(c.ok()) << fields;
    EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(c.status().message().find(named), std::string::npos)
        << fields << " -> " << c.status().message();
  }
  // head_dim that hidden_size / heads cannot supply.
  auto c = ParseModelConfig(R"({"model_type": "llama", "vocab_size": 100, "hidden_size": 18,
      "num_hidden_layers": 1, "num_attention_heads": 4, "intermediate_size": 32})");
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.status().message().find("head_dim"), std::string::npos) << c.status().message();
}

}  // namespace
}  // namespace loracle::model
