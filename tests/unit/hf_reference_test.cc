// loracle against Hugging Face's own code: checkpoints, tokenizers and PEFT adapters written by
// transformers and peft (tests/gpu/make_hf_reference.py, run on the GPU machine by
// tests/gpu/run_part_b.sh), with the token ids and float32 logits they computed. Token ids must
// be equal; logits within 1e-4. Skipped while tests/data/hf_reference has not been generated.
//
// With LORACLE_HF_EXPORT_DIR set, TrainedAdapterExport also trains an adapter on the BERT
// reference model and writes it with its logits there, for tests/gpu/check_peft_loads_loracle.py
// to load with PEFT (the other direction).

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

#include "nlohmann/json.hpp"
#include "server/adapters/adapter_config.h"
#include "server/adapters/adapter_weights.h"
#include "server/model/checkpoint.h"
#include "server/model/cpu_runtime.h"
#include "server/training/trainer.h"
#include "server/util/file_util.h"
#include "tests/support/test_util.h"

namespace loracle {
namespace {

const std::string kDir = std::string(LORACLE_SOURCE_DIR) + "/tests/data/hf_reference";

nlohmann::json Reference() {
  return nlohmann::json::parse(testing::ReadFile(kDir + "/reference.json"));
}

// The float32 logits of `member` for one encoded input (a batch of one, no padding).
std::vector<float> Logits(const model::BaseModel& base, const model::LoraMember& member,
                          const text::Encoding& e) {
  c10::InferenceMode guard;
  const int64_t n = static_cast<int64_t>(e.input_ids.size());
  const torch::Tensor ids = torch::tensor(e.input_ids, torch::kInt64).view({1, n});
  const torch::Tensor types = torch::tensor(e.token_type_ids, torch::kInt64).view({1, n});
  const torch::Tensor mask = torch::ones({1, n}, torch::kInt64);
  model::LoraRouting routing(1);
  routing[0].begin = 0;
  routing[0].end = 1;
  routing[0].member = &member;
  model::Backbone encoder = base.backbone;
  const torch::Tensor features = encoder->forward(ids, mask, types, &routing);
  const torch::Tensor l =
      model::BackboneImpl::Classify(features, routing)[0][0].to(torch::kFloat32).contiguous();
  return std::vector<float>(l.data_ptr<float>(), l.data_ptr<float>() + l.numel());
}

std::optional<std::string> PairOf(const nlohmann::json& m, size_t i) {
  if (!m.contains("pairs") || m["pairs"].is_null()) return std::nullopt;
  return m["pairs"][i].get<std::string>();
}

class HfReferenceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!util::FileExists(kDir + "/reference.json")) {
      GTEST_SKIP() << kDir << " is not generated yet: run tests/gpu/run_part_b.sh on a machine "
                   << "with transformers and peft (README \"GPU\")";
    }
    model::SetComputeThreads({2, 1});
  }
};

TEST_F(HfReferenceTest, TokenIdsAndLogitsEqualTransformersAndPeft) {
  const nlohmann::json ref = Reference();
  const int max_length = ref["max_length"].get<int>();
  for (const nlohmann::json& m : ref["models"]) {
    SCOPED_TRACE(m["name"].get<std::string>());
    auto base = model::LoadBaseModel(kDir + "/" + m["model"].get<std::string>());
    ASSERT_TRUE(base.ok()) << base.status();
    ASSERT_NE((*base)->head, nullptr);
    std::vector<text::Encoding> encoded;
    for (size_t i = 0; i < m["texts"].size(); ++i) {
      const std::optional<std::string> pair = PairOf(m, i);
      auto e = (*base)->tokenizer->Encode(
          m["texts"][i].get<std::string>(),
          pair ? std::optional<absl::string_view>(*pair) : std::nullopt, max_length);
      ASSERT_TRUE(e.ok()) << e.status();
      EXPECT_EQ(e->input_ids, m["input_ids"][i].get<std::vector<int64_t>>()) << i;
      EXPECT_EQ(e->token_type_ids, m["token_type_ids"][i].get<std::vector<int64_t>>()) << i;
      encoded.push_back(*e);
    }
    auto expect_logits = [&](const model::LoraMember& member, const nlohmann::json& want) {
      for (size_t i = 0; i < encoded.size(); ++i) {
        const std::vector<float> got = Logits(**base, member, encoded[i]);
        const std::vector<float> w = want[i].get<std::vector<float>>();
        ASSERT_EQ(got.size(), w.size());
        for (size_t c = 0; c < w.size(); ++c) EXPECT_NEAR(got[c], w[c], 1e-4) << i;
      }
    };
    expect_logits(*(*base)->head, m["logits"]);
    for (const nlohmann::json& a : m["adapters"]) {
      SCOPED_TRACE(a["name"].get<std::string>());
      // PEFT's directory as saved, plus the loracle.json that names the labels.
      testing::TempDir dir;
      for (const char* f : {adapters::kPeftConfigFile, adapters::kPeftWeightsFile}) {
        testing::WriteFile(dir / f,
                           testing::ReadFile(kDir + "/" + a["dir"].get<std::string>() + "/" + f));
      }
      adapters::ServingConfig serving;
      serving.labels = m["labels"].get<std::vector<std::string>>();
      testing::WriteFile(dir / adapters::kServingConfigFile,
                         adapters::ServingConfigToJson(serving));
      auto adapter = adapters::LoadAdapter(dir.path(), "a", 1, **base);
      ASSERT_TRUE(adapter.ok()) << adapter.status();
      expect_logits(adapters::MembersOf(**adapter)[0], a["logits"]);
    }
  }
}

TEST_F(HfReferenceTest, TrainedAdapterExport) {
  const char* out = std::getenv("LORACLE_HF_EXPORT_DIR");
  if (out == nullptr || *out == '\0') GTEST_SKIP() << "LORACLE_HF_EXPORT_DIR is not set";
  const nlohmann::json ref = Reference();
  const nlohmann::json& m = ref["models"][0];  // BERT
  const std::string model_dir = kDir + "/" + m["model"].get<std::string>();
  auto base = model::LoadBaseModel(model_dir);
  ASSERT_TRUE(base.ok()) << base.status();
  training::EncodedData data;
  for (size_t i = 0; i < m["texts"].size(); ++i) {
    const std::optional<std::string> pair = PairOf(m, i);
    data.inputs.push_back(*(*base)->tokenizer->Encode(
        m["texts"][i].get<std::string>(),
        pair ? std::optional<absl::string_view>(*pair) : std::nullopt, 64));
    data.labels.push_back(static_cast<int>(i % 3));
  }
  training::TrainerOptions o;
  o.lora.rank = 4;
  o.lora.lora_alpha = 8;
  o.lora.use_rslora = true;
  o.lora.target_modules = {"query", "value", "dense"};
  o.epochs = 3;
  o.batch_size = 4;
  o.learning_rate = 2e-2;  // large enough for B to move visibly off zero
  auto trained = training::Trainer::Train(**base, m["labels"].get<std::vector<std::string>>(), data,
                                          data, o, nullptr, nullptr);
  ASSERT_TRUE(trained.ok()) << trained.status();
  adapters::Adapter identity;
  identity.name = "trained";
  identity.version = 1;
  identity.serving.labels = m["labels"].get<std::vector<std::string>>();
  identity.lora = o.lora;
  const auto adapter = adapters::MakeAdapter(identity, trained->members);
  const std::string adapter_dir = std::string(out) + "/adapter";
  ASSERT_TRUE(adapters::SaveAdapter(adapter_dir, *adapter, **base).ok());
  nlohmann::json logits = nlohmann::json::array();
  for (const text::Encoding& e : data.inputs) {
    logits.push_back(Logits(**base, adapters::MembersOf(*adapter)[0], e));
  }
  std::ofstream(std::string(out) + "/loracle_logits.json") << nlohmann::json{
      {"model", model_dir},
      {"adapter", adapter_dir},
      {"texts", m["texts"]},
      {"pairs", m["pairs"]},
      {"logits", logits}}.dump(1);
}

}  // namespace
}  // namespace loracle
