// The base fingerprint (model/fingerprint.h) and its place in loracle.json.

#include "server/model/fingerprint.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "server/adapters/adapter_config.h"

namespace loracle::model {
namespace {

// Owns the bytes of a few tensors and lends views of them.
struct Tensors {
  std::vector<std::pair<std::string, std::vector<uint8_t>>> bytes;
  std::vector<std::pair<std::string, std::vector<int64_t>>> shapes;
  void Add(const std::string& name, std::vector<int64_t> shape, uint32_t seed) {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    std::vector<uint8_t> b(static_cast<size_t>(n) * 4);
    uint32_t x = seed * 2654435761u + 1;
    for (uint8_t& v : b) {
      x = x * 1664525u + 1013904223u;
      v = static_cast<uint8_t>(x >> 24);
    }
    bytes.emplace_back(name, std::move(b));
    shapes.emplace_back(name, std::move(shape));
  }
  std::vector<std::pair<std::string, TensorView>> Views() const {
    std::vector<std::pair<std::string, TensorView>> out;
    for (size_t i = 0; i < bytes.size(); ++i) {
      TensorView v;
      v.dtype = DType::kF32;
      v.shape = shapes[i].second;
      v.data = bytes[i].second.data();
      v.nbytes = bytes[i].second.size();
      out.emplace_back(bytes[i].first, v);
    }
    return out;
  }
};

ModelConfig Config() {
  ModelConfig c;
  c.vocab_size = 100;
  c.hidden_size = 16;
  c.num_hidden_layers = 1;
  c.num_attention_heads = 2;
  c.intermediate_size = 32;
  c.max_position_embeddings = 64;
  return c;
}

Tensors Base() {
  Tensors t;
  t.Add("embeddings.word_embeddings.weight", {100, 16}, 1);
  t.Add("encoder.layer.0.attention.self.query.weight", {16, 16}, 2);
  t.Add("encoder.layer.0.output.dense.weight", {16, 32}, 3);
  return t;
}

TEST(FingerprintTest, StableAndIndependentOfTensorOrder) {
  const Tensors t = Base();
  BaseFingerprint a = FingerprintBase(Config(), t.Views());
  std::vector<std::pair<std::string, TensorView>> reversed = t.Views();
  std::reverse(reversed.begin(), reversed.end());
  BaseFingerprint b = FingerprintBase(Config(), reversed);
  EXPECT_EQ(a.id, b.id);
  EXPECT_EQ(a.id.rfind("lfp1-", 0), 0u) << a.id;
  EXPECT_EQ(a.id.size(), 5u + 16u);
  EXPECT_EQ(a.tensors, 3);
  EXPECT_EQ(a.bytes, (100 * 16 + 16 * 16 + 16 * 32) * 4);
  EXPECT_EQ(a.hashed_bytes, a.bytes);
  EXPECT_FALSE(a.sampled);
}

TEST(FingerprintTest, EveryPartOfTheBaseChangesIt) {
  const Tensors t = Base();
  const std::string id = FingerprintBase(Config(), t.Views()).id;

  Tensors one_byte = Base();  // one weight's lowest byte: a further-trained base
  one_byte.bytes[1].second[123] ^= 1;
  EXPECT_NE(FingerprintBase(Config(), one_byte.Views()).id, id);

  Tensors renamed = Base();
  renamed.bytes[2].first = "encoder.layer.0.output.dense.bias";
  EXPECT_NE(FingerprintBase(Config(), renamed.Views()).id, id);

  std::vector<std::pair<std::string, TensorView>> reshaped = t.Views();
  reshaped[2].second.shape = {32, 16};
  EXPECT_NE(FingerprintBase(Config(), reshaped).id, id);

  std::vector<std::pair<std::string, TensorView>> retyped = t.Views();
  retyped[2].second.dtype = DType::kI32;
  EXPECT_NE(FingerprintBase(Config(), retyped).id, id);

  ModelConfig eps = Config();
  eps.layer_norm_eps = 1e-5;
  EXPECT_NE(FingerprintBase(eps, t.Views()).id, id);
  ModelConfig act = Config();
  act.hidden_act = "relu";
  EXPECT_NE(FingerprintBase(act, t.Views()).id, id);

  std::vector<std::pair<std::string, TensorView>> fewer = t.Views();
  fewer.pop_back();
  EXPECT_NE(FingerprintBase(Config(), fewer).id, id);

  // Labels are the head's business, not the base's.
  ModelConfig labels = Config();
  labels.id2label = {"a", "b"};
  EXPECT_EQ(FingerprintBase(labels, t.Views()).id, id);
}

TEST(FingerprintTest, LargeBasesHashAFixedStridedSample) {
  Tensors t;
  t.Add("big.weight", {1024, 1024}, 7);  // 4 MiB: sampled in 256 blocks of 4 KiB
  t.Add("small.bias", {1024}, 8);        // 4 KiB: whole
  const int64_t limit = 1 << 20;
  const BaseFingerprint fp = FingerprintBase(Config(), t.Views(), limit);
  EXPECT_TRUE(fp.sampled);
  EXPECT_EQ(fp.hashed_bytes, 256 * 4096 + 4096);
  EXPECT_EQ(FingerprintBase(Config(), t.Views(), limit).id, fp.id);

  Tensors last = t;  // the last block is always sampled
  last.bytes[0].second.back() ^= 0x80;
  EXPECT_NE(FingerprintBase(Config(), last.Views(), limit).id, fp.id);
  Tensors first = t;
  first.bytes[0].second[0] ^= 0x80;
  EXPECT_NE(FingerprintBase(Config(), first.Views(), limit).id, fp.id);
  // Bytes between the blocks are not read: the documented blind spot.
  Tensors between = t;
  between.bytes[0].second[4096 + 100] ^= 0x80;
  EXPECT_EQ(FingerprintBase(Config(), between.Views(), limit).id, fp.id);
  // Unsampled, the same edit shows.
  EXPECT_NE(FingerprintBase(Config(), between.Views()).id, FingerprintBase(Config(), t.Views()).id);
}

TEST(FingerprintTest, StableHashIsFixedAcrossBuilds) {
  // Pinned values: a change here orphans every adapter already written (they would no longer
  // match their base). Bump the "lfp" version instead.
  EXPECT_NE(StableHash64("", 0, 0), StableHash64("", 0, 1));
  const std::string text = "loracle";
  EXPECT_EQ(StableHash64(text.data(), text.size(), 0), 0x5045a1ec97c93ff2ull)
      << std::hex << StableHash64(text.data(), text.size(), 0);
  const Tensors t = Base();
  EXPECT_EQ(FingerprintBase(Config(), t.Views()).id, "lfp1-624286ae9bd47f7d")
      << FingerprintBase(Config(), t.Views()).id;
}

TEST(FingerprintTest, LoracleJsonKeepsTheBase) {
  adapters::ServingConfig c;
  c.labels = {"a", "b"};
  c.base = {"lfp1-0123456789abcdef", "bert", "/models/bert"};
  auto again = adapters::ParseServingConfig(adapters::ServingConfigToJson(c), "loracle.json");
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->base.fingerprint, "lfp1-0123456789abcdef");
  EXPECT_EQ(again->base.model_type, "bert");
  EXPECT_EQ(again->base.path, "/models/bert");

  auto none = adapters::ParseServingConfig(R"({"labels": ["a", "b"]})", "loracle.json");
  ASSERT_TRUE(none.ok());
  EXPECT_TRUE(none->base.fingerprint.empty());
  EXPECT_EQ(adapters::ServingConfigToJson(*none).find("\"base\""), std::string::npos);

  for (const char* bad : {R"({"labels": ["a", "b"], "base": "lfp1-00"})",
                          R"({"labels": ["a", "b"], "base": {"fingerprint": 7}})",
                          R"({"labels": ["a", "b"], "base": {"fingerprint": ""}})"}) {
    auto parsed = adapters::ParseServingConfig(bad, "x/loracle.json");
    ASSERT_FALSE(parsed.ok()) << bad;
    EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(parsed.status().message().find("\"base\""), std::string::npos)
        << parsed.status().message();
  }
}

}  // namespace
}  // namespace loracle::model
