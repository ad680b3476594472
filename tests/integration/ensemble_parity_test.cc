// One ensemble engine: the trainer's validation report and Predict over real gRPC run the same
// layout, masks, forward, window averaging, temperature and summary, so the report's per-example
// ensemble probabilities are what Predict serves for those texts, bit for bit in float32; and the
// OOD detector the job fits, saved and loaded, scores them as the report did.

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <memory>
#include <string>
#include <vector>

#include "loracle/v1/inference.grpc.pb.h"
#include "server/adapters/adapter_weights.h"
#include "server/model/checkpoint.h"
#include "server/model/cpu_runtime.h"
#include "server/training/trainer.h"
#include "tests/support/test_server.h"
#include "tests/support/test_util.h"

namespace loracle {
namespace {

// `texts` as Predict reads them: token ids cut to one window of the model's max_length.
training::EncodedData Encode(const model::BaseModel& base,
                             const std::vector<std::pair<std::string, int>>& texts) {
  training::EncodedData d;
  for (const auto& [text, label] : texts) {
    absl::StatusOr<std::vector<int64_t>> ids = base.tokenizer->TokenizeToIds(text);
    EXPECT_TRUE(ids.ok()) << ids.status();
    absl::StatusOr<std::vector<text::Encoding>> w =
        base.tokenizer->Windows(*ids, base.max_length, 1);
    EXPECT_TRUE(w.ok()) << w.status();
    d.Add(*std::move(w), label);
  }
  return d;
}

void ExpectReportEqualsPredict(const model::DropoutSpec& dropout, int members, int mc_samples) {
  // The same tiny checkpoint the test server loads (WriteTinyModel's default seed).
  testing::TempDir model_dir, adapter_dir;
  testing::WriteTinyModel(model_dir.path());
  model::SetComputeThreads({2, 1});
  absl::StatusOr<std::unique_ptr<model::BaseModel>> base = model::LoadBaseModel(model_dir.path());
  ASSERT_TRUE(base.ok()) << base.status();

  const std::vector<std::pair<std::string, int>> validation = testing::SpamHamTexts(24, 2);
  training::TrainerOptions o;
  o.lora.rank = 4;
  o.lora.lora_alpha = 8;
  o.members = members;
  o.mc_samples = mc_samples;
  o.dropout = dropout;
  o.epochs = 2;
  o.batch_size = 8;
  o.learning_rate = 1e-2;
  o.seed = 11;
  const std::vector<std::string> labels = {"ham", "spam"};
  absl::StatusOr<training::TrainedMembers> trained =
      training::Trainer::Train(**base, labels, Encode(**base, testing::SpamHamTexts(48, 1)),
                               Encode(**base, validation), o, nullptr, nullptr);
  ASSERT_TRUE(trained.ok()) << trained.status();
  const training::TrainingReport report = trained->report;
  ASSERT_EQ(report.validation_probs.size(), validation.size());

  // Published as a fine-tune job publishes it, and served by a real server.
  adapters::Adapter identity;
  identity.name = "parity";
  identity.serving.labels = labels;
  identity.serving.members = members;
  identity.serving.mc_samples = mc_samples;
  identity.serving.temperature = report.temperature;
  identity.serving.dropout = o.dropout;
  identity.lora = o.lora;
  ASSERT_NE(trained->ood, nullptr);
  ASSERT_GT(report.ood_threshold, 0);
  identity.serving.ood = {"mahalanobis", model::kOodFile, training::kOodQuantile,
                          report.ood_threshold};
  const std::shared_ptr<const adapters::Adapter> adapter =
      adapters::MakeAdapter(std::move(identity), std::move(trained->members), trained->ood);
  std::unique_ptr<testing::TestServer> server =
      testing::TestServer::Start({}, [&](adapters::Store& store, app::LoracleServer::Options&) {
        ASSERT_TRUE(store
                        .Publish("parity",
                                 [&](const std::string& dir) {
                                   return adapters::SaveAdapter(dir, *adapter, **base);
                                 })
                        .ok());
      });
  ASSERT_NE(server, nullptr);

  // A Predict of the validation texts, without a seed (the report's masks are a seedless
  // Predict's).
  loracle::v1::PredictRequest request;
  request.set_adapter("parity");
  for (const auto& [text, label] : validation) request.add_inputs(text);
  loracle::v1::PredictResponse response;
  grpc::ClientContext ctx;
  const grpc::Status status =
      loracle::v1::Inference::NewStub(server->NewChannel())->Predict(&ctx, request, &response);
  ASSERT_TRUE(status.ok()) << status.error_message();
  ASSERT_EQ(response.predictions_size(), static_cast<int>(validation.size()));
  EXPECT_EQ(response.members(), static_cast<uint32_t>(members));
  EXPECT_EQ(response.mc_samples(), static_cast<uint32_t>(mc_samples));
  int differing = 0;
  for (size_t i = 0; i < validation.size(); ++i) {
    const loracle::v1::Prediction& p = response.predictions(static_cast<int>(i));
    ASSERT_EQ(p.probs_size(), 2);
    for (int c = 0; c < 2; ++c) {
      const float served = p.probs(c);
      const float reported = static_cast<float>(report.validation_probs[i][static_cast<size_t>(c)]);
      EXPECT_EQ(served, reported) << "example " << i << " class " << c;
      differing += served != reported;
    }
    EXPECT_EQ(p.uncertainty().confidence(), static_cast<float>(report.validation_confidence[i]));
    EXPECT_EQ(p.uncertainty().mutual_information(),
              static_cast<float>(report.validation_mutual_information[i]));
  }
  EXPECT_EQ(differing, 0);
  // OOD: the served scores are the report's validation scores (which it keeps sorted); the
  // detector went through its file. About 1 - kOodQuantile of them exceed 1.
  std::vector<double> served;
  for (const loracle::v1::Prediction& p : response.predictions()) {
    served.push_back(p.uncertainty().ood_score());
  }
  std::sort(served.begin(), served.end());
  ASSERT_EQ(served.size(), report.ood_validation_scores.size());
  for (size_t i = 0; i < served.size(); ++i) {
    EXPECT_NEAR(served[i], report.ood_validation_scores[i], 1e-5 * (1 + served[i])) << i;
  }
  EXPECT_GT(served.front(), 0);
  EXPECT_LE(std::count_if(served.begin(), served.end(), [](double x) { return x > 1 + 1e-6; }), 2);
  if (mc_samples > 1) {
    double mi = 0;
    for (double v : report.validation_mutual_information) mi += v;
    EXPECT_GT(mi, 0) << "sampled passes should disagree somewhere (else the test shows little)";
  }
}

TEST(EnsembleParityTest, ReportEqualsPredictForASampledLoraDropoutEnsemble) {
  ExpectReportEqualsPredict({model::DropoutMethod::kLoraDropout, 0.2}, 2, 3);
}

TEST(EnsembleParityTest, ReportEqualsPredictForHiddenKeyAndOneMember) {
  model::DropoutSpec hiddenkey;
  hiddenkey.method = model::DropoutMethod::kHiddenKey;
  hiddenkey.dropkey_rate = 0.1;
  hiddenkey.hiddencut_rate = 0.1;
  ExpectReportEqualsPredict(hiddenkey, 1, 4);
}

}  // namespace
}  // namespace loracle
