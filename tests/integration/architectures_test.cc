// The real server over RoBERTa and DistilBERT checkpoints (Hugging Face layout, sharded F16 /
// BF16 weights, the checkpoint's own tokenizer files) with PEFT adapters: Predict over loopback
// gRPC answers exactly what the model computes in process for the same text pairs.

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <ostream>

#include "loracle/v1/inference.grpc.pb.h"
#include "server/adapters/adapter_files.h"
#include "server/adapters/adapter_weights.h"
#include "server/adapters/store.h"
#include "server/app/loracle_server.h"
#include "server/model/checkpoint.h"
#include "server/model/default_model.h"
#include "tests/support/test_util.h"

namespace loracle {
namespace {

struct Arch {
  std::string model_type, tokenizer;
  std::vector<std::string> targets;
  model::DType dtype;
};
void PrintTo(const Arch& a, std::ostream* os) { *os << a.model_type; }

class ArchitecturesServeTest : public ::testing::TestWithParam<Arch> {};

TEST_P(ArchitecturesServeTest, PredictEqualsTheInProcessModel) {
  const Arch& a = GetParam();
  testing::TempDir model_dir, store_dir;
  model::ModelConfig config = testing::ConfigOfShape(a.model_type, 32, 2, 4, 64);
  config.id2label = {"negative", "positive"};
  testing::CheckpointLayout layout;
  layout.dtype = a.dtype;
  layout.shards = 2;
  layout.weight_std = 0.2f;
  layout.num_labels = 2;  // a *ForSequenceClassification checkpoint: its head is served as "base"
  const model::ModelConfig c =
      testing::WriteFixtureModel(model_dir.path(), config, a.tokenizer, 128, layout, 9);

  auto store = adapters::Store::Create({store_dir.path()});
  ASSERT_TRUE(store.ok());
  adapters::RandomAdapterSpec spec;
  spec.serving.labels = {"ham", "spam", "eggs"};
  spec.serving.members = 2;
  spec.lora.rank = 4;
  spec.lora.target_modules = a.targets;
  spec.lora_std = 0.3f;
  ASSERT_TRUE((*store)
                  ->Publish("clf",
                            [&](const std::string& dir) {
                              return adapters::WriteRandomAdapter(dir, c, spec);
                            })
                  .ok());

  app::LoracleServer::Options o;
  o.grpc_address = "127.0.0.1:0";
  o.metrics_address = "";
  o.model_dir = model_dir.path();
  o.adapters_dir = store_dir.path();
  o.training_workers = 0;  // serving only
  o.threads = 2;
  o.batcher.max_queue_delay_us = 1000;
  auto server = app::LoracleServer::Create(o);
  ASSERT_TRUE(server.ok()) << server.status();
  ASSERT_TRUE((*server)->WaitUntilReady(absl::Seconds(60)).ok());

  const std::vector<std::pair<std::string, std::string>> inputs = {
      {"Hello, World! Café naïve", "is it spam?"},
      {"我爱北京 <mask> and emoji 😀", "a second, much longer segment of the pair"},
      {"short", "x"}};
  v1::PredictRequest req;
  req.set_adapter("clf");
  for (const auto& [x, y] : inputs) {
    req.add_inputs(x);
    req.add_text_pairs(y);
  }
  v1::PredictResponse resp;
  grpc::ClientContext ctx;
  auto stub = v1::Inference::NewStub(grpc::CreateChannel(
      absl::StrCat("127.0.0.1:", (*server)->grpc_port()), grpc::InsecureChannelCredentials()));
  grpc::Status st = stub->Predict(&ctx, req, &resp);
  ASSERT_TRUE(st.ok()) << st.error_message();
  ASSERT_EQ(resp.predictions_size(), 3);

  // The same model and adapter, in process, one row at a time.
  auto base = model::LoadBaseModel(model_dir.path());
  ASSERT_TRUE(base.ok()) << base.status();
  auto adapter = adapters::LoadAdapter(store_dir / "clf/1", "clf", 1, **base);
  ASSERT_TRUE(adapter.ok()) << adapter.status();
  c10::InferenceMode guard;
  for (size_t i = 0; i < inputs.size(); ++i) {
    auto e = (*base)->tokenizer->Encode(inputs[i].first, inputs[i].second, (*base)->max_length);
    ASSERT_TRUE(e.ok());
    EXPECT_EQ(resp.predictions(static_cast<int>(i)).num_tokens(), e->input_ids.size());
    const int64_t n = static_cast<int64_t>(e->input_ids.size());
    torch::Tensor probs = torch::zeros({3});
    for (const model::LoraMember& m : adapters::MembersOf(**adapter)) {
      model::LoraRouting routing = {{0, 1, &m}};
      torch::Tensor f = (*base)->backbone->forward(
          torch::tensor(e->input_ids).view({1, n}), torch::ones({1, n}, torch::kInt64),
          torch::tensor(e->token_type_ids).view({1, n}), &routing);
      probs += torch::softmax(model::BackboneImpl::Classify(f, routing)[0][0], -1) / 2.0;
    }
    for (int k = 0; k < 3; ++k) {
      EXPECT_NEAR(resp.predictions(static_cast<int>(i)).probs(k), probs[k].item<double>(), 1e-5)
          << a.model_type << " input " << i;
    }
  }

  // The checkpoint's own head, served as adapter "base".
  req.set_adapter("base");
  v1::PredictResponse base_resp;
  grpc::ClientContext base_ctx;
  st = stub->Predict(&base_ctx, req, &base_resp);
  ASSERT_TRUE(st.ok()) << st.error_message();
  EXPECT_EQ(std::vector<std::string>(base_resp.labels().begin(), base_resp.labels().end()),
            (std::vector<std::string>{"negative", "positive"}));
  for (size_t i = 0; i < inputs.size(); ++i) {
    auto e = (*base)->tokenizer->Encode(inputs[i].first, inputs[i].second, (*base)->max_length);
    const int64_t n = static_cast<int64_t>(e->input_ids.size());
    torch::Tensor f = (*base)->backbone->forward(
        torch::tensor(e->input_ids).view({1, n}), torch::ones({1, n}, torch::kInt64),
        torch::tensor(e->token_type_ids).view({1, n}), nullptr);
    torch::Tensor probs = torch::softmax((*base)->head->Head(f)[0], -1);
    for (int k = 0; k < 2; ++k) {
      EXPECT_NEAR(base_resp.predictions(static_cast<int>(i)).probs(k), probs[k].item<double>(),
                  1e-5);
    }
  }
  (*server)->Shutdown(absl::Seconds(5));
}

INSTANTIATE_TEST_SUITE_P(
    HuggingFaceModels, ArchitecturesServeTest,
    ::testing::Values(
        Arch{"roberta", "roberta", {"query", "value"}, model::DType::kF16},
        Arch{"distilbert", "bert-cased", {"q_lin", "v_lin", "lin1"}, model::DType::kBF16}),
    [](const auto& info) { return info.param.model_type; });

}  // namespace
}  // namespace loracle
