// Adapters in PEFT's format for each architecture: the key names and adapter_config.json fields
// PEFT writes for a LoRA *ForSequenceClassification model, PEFT's scaling (alpha / r, rsLoRA
// alpha / sqrt(r), per-module rank_pattern / alpha_pattern), and a write -> read -> write round
// trip with identical tensors and identical outputs.

#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <ostream>
#include <set>

#include "nlohmann/json.hpp"
#include "server/adapters/adapter_files.h"
#include "server/adapters/adapter_weights.h"
#include "server/model/architecture.h"
#include "server/model/checkpoint.h"
#include "server/model/default_model.h"
#include "server/model/safetensors.h"
#include "tests/support/test_util.h"

namespace loracle::adapters {
namespace {

struct Arch {
  std::string model_type, tokenizer;
  std::vector<std::string> targets;
  std::vector<std::string> expected_keys;  // for layer 0 and the head
};
void PrintTo(const Arch& a, std::ostream* os) { *os << a.model_type; }

std::unique_ptr<model::BaseModel> TinyBase(const Arch& a, const std::string& dir) {
  const model::ModelConfig c = testing::ConfigOfShape(a.model_type, 16, 2, 2, 24);
  testing::CheckpointLayout layout;
  layout.weight_std = 0.2f;
  testing::WriteFixtureModel(dir, c, a.tokenizer, 40, layout, 5);
  auto base = model::LoadBaseModel(dir);
  EXPECT_TRUE(base.ok()) << base.status();
  return *std::move(base);
}

torch::Tensor Logits(model::BaseModel& base, const Adapter& adapter, int member) {
  auto e = base.tokenizer->Encode("Hello, World! This is a test.", std::nullopt, 40);
  const int64_t n = static_cast<int64_t>(e->input_ids.size());
  c10::InferenceMode guard;
  torch::Tensor ids = torch::tensor(e->input_ids).view({1, n});
  model::LoraRouting routing = {{0, 1, &MembersOf(adapter)[static_cast<size_t>(member)]}};
  torch::Tensor f = base.backbone->forward(ids, torch::ones({1, n}, torch::kInt64),
                                           torch::zeros({1, n}, torch::kInt64), &routing);
  return model::BackboneImpl::Classify(f, routing)[0];
}

class PeftFormatTest : public ::testing::TestWithParam<Arch> {};

TEST_P(PeftFormatTest, KeyNamesAndConfigAreThoseOfPeft) {
  const Arch& a = GetParam();
  testing::TempDir tmp;
  auto base = TinyBase(a, tmp / "base");
  RandomAdapterSpec spec;
  spec.serving.labels = {"ham", "spam", "eggs"};
  spec.lora.rank = 4;
  spec.lora.lora_alpha = 8;
  spec.lora.target_modules = a.targets;
  WriteRandomAdapter(tmp / "adapter", base->config, spec).IgnoreError();
  auto file = model::SafetensorsFile::Open(tmp / "adapter/adapter_model.safetensors");
  ASSERT_TRUE(file.ok()) << file.status();
  const std::set<std::string> keys((*file)->names().begin(), (*file)->names().end());
  for (const std::string& k : a.expected_keys) EXPECT_TRUE(keys.count(k)) << k;
  // 2 layers x 2 targets x (A, B) + head
  EXPECT_EQ(keys.size(), 8u + model::HeadTensorShapes(base->config, 3).size());
  const auto cfg = nlohmann::json::parse(testing::ReadFile(tmp / "adapter/adapter_config.json"));
  EXPECT_EQ(cfg["peft_type"], "LORA");
  EXPECT_EQ(cfg["task_type"], "SEQ_CLS");
  EXPECT_EQ(cfg["r"], 4);
  EXPECT_EQ(cfg["lora_alpha"], 8.0);
  EXPECT_EQ(cfg["target_modules"], a.targets);
  EXPECT_EQ(cfg["modules_to_save"], model::HeadModules(base->config.architecture()));
  EXPECT_EQ(cfg["bias"], "none");
  EXPECT_EQ(cfg["use_rslora"], false);
}

TEST_P(PeftFormatTest, ScalingFollowsPeftIncludingRsLoraAndPatterns) {
  const Arch& a = GetParam();
  testing::TempDir tmp;
  auto base = TinyBase(a, tmp / "base");
  RandomAdapterSpec spec;
  spec.serving.labels = {"no", "yes"};
  spec.lora.rank = 4;
  spec.lora.lora_alpha = 8;
  spec.lora.use_rslora = true;
  spec.lora.target_modules = a.targets;
  // PEFT patterns: regex fragments matched as ".*\.<pattern>$" against the module path.
  spec.lora.rank_pattern = {{"1\\..*" + a.targets[0], 2}};  // ranks differ across layers
  spec.lora.alpha_pattern = {{"1\\..*" + a.targets[1], 3.0}};
  ASSERT_TRUE(WriteRandomAdapter(tmp / "adapter", base->config, spec).ok());
  auto adapter = LoadAdapter(tmp / "adapter", "x", 1, *base);
  ASSERT_TRUE(adapter.ok()) << adapter.status();
  const model::LoraMember& m = MembersOf(**adapter)[0];
  const auto& names = base->backbone->linear_names();
  int checked = 0;
  for (size_t i = 0; i < names.size(); ++i) {
    if (!m.layers[i].a.defined()) continue;
    const bool layer1 = names[i].find("layer.1.") != std::string::npos;
    const bool first = names[i].size() >= a.targets[0].size() &&
                       names[i].compare(names[i].size() - a.targets[0].size(), a.targets[0].size(),
                                        a.targets[0]) == 0;
    const int r = layer1 && first ? 2 : 4;
    const double alpha = layer1 && !first ? 3.0 : 8.0;
    EXPECT_EQ(m.layers[i].a.size(0), r) << names[i];
    EXPECT_NEAR(m.layers[i].scaling, alpha / std::sqrt(r), 1e-12) << names[i];
    ++checked;
  }
  EXPECT_EQ(checked, 4);
}

TEST_P(PeftFormatTest, WriteReadWriteRoundTripIsExact) {
  const Arch& a = GetParam();
  testing::TempDir tmp;
  auto base = TinyBase(a, tmp / "base");
  RandomAdapterSpec spec;
  spec.serving.labels = {"ham", "spam"};
  spec.serving.members = 2;
  spec.lora.rank = 3;
  spec.lora.target_modules = a.targets;
  spec.lora_std = 0.3f;
  ASSERT_TRUE(WriteRandomAdapter(tmp / "one", base->config, spec).ok());
  auto first = LoadAdapter(tmp / "one", "x", 1, *base);
  ASSERT_TRUE(first.ok()) << first.status();
  ASSERT_TRUE(SaveAdapter(tmp / "two", **first, *base).ok());
  auto second = LoadAdapter(tmp / "two", "x", 2, *base);
  ASSERT_TRUE(second.ok()) << second.status();
  for (int m = 0; m < 2; ++m) {
    const std::string sub = "/member-" + std::to_string(m) + "/adapter_model.safetensors";
    auto f1 = model::SafetensorsFile::Open(tmp / ("one" + sub));
    auto f2 = model::SafetensorsFile::Open(tmp / ("two" + sub));
    ASSERT_TRUE(f1.ok() && f2.ok());
    std::set<std::string> k1((*f1)->names().begin(), (*f1)->names().end());
    std::set<std::string> k2((*f2)->names().begin(), (*f2)->names().end());
    EXPECT_EQ(k1, k2);
    for (const std::string& k : k1) {
      auto v1 = (*f1)->Get(k);
      auto v2 = (*f2)->Get(k);
      ASSERT_EQ(v1->nbytes, v2->nbytes) << k;
      EXPECT_EQ(std::memcmp(v1->data, v2->data, v1->nbytes), 0) << k;
    }
    torch::Tensor l1 = Logits(*base, **first, m), l2 = Logits(*base, **second, m);
    EXPECT_TRUE(torch::equal(l1, l2)) << "member " << m;
  }
  EXPECT_FALSE(torch::equal(Logits(*base, **first, 0), Logits(*base, **first, 1)));
  EXPECT_EQ(testing::ReadFile(tmp / "one/member-0/adapter_config.json"),
            testing::ReadFile(tmp / "two/member-0/adapter_config.json"));
}

// The base's fingerprint is the same whichever layout holds the same weights (bare, *For* with a
// head, sharded), differs for other weights or another dtype, is stamped into every adapter saved
// on it, and refuses that adapter on another base of the same shapes.
TEST_P(PeftFormatTest, AdaptersKnowTheirBase) {
  const Arch& a = GetParam();
  testing::TempDir tmp;
  const model::ModelConfig c = testing::ConfigOfShape(a.model_type, 16, 2, 2, 24);
  auto load = [&](const std::string& name, const testing::CheckpointLayout& layout, uint64_t seed) {
    testing::WriteFixtureModel(tmp / name, c, a.tokenizer, 40, layout, seed);
    auto base = model::LoadBaseModel(tmp / name);
    EXPECT_TRUE(base.ok()) << base.status();
    return *std::move(base);
  };
  testing::CheckpointLayout bare, sharded, half;
  sharded.shards = 3;
  half.dtype = model::DType::kBF16;
  auto base = load("bare", bare, 5);
  EXPECT_EQ(base->fingerprint.tensors,
            static_cast<int64_t>(base->backbone->named_parameters().size()));
  {  // The same tensors as a *ForSequenceClassification save: "<prefix>." names and a head.
    std::filesystem::copy(tmp / "bare", tmp / "headed", std::filesystem::copy_options::recursive);
    auto file = model::SafetensorsFile::Open(tmp / "bare/model.safetensors");
    ASSERT_TRUE(file.ok());
    std::vector<model::TensorToWrite> tensors;
    for (const std::string& name : (*file)->names()) {
      const model::TensorView v = *(*file)->Get(name);
      tensors.push_back({model::LayoutFor(c.architecture()).base_prefix + "." + name, v.dtype,
                         v.shape, absl::Span<const uint8_t>(v.data, v.nbytes)});
    }
    const std::vector<float> head(3 * 16, 0.5f);
    const std::vector<uint8_t> head_bytes = model::EncodeFloats(head, model::DType::kF32);
    tensors.push_back({"extra_head.weight", model::DType::kF32, {3, 16}, head_bytes});
    ASSERT_TRUE(model::WriteSafetensors(tmp / "headed/model.safetensors", tensors).ok());
    auto headed = model::LoadBaseModel(tmp / "headed");
    ASSERT_TRUE(headed.ok()) << headed.status();
    EXPECT_EQ((*headed)->fingerprint.id, base->fingerprint.id);
  }
  EXPECT_EQ(load("sharded", sharded, 5)->fingerprint.id, base->fingerprint.id);
  EXPECT_NE(load("bf16", half, 5)->fingerprint.id, base->fingerprint.id);
  auto other = load("other", bare, 6);
  ASSERT_NE(other->fingerprint.id, base->fingerprint.id);

  RandomAdapterSpec spec;
  spec.serving.labels = {"ham", "spam"};
  spec.lora.target_modules = a.targets;
  ASSERT_TRUE(WriteRandomAdapter(tmp / "external", base->config, spec).ok());
  auto external = LoadAdapter(tmp / "external", "x", 1, *other);  // no fingerprint: unchecked
  ASSERT_TRUE(external.ok()) << external.status();
  ASSERT_TRUE(SaveAdapter(tmp / "saved", **external, *base).ok());
  auto saved = ParseServingConfig(testing::ReadFile(tmp / "saved/loracle.json"), "loracle.json");
  ASSERT_TRUE(saved.ok());
  EXPECT_EQ(saved->base.fingerprint, base->fingerprint.id);
  EXPECT_EQ(saved->base.model_type, a.model_type);
  EXPECT_TRUE(LoadAdapter(tmp / "saved", "x", 2, *base).ok());
  auto moved = LoadAdapter(tmp / "saved", "x", 2, *other);
  ASSERT_FALSE(moved.ok());
  EXPECT_EQ(moved.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(moved.status().message().find(base->fingerprint.id), std::string::npos);
  EXPECT_NE(moved.status().message().find(other->fingerprint.id), std::string::npos);
}

INSTANTIATE_TEST_SUITE_P(
    Architectures, PeftFormatTest,
    ::testing::Values(
        Arch{"bert",
             "bert-uncased",
             {"query", "value"},
             {"base_model.model.bert.encoder.layer.0.attention.self.query.lora_A.weight",
              "base_model.model.bert.encoder.layer.0.attention.self.value.lora_B.weight",
              "base_model.model.classifier.weight", "base_model.model.classifier.bias"}},
        Arch{"roberta",
             "roberta",
             {"query", "value"},
             {"base_model.model.roberta.encoder.layer.1.attention.self.query.lora_A.weight",
              "base_model.model.classifier.dense.weight",
              "base_model.model.classifier.out_proj.weight",
              "base_model.model.classifier.out_proj.bias"}},
        Arch{"distilbert",
             "bert-uncased",
             {"q_lin", "v_lin"},
             {"base_model.model.distilbert.transformer.layer.0.attention.q_lin.lora_A.weight",
              "base_model.model.distilbert.transformer.layer.1.attention.v_lin.lora_B.weight",
              "base_model.model.pre_classifier.weight", "base_model.model.classifier.bias"}}),
    [](const auto& info) { return info.param.model_type; });

}  // namespace
}  // namespace loracle::adapters
