// The real server, in process, on a loopback port: real gRPC, real files, real /metrics.

#include <arpa/inet.h>
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <iterator>
#include <map>
#include <set>
#include <sstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "client/cli.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "loracle/v1/adapters.grpc.pb.h"
#include "loracle/v1/inference.grpc.pb.h"
#include "loracle/v1/training.grpc.pb.h"
#include "nlohmann/json.hpp"
#include "server/adapters/adapter_config.h"
#include "server/adapters/adapter_files.h"
#include "server/adapters/store.h"
#include "server/app/loracle_server.h"
#include "server/calibration/calibration.h"
#include "server/calibration/conformal.h"
#include "server/calibration/feedback_store.h"
#include "server/util/file_util.h"
#include "tests/support/test_server.h"
#include "tests/support/test_util.h"

namespace loracle {
namespace {

using loracle::v1::PredictRequest;
using loracle::v1::PredictResponse;

// One member, 8 test-time dropout samples by default.
// "topics" keeps conformal scores like a fine-tuned adapter's (1 - p_y of 20 validation texts;
// a random 3-label adapter's probabilities lie near 1/3, so these give sets of 1 to 3 labels).
const std::vector<double> kTopicsScores = {0.50, 0.52, 0.54, 0.56, 0.58, 0.60, 0.61,
                                           0.62, 0.63, 0.64, 0.65, 0.66, 0.67, 0.68,
                                           0.69, 0.70, 0.72, 0.74, 0.76, 0.80};
adapters::RandomAdapterSpec TopicsSpec() {
  adapters::RandomAdapterSpec spec =
      testing::TinyAdapterSpec({"sports", "politics", "tech"}, 3, 20);
  spec.serving.conformal_scores = kTopicsScores;
  return spec;
}

adapters::RandomAdapterSpec McSpec(model::DropoutSpec dropout) {
  adapters::RandomAdapterSpec spec = testing::TinyAdapterSpec({"ham", "spam"}, 1, 9);
  spec.serving.mc_samples = 8;
  spec.serving.dropout = dropout;
  spec.lora_std = 0.5f;  // large enough deltas that masks visibly move the output
  return spec;
}

class ServerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto t = testing::TestServer::Start(
        {{"sentiment", testing::TinyAdapterSpec({"negative", "positive"}, 1, 1)},
         {"topics", TopicsSpec()},
         {"broken", testing::TinyAdapterSpec({"a", "b"}, 1, 3)},
         {"mc", McSpec(model::DropoutSpec{model::DropoutMethod::kLoraDropout, 0.3})},
         {"hk", McSpec(model::DropoutSpec{model::DropoutMethod::kHiddenKey, 0, 0.3, 0.2})}},
        [](adapters::Store& store, app::LoracleServer::Options&) {
          const std::string w = store.VersionDir("broken", 1) + "/adapter_model.safetensors";
          testing::WriteFile(w, testing::ReadFile(w).substr(0, 64));
        });
    ASSERT_NE(t, nullptr);
    test_server_ = t.release();
    server_ = &test_server_->server();
    channel_ = new std::shared_ptr<grpc::Channel>(test_server_->NewChannel());
  }
  static void TearDownTestSuite() {
    delete channel_;
    delete test_server_;
  }

  static grpc::Status Predict(const PredictRequest& req, PredictResponse* resp,
                              int timeout_ms = 30000) {
    auto stub = loracle::v1::Inference::NewStub(*channel_);
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(timeout_ms));
    return stub->Predict(&ctx, req, resp);
  }
  static PredictRequest Request(const std::string& adapter, std::vector<std::string> texts) {
    PredictRequest r;
    r.set_adapter(adapter);
    for (auto& t : texts) r.add_inputs(t);
    return r;
  }

  static testing::TestServer* test_server_;
  static app::LoracleServer* server_;
  static std::shared_ptr<grpc::Channel>* channel_;
};
testing::TestServer* ServerTest::test_server_;
app::LoracleServer* ServerTest::server_;
std::shared_ptr<grpc::Channel>* ServerTest::channel_;

TEST_F(ServerTest, HealthReportsServing) {
  auto stub = grpc::health::v1::Health::NewStub(*channel_);
  grpc::ClientContext ctx;
  grpc::health::v1::HealthCheckRequest req;
  grpc::health::v1::HealthCheckResponse resp;
  ASSERT_TRUE(stub->Check(&ctx, req, &resp).ok());
  EXPECT_EQ(resp.status(), grpc::health::v1::HealthCheckResponse::SERVING);
}

// Server reflection, spoken as raw bytes over a GenericStub (no reflection client library in
// Debian): ServerReflectionRequest{list_services: ""} is field 7, empty string = 0x3a 0x00.
TEST_F(ServerTest, ReflectionListsTheServices) {
  grpc::GenericStub stub(*channel_);
  grpc::CompletionQueue cq;
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  auto call =
      stub.PrepareCall(&ctx, "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", &cq);
  auto step = [&](intptr_t tag) {
    void* got = nullptr;
    bool ok = false;
    return cq.Next(&got, &ok) && got == reinterpret_cast<void*>(tag) && ok;
  };
  call->StartCall(reinterpret_cast<void*>(1));
  ASSERT_TRUE(step(1));
  grpc::Slice slice(std::string("\x3a\x00", 2));
  grpc::ByteBuffer request(&slice, 1);
  call->Write(request, reinterpret_cast<void*>(2));
  ASSERT_TRUE(step(2));
  call->WritesDone(reinterpret_cast<void*>(3));
  ASSERT_TRUE(step(3));
  grpc::ByteBuffer response;
  call->Read(&response, reinterpret_cast<void*>(4));
  ASSERT_TRUE(step(4));
  grpc::Status status;
  call->Finish(&status, reinterpret_cast<void*>(5));
  ASSERT_TRUE(step(5));
  EXPECT_TRUE(status.ok()) << status.error_message();
  std::vector<grpc::Slice> slices;
  ASSERT_TRUE(response.Dump(&slices).ok());
  std::string bytes;
  for (const grpc::Slice& s : slices)
    bytes.append(reinterpret_cast<const char*>(s.begin()), s.size());
  for (const char* service : {"loracle.v1.Inference", "loracle.v1.Adapters", "loracle.v1.Training",
                              "grpc.health.v1.Health"}) {
    EXPECT_NE(bytes.find(service), std::string::npos) << service;
  }
  cq.Shutdown();
  void* tag;
  bool ok;
  while (cq.Next(&tag, &ok)) {
  }
}

TEST_F(ServerTest, PredictReturnsANormalisedDistribution) {
  PredictResponse resp;
  grpc::Status s = Predict(Request("sentiment", {"hello world", "free money now!"}), &resp);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(resp.adapter(), "sentiment");
  EXPECT_EQ(resp.version(), 1);
  EXPECT_EQ(resp.labels_size(), 2);
  ASSERT_EQ(resp.predictions_size(), 2);
  for (const auto& p : resp.predictions()) {
    ASSERT_EQ(p.probs_size(), 2);
    EXPECT_NEAR(p.probs(0) + p.probs(1), 1.0, 1e-6);
    EXPECT_EQ(p.label_index(), p.probs(1) > p.probs(0) ? 1 : 0);
    EXPECT_EQ(p.label(), resp.labels(p.label_index()));
    EXPECT_EQ(p.prediction_id().size(), 32u);
    EXPECT_FLOAT_EQ(p.uncertainty().confidence(), std::max(p.probs(0), p.probs(1)));
    EXPECT_FALSE(p.truncated());
  }
  EXPECT_EQ(resp.predictions(0).num_tokens(), 4u);  // [CLS] hello world [SEP]
  EXPECT_NE(resp.predictions(0).prediction_id(), resp.predictions(1).prediction_id());
}

TEST_F(ServerTest, SingleMemberHasZeroMutualInformation) {
  PredictResponse resp;
  ASSERT_TRUE(Predict(Request("sentiment", {"a good movie"}), &resp).ok());
  const auto& u = resp.predictions(0).uncertainty();
  EXPECT_EQ(u.mutual_information(), 0.0f);
  EXPECT_EQ(u.predictive_entropy(), u.expected_entropy());
  for (float s : u.prob_std()) EXPECT_EQ(s, 0.0f);
}

TEST_F(ServerTest, EnsembleAveragesMembersAndReportsDisagreement) {
  PredictRequest req = Request("topics", {"the meeting about the invoice"});
  req.set_return_members(true);
  PredictResponse resp;
  ASSERT_TRUE(Predict(req, &resp).ok());
  EXPECT_EQ(resp.members(), 3u);
  EXPECT_EQ(resp.mc_samples(), 1u);
  const auto& p = resp.predictions(0);
  ASSERT_EQ(p.members_size(), 3);
  double h_mean = 0;
  for (int c = 0; c < 3; ++c) {
    double mean = 0;
    for (const auto& m : p.members()) mean += m.probs(c) / 3.0;
    EXPECT_NEAR(p.probs(c), mean, 1e-6) << "probs are the member average";
  }
  for (const auto& m : p.members()) {
    double h = 0;
    for (float v : m.probs()) h -= v * std::log(v);
    h_mean += h / 3.0;
  }
  EXPECT_NEAR(p.uncertainty().expected_entropy(), h_mean, 1e-5);
  EXPECT_GT(p.uncertainty().mutual_information(), 0.0f) << "independent members disagree";
  EXPECT_NEAR(p.uncertainty().mutual_information(),
              p.uncertainty().predictive_entropy() - p.uncertainty().expected_entropy(), 1e-6);
}

TEST_F(ServerTest, TestTimeDropoutSamplesDifferAndAreReproducible) {
  for (const char* adapter : {"mc", "hk"}) {
    PredictRequest req = Request(adapter, {"free money now", "see you at the meeting"});
    req.set_return_members(true);
    req.set_seed(42);
    PredictResponse first, second, other_seed, one_sample;
    ASSERT_TRUE(Predict(req, &first).ok());
    ASSERT_TRUE(Predict(req, &second).ok());
    EXPECT_EQ(first.mc_samples(), 8u);
    const auto& p = first.predictions(0);
    ASSERT_EQ(p.members_size(), 8);
    std::set<float> distinct;
    for (const auto& m : p.members()) distinct.insert(m.probs(0));
    EXPECT_GT(distinct.size(), 4u) << adapter << ": the 8 masked samples differ";
    EXPECT_GT(p.uncertainty().mutual_information(), 0.0f) << adapter;
    for (int i = 0; i < 2; ++i) {
      for (int c = 0; c < 2; ++c) {
        EXPECT_EQ(first.predictions(i).probs(c), second.predictions(i).probs(c))
            << "same request + seed";
      }
    }
    req.set_seed(43);
    ASSERT_TRUE(Predict(req, &other_seed).ok());
    EXPECT_NE(first.predictions(0).probs(0), other_seed.predictions(0).probs(0)) << adapter;
    req.set_mc_samples(1);  // a single sample runs without masks: deterministic, MI exactly 0
    ASSERT_TRUE(Predict(req, &one_sample).ok());
    EXPECT_EQ(one_sample.predictions(0).uncertainty().mutual_information(), 0.0f);
  }
}

TEST_F(ServerTest, McSamplesOverrideExpandsRowsAndIsBounded) {
  PredictRequest req = Request("topics", {"hello"});
  req.set_mc_samples(2);
  req.set_return_members(true);
  PredictResponse resp;
  ASSERT_TRUE(Predict(req, &resp).ok());
  EXPECT_EQ(resp.mc_samples(), 2u);
  ASSERT_EQ(resp.predictions(0).members_size(), 6);
  EXPECT_EQ(resp.predictions(0).members(5).member(), 2u);
  EXPECT_EQ(resp.predictions(0).members(5).sample(), 1u);
  req.set_mc_samples(0);
  EXPECT_EQ(Predict(req, &resp).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  req.set_mc_samples(1000);
  grpc::Status s = Predict(req, &resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(s.error_message().find("mc_samples must be in [1, 32]"), std::string::npos);
}

TEST_F(ServerTest, BadRequestsGetPreciseStatuses) {
  PredictResponse resp;
  grpc::Status empty = Predict(Request("sentiment", {}), &resp);
  EXPECT_EQ(empty.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(empty.error_message().find("inputs is empty"), std::string::npos);

  grpc::Status unknown = Predict(Request("nonexistent", {"hi"}), &resp);
  EXPECT_EQ(unknown.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_NE(unknown.error_message().find("\"nonexistent\""), std::string::npos);

  grpc::Status no_adapter = Predict(Request("", {"hi"}), &resp);
  EXPECT_EQ(no_adapter.error_code(), grpc::StatusCode::INVALID_ARGUMENT);

  grpc::Status utf8 = Predict(Request("sentiment", {"fine", "bad\xc3(x"}), &resp);
  EXPECT_EQ(utf8.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(utf8.error_message().find("inputs[1]: invalid UTF-8 at byte offset 3"),
            std::string::npos)
      << utf8.error_message();

  PredictRequest pairs = Request("sentiment", {"a", "b"});
  pairs.add_text_pairs("only one");
  EXPECT_EQ(Predict(pairs, &resp).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
}

TEST_F(ServerTest, LongInputIsTruncatedAndSaysSo) {
  std::string text;
  for (int i = 0; i < 300; ++i) text += "free money ";
  PredictResponse resp;
  ASSERT_TRUE(Predict(Request("sentiment", {text, "short"}), &resp).ok());
  EXPECT_TRUE(resp.predictions(0).truncated());
  EXPECT_EQ(resp.predictions(0).num_tokens(), 64u);  // the tiny model's max positions
  EXPECT_FALSE(resp.predictions(1).truncated());
}

TEST_F(ServerTest, CorruptAdapterFailsPreciselyAndTheServerKeepsServing) {
  PredictResponse resp;
  grpc::Status s = Predict(Request("broken", {"hi"}), &resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_NE(s.error_message().find("adapter_model.safetensors"), std::string::npos)
      << s.error_message();
  auto stub = loracle::v1::Adapters::NewStub(*channel_);
  grpc::ClientContext ctx;
  loracle::v1::GetAdapterRequest get;
  get.set_name("broken");
  loracle::v1::AdapterInfo info;
  ASSERT_TRUE(stub->Get(&ctx, get, &info).ok());
  EXPECT_EQ(info.state(), loracle::v1::ADAPTER_STATE_FAILED);
  EXPECT_FALSE(info.error().empty());
  EXPECT_TRUE(Predict(Request("sentiment", {"still here"}), &resp).ok());
}

TEST_F(ServerTest, AdaptersListLoadsNewVersionsAndUnloads) {
  auto stub = loracle::v1::Adapters::NewStub(*channel_);
  {
    grpc::ClientContext ctx;
    loracle::v1::ListAdaptersResponse list;
    ASSERT_TRUE(stub->List(&ctx, {}, &list).ok());
    std::vector<std::string> names;
    for (const auto& a : list.adapters()) names.push_back(a.name());
    EXPECT_EQ(names, (std::vector<std::string>{"broken", "hk", "mc", "sentiment", "topics"}));
  }
  // A second Store on the same directory: what another replica publishing looks like.
  auto store = adapters::Store::Create({test_server_->store().root()});
  for (uint64_t seed : {5u, 6u}) {
    ASSERT_TRUE((*store)
                    ->Publish("swap",
                              [&](const std::string& dir) {
                                return adapters::WriteRandomAdapter(
                                    dir, testing::TinyConfig(),
                                    testing::TinyAdapterSpec({"x", "y"}, 1, seed));
                              })
                    .ok());
  }
  grpc::ClientContext ctx;
  loracle::v1::LoadAdapterRequest load;
  load.set_name("swap");
  loracle::v1::AdapterInfo info;
  ASSERT_TRUE(stub->Load(&ctx, load, &info).ok());
  EXPECT_EQ(info.version(), 2);
  EXPECT_EQ(info.state(), loracle::v1::ADAPTER_STATE_READY);
  EXPECT_EQ(info.rank(), 4u);
  PredictResponse resp;
  ASSERT_TRUE(Predict(Request("swap", {"hi"}), &resp).ok());
  EXPECT_EQ(resp.version(), 2);
  grpc::ClientContext ctx2;
  loracle::v1::UnloadAdapterRequest unload;
  unload.set_name("swap");
  loracle::v1::UnloadAdapterResponse unloaded;
  ASSERT_TRUE(stub->Unload(&ctx2, unload, &unloaded).ok());
  EXPECT_EQ(Predict(Request("swap", {"hi"}), &resp).error_code(), grpc::StatusCode::NOT_FOUND);
  grpc::ClientContext ctx3;
  load.set_name("never-published");
  EXPECT_EQ(stub->Load(&ctx3, load, &info).error_code(), grpc::StatusCode::NOT_FOUND);
}

TEST_F(ServerTest, ConcurrentPredictsEqualTheSameRequestsAloneAndRepeat) {
  const std::vector<std::string> texts = {"hello", "free money now", "please review the invoice",
                                          "a good movie", "the meeting"};
  std::vector<PredictRequest> reqs;
  for (int i = 0; i < 40; ++i) {
    const char* adapter = i % 3 == 0   ? "sentiment"
                          : i % 3 == 1 ? "topics"
                                       : "mc";  // mc: 8 masked samples
    reqs.push_back(Request(adapter, {texts[i % texts.size()]}));
  }
  std::vector<PredictResponse> alone(reqs.size()), together(reqs.size());
  for (size_t i = 0; i < reqs.size(); ++i) ASSERT_TRUE(Predict(reqs[i], &alone[i]).ok());
  std::vector<std::thread> threads;
  std::atomic<int> failures{0};
  for (size_t i = 0; i < reqs.size(); ++i) {
    threads.emplace_back([&, i] { failures += !Predict(reqs[i], &together[i]).ok(); });
  }
  for (auto& t : threads) t.join();
  ASSERT_EQ(failures.load(), 0);
  for (size_t i = 0; i < reqs.size(); ++i) {
    for (int c = 0; c < alone[i].predictions(0).probs_size(); ++c) {
      EXPECT_NEAR(together[i].predictions(0).probs(c), alone[i].predictions(0).probs(c), 1e-5) << i;
    }
  }
}

// The value of the exposition line that starts with `series` followed by a space; NaN if absent.
double Sample(const std::string& exposition, const std::string& series) {
  std::istringstream in(exposition);
  for (std::string line; std::getline(in, line);) {
    if (line.rfind(series + " ", 0) == 0) return std::stod(line.substr(series.size() + 1));
  }
  return std::nan("");
}

// Feedback over real gRPC: single and batched, every outcome's status, and the online metrics on
// /metrics equal the offline report of the same returned probabilities and labels.
TEST_F(ServerTest, FeedbackFeedsOnlineCalibrationMetrics) {
  auto inference = loracle::v1::Inference::NewStub(*channel_);
  std::vector<std::string> texts;
  for (int i = 0; i < 30; ++i) texts.push_back("feedback text number " + std::to_string(i));
  PredictResponse resp;
  ASSERT_TRUE(Predict(Request("topics", texts), &resp).ok());
  const std::vector<std::string> labels(resp.labels().begin(), resp.labels().end());
  std::vector<std::vector<double>> probs;
  std::vector<int> truth;
  loracle::v1::FeedbackRequest batch;
  for (int i = 0; i < resp.predictions_size(); ++i) {
    const auto& p = resp.predictions(i);
    probs.emplace_back(p.probs().begin(), p.probs().end());
    truth.push_back(i % 3);
    if (i == 0) continue;  // sent on its own below
    auto* item = batch.add_items();
    item->set_prediction_id(p.prediction_id());
    item->set_true_label(labels[static_cast<size_t>(i % 3)]);
  }
  {
    grpc::ClientContext ctx;
    loracle::v1::FeedbackRequest one;
    one.set_prediction_id(resp.predictions(0).prediction_id());
    one.set_true_label(labels[0]);
    loracle::v1::FeedbackResponse out;
    ASSERT_TRUE(inference->Feedback(&ctx, one, &out).ok());
    EXPECT_EQ(out.recorded(), 1u);
  }
  // The batch also carries a repeat, an unknown id and a label the adapter lacks.
  auto* repeat = batch.add_items();
  repeat->set_prediction_id(resp.predictions(0).prediction_id());
  repeat->set_true_label(labels[1]);
  auto* unknown = batch.add_items();
  unknown->set_prediction_id("0123456789abcdef0123456789abcdef");
  unknown->set_true_label(labels[0]);
  auto* bad = batch.add_items();
  bad->set_prediction_id(resp.predictions(1).prediction_id());
  bad->set_true_label("cooking");
  {
    grpc::ClientContext ctx;
    loracle::v1::FeedbackResponse out;
    ASSERT_TRUE(inference->Feedback(&ctx, batch, &out).ok());
    EXPECT_EQ(out.recorded(), 29u);
    EXPECT_EQ(out.duplicates(), 1u);
    ASSERT_EQ(out.results_size(), 32);
    EXPECT_TRUE(out.results(29).duplicate());
    EXPECT_EQ(out.results(30).code(), static_cast<int>(grpc::StatusCode::NOT_FOUND));
    EXPECT_EQ(out.results(31).code(), static_cast<int>(grpc::StatusCode::INVALID_ARGUMENT));
    EXPECT_NE(out.results(31).message().find("sports, politics, tech"), std::string::npos)
        << out.results(31).message();
  }
  {
    grpc::ClientContext ctx;
    loracle::v1::FeedbackRequest one;
    one.set_prediction_id("ffffffffffffffffffffffffffffffff");
    one.set_true_label(labels[0]);
    loracle::v1::FeedbackResponse out;
    EXPECT_EQ(inference->Feedback(&ctx, one, &out).error_code(), grpc::StatusCode::NOT_FOUND);
  }
  {
    grpc::ClientContext ctx;
    loracle::v1::FeedbackResponse out;
    EXPECT_EQ(inference->Feedback(&ctx, {}, &out).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  }

  const calibration::CalibrationReport offline = *calibration::Evaluate(probs, truth);
  const std::string body = testing::HttpGet(server_->metrics_port(), "/metrics");
  const std::string labels_since = "{adapter=\"topics\",version=\"1\",window=\"since_load\"}";
  EXPECT_EQ(Sample(body, "loracle_online_labelled" + labels_since), 30);
  EXPECT_NEAR(Sample(body, "loracle_online_ece" + labels_since), offline.ece, 1e-6);
  EXPECT_NEAR(Sample(body, "loracle_online_accuracy" + labels_since), offline.accuracy, 1e-6);
  EXPECT_NEAR(Sample(body, "loracle_online_nll" + labels_since), offline.nll, 1e-6);
  EXPECT_NEAR(Sample(body, "loracle_online_brier" + labels_since), offline.brier, 1e-6);
  EXPECT_NEAR(Sample(body, "loracle_online_mce" + labels_since), offline.mce, 1e-6);
  EXPECT_EQ(Sample(body, "loracle_feedback_total{adapter=\"topics\",version=\"1\"}"), 30);
  EXPECT_EQ(Sample(body, "loracle_feedback_duplicates_total{adapter=\"topics\",version=\"1\"}"), 1);
  // Online conformal set coverage equals the offline sets of the same probabilities and labels.
  int sizes_differ = 0;
  for (double target : calibration::kOnlineCoverageTargets) {
    const double threshold = calibration::ConformalThreshold(kTopicsScores, target);
    int covered = 0, size = 0;
    for (size_t i = 0; i < probs.size(); ++i) {
      const std::vector<int> set = calibration::PredictionSet(probs[i], threshold);
      covered += std::find(set.begin(), set.end(), truth[i]) != set.end();
      size += static_cast<int>(set.size());
      sizes_differ += set.size() != 1;
    }
    const std::string l =
        absl::StrFormat("{adapter=\"topics\",version=\"1\",target=\"%.2f\"}", target);
    EXPECT_EQ(Sample(body, "loracle_online_set_labelled" + l), 30) << l;
    EXPECT_NEAR(Sample(body, "loracle_online_set_coverage" + l), covered / 30.0, 1e-9) << l;
    EXPECT_NEAR(Sample(body, "loracle_online_set_size" + l), size / 30.0, 1e-9) << l;
    EXPECT_NEAR(Sample(body, "loracle_online_set_target" + l), target, 1e-12) << l;
  }
  EXPECT_GT(sizes_differ, 0) << "the scores should give sets of more than one size";
  double binned = 0;
  for (int b = 1; b <= 15; ++b) {
    const double v = Sample(body,
                            "loracle_online_bin_predictions{adapter=\"topics\",version=\"1\","
                            "window=\"since_load\",bin=\"" +
                                absl::StrFormat("%.4g", b / 15.0) + "\"}");
    ASSERT_FALSE(std::isnan(v)) << "bin " << b;
    binned += v;
  }
  EXPECT_EQ(binned, 30);
  EXPECT_GE(Sample(body, "loracle_adapters{state=\"READY\"}"), 4) << body;
  EXPECT_EQ(Sample(body, "loracle_adapters{state=\"FAILED\"}"), 1) << "the corrupt adapter";

  // The same report through the RPC, and the CLI's view of it.
  {
    grpc::ClientContext ctx;
    loracle::v1::OnlineCalibrationRequest req;
    req.set_adapter("topics");
    loracle::v1::OnlineCalibrationResponse out;
    ASSERT_TRUE(inference->OnlineCalibration(&ctx, req, &out).ok());
    ASSERT_EQ(out.versions_size(), 1);
    EXPECT_EQ(out.versions(0).since_load().labelled(), 30u);
    EXPECT_NEAR(out.versions(0).since_load().ece(), offline.ece, 1e-6);
    EXPECT_EQ(out.versions(0).since_load().bins_size(), 15);
    grpc::ClientContext ctx2;
    req.set_adapter("nope");
    EXPECT_EQ(inference->OnlineCalibration(&ctx2, req, &out).error_code(),
              grpc::StatusCode::NOT_FOUND);
  }
  const std::string server = "--server=" + test_server_->address();
  std::ostringstream table, err;
  ASSERT_EQ(client::RunCli({server, "calibration", "topics"}, table, err), 0) << err.str();
  EXPECT_NE(table.str().find("labelled 30"), std::string::npos) << table.str();
  EXPECT_NE(table.str().find("reliability"), std::string::npos) << table.str();
  std::ostringstream out2, err2;
  EXPECT_EQ(client::RunCli({server, "feedback", resp.predictions(2).prediction_id(), labels[2]},
                           out2, err2),
            0)
      << err2.str();
  EXPECT_NE(out2.str().find("duplicates 1"), std::string::npos) << out2.str();
  // A load with the feedback loop on: every prediction labelled, none refused.
  std::ostringstream bench_out, bench_err;
  ASSERT_EQ(client::RunCli({server, "bench", "--adapters=topics", "--concurrency=2",
                            "--duration_s=0.5", "--warmup_s=0", "--input_tokens=8", "--feedback"},
                           bench_out, bench_err),
            0)
      << bench_err.str();
  EXPECT_NE(bench_out.str().find("feedback: "), std::string::npos) << bench_out.str();
  EXPECT_NE(bench_out.str().find("errors: none\n"), std::string::npos) << bench_out.str();
  testing::TempDir dir;
  testing::WriteFile(dir.path() + "/f.jsonl",
                     "{\"prediction_id\": \"nope\", \"label\": \"tech\"}\n");
  std::ostringstream out3, err3;
  EXPECT_EQ(client::RunCli({server, "feedback", "--file=" + dir.path() + "/f.jsonl"}, out3, err3),
            1);
  EXPECT_NE(err3.str().find("no prediction with id 'nope'"), std::string::npos) << err3.str();
  testing::WriteFile(dir.path() + "/bad.jsonl", "{\"id\": 1}\n");
  std::ostringstream out4, err4;
  EXPECT_EQ(client::RunCli({server, "feedback", "--file=" + dir.path() + "/bad.jsonl"}, out4, err4),
            2);
  EXPECT_NE(err4.str().find("bad.jsonl:1"), std::string::npos) << err4.str();
}

TEST_F(ServerTest, OversizedTextOrPairIsInvalidBeforeAnyLookup) {
  PredictResponse resp;
  PredictRequest req = Request("no-such-adapter", {"short"});
  req.add_text_pairs(std::string((1 << 20) + 1, 'x'));
  const grpc::Status s = Predict(req, &resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(s.error_message().find("text_pairs[0] is 1048577 bytes; the limit is 1048576"),
            std::string::npos)
      << s.error_message();
  const grpc::Status t = Predict(Request("sentiment", {std::string((1 << 20) + 1, 'y')}), &resp);
  EXPECT_EQ(t.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(t.error_message().find("inputs[0] is 1048577 bytes"), std::string::npos);
}

TEST_F(ServerTest, MetricsEndpointCountsCalls) {
  PredictResponse resp;
  ASSERT_TRUE(Predict(Request("sentiment", {"count me"}), &resp).ok());
  const std::string body = testing::HttpGet(server_->metrics_port(), "/metrics");
  EXPECT_NE(body.find("HTTP/1.1 200 OK"), std::string::npos);
  EXPECT_NE(
      body.find("loracle_requests_total{code=\"OK\",method=\"loracle.v1.Inference/Predict\"}"),
      std::string::npos);
  EXPECT_NE(body.find("loracle_predictions_total{adapter=\"sentiment\",version=\"1\"}"),
            std::string::npos);
  // Per-version series exist from load, before any prediction.
  EXPECT_NE(body.find("loracle_predictions_total{adapter=\"hk\",version=\"1\"}"),
            std::string::npos);
  EXPECT_NE(body.find("loracle_adapter_temperature{adapter=\"topics\",version=\"1\"} 1"),
            std::string::npos);
  for (const char* series :
       {"loracle_model_ready 1", "loracle_queue_wait_seconds_count ", "loracle_request_passes_sum ",
        "loracle_adapter_loads_total{result=\"ok\"} ", "loracle_adapter_load_seconds_count ",
        "loracle_build_info{device=\"cpu\",dtype=\"float32\",git_commit=\"",
        "process_resident_memory_bytes ", "process_threads ",
        "loracle_compute_threads{use=\"serving\"} "}) {
    EXPECT_NE(body.find(series), std::string::npos) << series;
  }
  EXPECT_NE(testing::HttpGet(server_->metrics_port(), "/nope").find("404"), std::string::npos);
}

// The exposition's series (names and labels, without values), sorted.
std::vector<std::string> SeriesOf(const std::string& exposition) {
  std::vector<std::string> out;
  for (absl::string_view line : absl::StrSplit(exposition, '\n')) {
    if (line.empty() || line[0] == '#') continue;
    out.emplace_back(line.substr(0, line.rfind(' ')));
  }
  std::sort(out.begin(), out.end());
  return out;
}

TEST_F(ServerTest, AThousandLoadUnloadCyclesLeaveNoStaleSeries) {
  auto adapters_stub = loracle::v1::Adapters::NewStub(*channel_);
  auto inference = loracle::v1::Inference::NewStub(*channel_);
  auto store = adapters::Store::Create({test_server_->store().root()});
  ASSERT_TRUE(store.ok());
  std::vector<std::string> baseline;
  size_t baseline_bytes = 0;
  constexpr int kCycles = 1000;
  {  // Get answers OK in the wait below only when it sees UNLOADING: its series exists from now.
    grpc::ClientContext ctx;
    loracle::v1::GetAdapterRequest get;
    get.set_name("sentiment");
    loracle::v1::AdapterInfo info;
    ASSERT_TRUE(adapters_stub->Get(&ctx, get, &info).ok());
  }
  for (int cycle = 0; cycle < kCycles; ++cycle) {
    // A new version every cycle: the label values seen over the run are unbounded.
    ASSERT_TRUE((*store)
                    ->Publish("churn",
                              [&](const std::string& dir) {
                                return adapters::WriteRandomAdapter(
                                    dir, testing::TinyConfig(),
                                    testing::TinyAdapterSpec({"x", "y"}, 1, 7));
                              })
                    .ok());
    grpc::ClientContext load_ctx;
    loracle::v1::LoadAdapterRequest load;
    load.set_name("churn");
    loracle::v1::AdapterInfo info;
    ASSERT_TRUE(adapters_stub->Load(&load_ctx, load, &info).ok()) << cycle;
    PredictResponse resp;
    ASSERT_TRUE(Predict(Request("churn", {"cycle"}), &resp).ok());
    grpc::ClientContext feedback_ctx;
    loracle::v1::FeedbackRequest feedback;
    auto* item = feedback.add_items();
    item->set_prediction_id(resp.predictions(0).prediction_id());
    item->set_true_label("y");
    loracle::v1::FeedbackResponse feedback_resp;
    ASSERT_TRUE(inference->Feedback(&feedback_ctx, feedback, &feedback_resp).ok());
    if (cycle == 0) {  // while loaded, every per-version family has its series
      const std::string live = testing::HttpGet(server_->metrics_port(), "/metrics");
      for (const char* family : {"loracle_predictions_total", "loracle_prediction_entropy_count",
                                 "loracle_adapter_temperature", "loracle_online_labelled",
                                 "loracle_feedback_predictions_total"}) {
        EXPECT_NE(live.find(absl::StrCat(family, "{adapter=\"churn\"")), std::string::npos)
            << family;
      }
    }
    grpc::ClientContext unload_ctx;
    loracle::v1::UnloadAdapterRequest unload;
    unload.set_name("churn");
    loracle::v1::UnloadAdapterResponse unloaded;
    ASSERT_TRUE(adapters_stub->Unload(&unload_ctx, unload, &unloaded).ok());
    if (cycle == 0 || cycle == kCycles - 1) {
      // The version's series leave with it, when the last request holding it lets go: the batch
      // thread drops its request just after the reply, so the name may show UNLOADING briefly.
      const absl::Time end = absl::Now() + absl::Seconds(10);
      for (;;) {
        grpc::ClientContext get_ctx;
        loracle::v1::GetAdapterRequest get;
        get.set_name("churn");
        loracle::v1::AdapterInfo gone;
        grpc::Status s = adapters_stub->Get(&get_ctx, get, &gone);
        if (s.error_code() == grpc::StatusCode::NOT_FOUND) break;
        ASSERT_TRUE(s.ok()) << s.error_message();
        ASSERT_EQ(gone.state(), loracle::v1::ADAPTER_STATE_UNLOADING);
        ASSERT_LT(absl::Now(), end) << "churn still held 10 s after its unload";
        absl::SleepFor(absl::Milliseconds(1));
      }
      std::string scrape = testing::HttpGet(server_->metrics_port(), "/metrics");
      scrape = scrape.substr(scrape.find("\r\n\r\n") + 4);
      EXPECT_EQ(scrape.find("churn"), std::string::npos) << "cycle " << cycle;
      // Only the process series and the histograms of other calls may differ in values; the
      // series themselves may not.
      std::vector<std::string> series = SeriesOf(scrape);
      if (cycle == 0) {
        baseline = series;
        baseline_bytes = scrape.size();
      } else {
        std::vector<std::string> added, removed;
        std::set_difference(series.begin(), series.end(), baseline.begin(), baseline.end(),
                            std::back_inserter(added));
        std::set_difference(baseline.begin(), baseline.end(), series.begin(), series.end(),
                            std::back_inserter(removed));
        EXPECT_TRUE(added.empty() && removed.empty())
            << "new: " << absl::StrJoin(added, " ") << "; gone: " << absl::StrJoin(removed, " ");
        // The same series; only values changed (counters and sums gain a few digits).
        EXPECT_LT(scrape.size(), baseline_bytes * 102 / 100)
            << scrape.size() << " vs " << baseline_bytes;
      }
    }
  }
  EXPECT_EQ(*(*store)->LatestVersion("churn"), kCycles);
}

TEST_F(ServerTest, CliPrintsTablesAndJson) {
  const std::string server = absl::StrCat("--server=127.0.0.1:", server_->grpc_port());
  std::ostringstream out, err;
  ASSERT_EQ(
      client::RunCli({server, "predict", "--adapter=topics", "--json", "--members", "hello world"},
                     out, err),
      0)
      << err.str();
  auto j = nlohmann::json::parse(out.str());
  EXPECT_EQ(j["adapter"], "topics");
  EXPECT_EQ(j["predictions"][0]["text"], "hello world");
  EXPECT_EQ(j["predictions"][0]["probs"].size(), 3u);
  EXPECT_EQ(j["predictions"][0]["members"].size(), 3u);
  EXPECT_GT(j["predictions"][0]["uncertainty"]["mutual_information"].get<double>(), 0.0);

  std::ostringstream table, err2;
  ASSERT_EQ(client::RunCli({server, "predict", "--adapter", "sentiment", "hello"}, table, err2), 0);
  EXPECT_NE(table.str().find("adapter sentiment (version 1)"), std::string::npos) << table.str();
  EXPECT_NE(table.str().find("negative="), std::string::npos);

  std::ostringstream out3, err3;
  EXPECT_EQ(client::RunCli({server, "predict", "--adapter=nope", "x"}, out3, err3), 1);
  EXPECT_NE(err3.str().find("NOT_FOUND"), std::string::npos);
  std::ostringstream out4, err4;
  EXPECT_EQ(client::RunCli({server, "predict", "x"}, out4, err4), 2) << "usage error";
  std::ostringstream out6, err6;
  EXPECT_EQ(
      client::RunCli({server, "predict", "--adapter=sentiment", "--mc_sample=4", "x"}, out6, err6),
      2)
      << "a misspelt flag must not fall back to a default";
  EXPECT_NE(err6.str().find("unknown flag --mc_sample"), std::string::npos) << err6.str();
  std::ostringstream out5, err5;
  ASSERT_EQ(client::RunCli({server, "adapters", "list"}, out5, err5), 0);
  EXPECT_NE(out5.str().find("FAILED"), std::string::npos) << out5.str();
}

}  // namespace
}  // namespace loracle

namespace loracle {
namespace {

// SIGTERM semantics, in process: calls already accepted finish with OK while the server drains;
// calls after it are refused.
TEST(GracefulShutdownTest, InFlightCallsFinishBeforeTheServerStops) {
  auto t = testing::TestServer::Start(
      {{"spam", testing::TinyAdapterSpec({"ham", "spam"}, 1, 1)}},
      [](adapters::Store&, app::LoracleServer::Options& o) {
        o.threads = 1;
        o.batcher.max_batch_size = 1000;
        o.batcher.max_queue_delay_us = 1'500'000;  // requests sit in the queue when Shutdown starts
      });
  ASSERT_NE(t, nullptr);
  app::LoracleServer* server = &t->server();
  auto channel = t->NewChannel();
  constexpr int kCalls = 6;
  std::vector<grpc::Status> statuses(kCalls);
  std::vector<std::thread> threads;
  for (int i = 0; i < kCalls; ++i) {
    threads.emplace_back([&, i] {
      auto stub = loracle::v1::Inference::NewStub(channel);
      grpc::ClientContext ctx;
      PredictRequest req;
      req.set_adapter("spam");
      req.add_inputs("message " + std::to_string(i));
      PredictResponse resp;
      statuses[i] = stub->Predict(&ctx, req, &resp);
    });
  }
  // Wait (bounded) until all calls are queued behind the batch delay.
  const absl::Time end = absl::Now() + absl::Seconds(10);
  while (absl::Now() < end &&
         testing::HttpGet(server->metrics_port(), "/metrics")
                 .find(absl::StrCat("loracle_queued_rows ", kCalls)) == std::string::npos) {
    absl::SleepFor(absl::Milliseconds(20));
  }
  server->Shutdown(absl::Seconds(20));
  for (auto& t : threads) t.join();
  for (int i = 0; i < kCalls; ++i)
    EXPECT_TRUE(statuses[i].ok()) << i << ": " << statuses[i].error_message();
  auto stub = loracle::v1::Inference::NewStub(channel);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(2));
  PredictResponse resp;
  PredictRequest late;
  late.set_adapter("spam");
  late.add_inputs("too late");
  EXPECT_FALSE(stub->Predict(&ctx, late, &resp).ok());
}

// Sets the first lora_A tensor's first value of the safetensors file `path` to NaN.
void PoisonFirstLoraA(const std::string& path) {
  std::string bytes = testing::ReadFile(path);
  uint64_t header = 0;
  std::memcpy(&header, bytes.data(), sizeof(header));
  auto j = nlohmann::json::parse(bytes.substr(8, header));
  for (const auto& [key, value] : j.items()) {
    if (key.find("lora_A") == std::string::npos) continue;
    const float nan = std::nanf("");
    std::memcpy(bytes.data() + 8 + header + value["data_offsets"][0].get<size_t>(), &nan,
                sizeof(nan));
    break;
  }
  testing::WriteFile(path, bytes);
}

// Adapters other processes put into a shared store, each broken in a way a user's files break:
// the watching server lists every one FAILED with a reason that names the problem, never serves
// it, and keeps serving the rest exactly as before. A directory copied in by hand is FAILED while
// half-written and served once its files are complete.
TEST(SharedStoreTest, BadAdaptersAreListedFailedWithTheReasonAndNeverServed) {
  auto server = testing::TestServer::Start({{"good", testing::TinyAdapterSpec({"a", "b"}, 2, 5)}},
                                           [](adapters::Store&, app::LoracleServer::Options& o) {
                                             o.store_poll_interval = absl::Milliseconds(200);
                                             o.store_inotify = true;
                                           });
  ASSERT_NE(server, nullptr);
  auto channel = server->NewChannel();
  auto inference = loracle::v1::Inference::NewStub(channel);
  auto admin = loracle::v1::Adapters::NewStub(channel);
  auto predict = [&](const std::string& adapter, PredictResponse* resp) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    PredictRequest req;
    req.set_adapter(adapter);
    req.add_inputs("a shared store, written by many hands");
    return inference->Predict(&ctx, req, resp);
  };
  PredictResponse before;
  ASSERT_TRUE(predict("good", &before).ok());

  // Another process's publisher (its own Store), as a trainer or an operator's copy would be.
  auto other = adapters::Store::Create({server->store().root()});
  ASSERT_TRUE(other.ok());
  const adapters::RandomAdapterSpec spec = testing::TinyAdapterSpec({"a", "b"}, 1, 6);
  const model::ModelConfig tiny = testing::TinyConfig();
  auto publish = [&](const std::string& name, const model::ModelConfig& config,
                     const std::function<void(const std::string&)>& damage) {
    ASSERT_TRUE((*other)
                    ->Publish(name,
                              [&](const std::string& dir) {
                                absl::Status s = adapters::WriteRandomAdapter(dir, config, spec);
                                if (s.ok()) damage(dir);
                                return s;
                              })
                    .ok())
        << name;
  };
  auto edit_json = [](const std::string& path, const std::function<void(nlohmann::json&)>& f) {
    auto j = nlohmann::json::parse(testing::ReadFile(path));
    f(j);
    testing::WriteFile(path, j.dump());
  };
  model::ModelConfig wider = tiny;
  wider.hidden_size *= 2;
  wider.intermediate_size *= 2;
  model::ModelConfig deeper = tiny;
  deeper.num_hidden_layers += 1;
  const std::map<std::string, std::string> reasons = {
      {"missing-weights", "adapter_model.safetensors"},
      {"wider-base", "has shape"},
      {"deeper-base", "matches no targeted linear layer"},
      {"rank-zero", "\"r\""},
      {"nan-weights", "NaN"},
      {"more-labels", "3 labels"},
  };
  publish("missing-weights", tiny, [](const std::string& dir) {
    std::remove((dir + "/adapter_model.safetensors").c_str());
  });
  publish("wider-base", wider, [](const std::string&) {});
  publish("deeper-base", deeper, [](const std::string&) {});
  publish("rank-zero", tiny, [&](const std::string& dir) {
    edit_json(dir + "/adapter_config.json", [](nlohmann::json& j) { j["r"] = 0; });
  });
  publish("nan-weights", tiny,
          [](const std::string& dir) { PoisonFirstLoraA(dir + "/adapter_model.safetensors"); });
  publish("more-labels", tiny, [&](const std::string& dir) {
    edit_json(dir + "/loracle.json", [](nlohmann::json& j) {
      j["labels"] = nlohmann::json::array({"a", "b", "c"});
    });
  });
  // Copied in by hand, not published: the version directory exists before its files do.
  const std::string half = server->store().root() + "/half-written/1";
  ASSERT_TRUE(util::MakeDirs(half).ok());
  testing::WriteFile(half + "/loracle.json", adapters::ServingConfigToJson(spec.serving));

  auto get = [&](const std::string& name, loracle::v1::AdapterInfo* info) {
    grpc::ClientContext ctx;
    loracle::v1::GetAdapterRequest req;
    req.set_name(name);
    return admin->Get(&ctx, req, info);
  };
  auto wait_for = [&](const std::string& name, loracle::v1::AdapterState state) {
    loracle::v1::AdapterInfo info;
    const absl::Time end = absl::Now() + absl::Seconds(15);
    while (absl::Now() < end) {
      if (get(name, &info).ok() && info.state() == state) break;
      absl::SleepFor(absl::Milliseconds(50));
    }
    return info;
  };
  std::map<std::string, std::string> all = reasons;
  all["half-written"] = "adapter_config.json";  // the member's PEFT files are not there yet
  for (const auto& [name, reason] : all) {
    SCOPED_TRACE(name);
    const loracle::v1::AdapterInfo info = wait_for(name, loracle::v1::ADAPTER_STATE_FAILED);
    EXPECT_EQ(info.state(), loracle::v1::ADAPTER_STATE_FAILED);
    EXPECT_NE(info.error().find(reason), std::string::npos) << info.error();
    PredictResponse resp;
    grpc::Status s = predict(name, &resp);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION) << s.error_message();
    EXPECT_NE(s.error_message().find(reason), std::string::npos) << s.error_message();
  }
  grpc::ClientContext list_ctx;
  loracle::v1::ListAdaptersResponse list;
  ASSERT_TRUE(admin->List(&list_ctx, {}, &list).ok());
  EXPECT_EQ(list.adapters_size(), 8);
  for (const auto& a : list.adapters()) {
    EXPECT_EQ(a.state() == loracle::v1::ADAPTER_STATE_READY, a.name() == "good") << a.name();
  }

  // The rest unaffected: the same answer as before any of this.
  PredictResponse after;
  ASSERT_TRUE(predict("good", &after).ok());
  ASSERT_EQ(after.predictions(0).probs_size(), 2);
  for (int k = 0; k < 2; ++k) {
    EXPECT_FLOAT_EQ(after.predictions(0).probs(k), before.predictions(0).probs(k));
  }

  // The copy finishes: its files change, so the watcher tries it again, and it is served.
  ASSERT_TRUE(adapters::WriteRandomAdapter(half, tiny, spec).ok());
  EXPECT_EQ(wait_for("half-written", loracle::v1::ADAPTER_STATE_READY).state(),
            loracle::v1::ADAPTER_STATE_READY);
  PredictResponse served;
  EXPECT_TRUE(predict("half-written", &served).ok());
}

// --adapter_memory_bytes smaller than any adapter: one resident at a time, so concurrent
// requests over six adapters evict and reload constantly. Every request must still succeed with
// the probabilities an all-resident server gives.
TEST(MemoryBudgetTest, EvictedAdaptersReloadTransparentlyUnderConcurrentLoad) {
  std::vector<testing::AdapterToPublish> adapters;
  for (int i = 0; i < 6; ++i) {
    adapters.push_back({absl::StrCat("t", i),
                        testing::TinyAdapterSpec({"x", "y", "z"}, i % 2 == 0 ? 1 : 3, 40 + i)});
  }
  auto all_resident = testing::TestServer::Start(adapters);
  auto budgeted = testing::TestServer::Start(
      adapters,
      [](adapters::Store&, app::LoracleServer::Options& o) { o.adapter_memory_bytes = 1; });
  ASSERT_NE(all_resident, nullptr);
  ASSERT_NE(budgeted, nullptr);
  auto predict = [](const std::shared_ptr<grpc::Channel>& channel, const std::string& adapter,
                    PredictResponse* resp) {
    auto stub = loracle::v1::Inference::NewStub(channel);
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
    PredictRequest req;
    req.set_adapter(adapter);
    req.add_inputs("the budget holds one adapter at a time");
    return stub->Predict(&ctx, req, resp);
  };
  std::map<std::string, std::vector<float>> expected;
  auto reference = all_resident->NewChannel();
  for (const auto& a : adapters) {
    PredictResponse resp;
    ASSERT_TRUE(predict(reference, a.name, &resp).ok());
    expected[a.name] = {resp.predictions(0).probs().begin(), resp.predictions(0).probs().end()};
  }
  auto channel = budgeted->NewChannel();
  constexpr int kThreads = 8, kCalls = 24;
  std::atomic<int> failures{0}, mismatches{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int c = 0; c < kCalls; ++c) {
        const std::string& name = adapters[(t + c) % adapters.size()].name;
        PredictResponse resp;
        grpc::Status s = predict(channel, name, &resp);
        if (!s.ok()) {
          ADD_FAILURE() << name << ": " << s.error_message();
          ++failures;
          continue;
        }
        const std::vector<float> got(resp.predictions(0).probs().begin(),
                                     resp.predictions(0).probs().end());
        for (size_t k = 0; k < got.size(); ++k) {
          if (std::abs(got[k] - expected[name][k]) > 1e-5f) {
            ++mismatches;
            break;
          }
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(mismatches.load(), 0);

  auto stub = loracle::v1::Adapters::NewStub(channel);
  grpc::ClientContext ctx;
  loracle::v1::ListAdaptersResponse list;
  ASSERT_TRUE(stub->List(&ctx, {}, &list).ok());
  int resident = 0;
  for (const auto& a : list.adapters()) {
    EXPECT_EQ(a.state(), loracle::v1::ADAPTER_STATE_READY) << a.name() << ": " << a.error();
    EXPECT_GT(a.memory_bytes(), 0) << a.name();
    resident += a.resident();
  }
  EXPECT_EQ(resident, 1) << "a budget below one adapter keeps the most recent one alone";
  const std::string scrape = testing::HttpGet(budgeted->server().metrics_port(), "/metrics");
  auto value = [&scrape](const std::string& series) {
    const size_t at = scrape.find("\n" + series + " ");
    return at == std::string::npos ? -1.0 : std::stod(scrape.substr(at + series.size() + 2));
  };
  EXPECT_GT(value("loracle_adapter_evictions_total"), 0);
  EXPECT_GT(value("loracle_adapter_reloads_total{result=\"ok\"}"), 0);
  EXPECT_EQ(value("loracle_adapter_reloads_total{result=\"error\"}"), 0);
  EXPECT_EQ(value("loracle_adapters_ready"), 6);
  EXPECT_GT(value("loracle_adapter_resident_bytes"), 0);
}

}  // namespace
}  // namespace loracle
