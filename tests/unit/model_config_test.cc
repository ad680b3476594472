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
