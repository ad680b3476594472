// The fine-tune RPC over real gRPC on loopback: Submit, Watch to SUCCEEDED, Predict with the
// published version; and every way a job is refused or fails, each with its status and nothing
// published.

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/resource.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_format.h"
#include "client/cli.h"
#include "loracle/v1/adapters.grpc.pb.h"
#include "loracle/v1/inference.grpc.pb.h"
#include "loracle/v1/training.grpc.pb.h"
#include "nlohmann/json.hpp"
#include "server/app/spam_demo.h"
#include "server/rpc/training_service.h"
#include "server/training/job_queue.h"
#include "tests/support/test_server.h"
#include "tests/support/test_util.h"

namespace loracle {
namespace {

using loracle::v1::Job;
using loracle::v1::SubmitRequest;

// Texts in the tiny model's vocabulary: money-words are "spam", office words "ham".
void AddExamples(SubmitRequest* r, int n, uint32_t seed) {
  const std::vector<std::string> spam = {"free", "money", "win", "now", "!"};
  const std::vector<std::string> ham = {"meeting", "please", "review", "invoice", "hello"};
  std::mt19937 rng(seed);
  for (int i = 0; i < n; ++i) {
    const bool is_spam = i % 2 == 1;
    const auto& words = is_spam ? spam : ham;
    std::string text = "the mail";
    for (int w = 0; w < 4; ++w) text += " " + words[rng() % words.size()];
    auto* e = r->add_examples();
    e->set_text(text);
    e->set_label(is_spam ? "spam" : "ham");
  }
}

SubmitRequest Request(const std::string& adapter) {
  SubmitRequest r;
  r.set_adapter(adapter);
  AddExamples(&r, 80, 1);
  r.set_ensemble_members(2);
  r.set_epochs(4);
  r.set_batch_size(8);
  r.set_learning_rate(1e-2f);
  r.mutable_lora()->set_rank(4);
  r.set_seed(5);
  return r;
}

class TrainingTest : public ::testing::Test {
 protected:
  void Start(
      const std::function<void(adapters::Store&, app::LoracleServer::Options&)>& prepare = {}) {
    server_ = testing::TestServer::Start({}, prepare);
    ASSERT_NE(server_, nullptr);
    channel_ = server_->NewChannel();
    training_ = loracle::v1::Training::NewStub(channel_);
  }
  grpc::Status Submit(const SubmitRequest& r, Job* job) {
    grpc::ClientContext ctx;
    return training_->Submit(&ctx, r, job);
  }
  // Every update of the job until the stream ends.
  std::vector<Job> Watch(const std::string& id, grpc::Status* status) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(120));
    loracle::v1::GetJobRequest req;
    req.set_id(id);
    auto reader = training_->Watch(&ctx, req);
    std::vector<Job> seen;
    Job j;
    while (reader->Read(&j)) seen.push_back(j);
    *status = reader->Finish();
    return seen;
  }
  Job WatchToEnd(const std::string& id) {
    grpc::Status status;
    std::vector<Job> seen = Watch(id, &status);
    EXPECT_TRUE(status.ok()) << status.error_message();
    if (seen.empty()) {
      ADD_FAILURE() << "Watch sent nothing";
      return {};
    }
    return seen.back();
  }

  std::unique_ptr<testing::TestServer> server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<loracle::v1::Training::Stub> training_;
};

TEST_F(TrainingTest, SubmitWatchToSucceededThenPredictWithThePublishedVersion) {
  Start();
  Job job;
  ASSERT_TRUE(Submit(Request("spam"), &job).ok());
  EXPECT_EQ(job.state(), loracle::v1::JOB_STATE_QUEUED);
  grpc::Status status;
  std::vector<Job> seen = Watch(job.id(), &status);
  ASSERT_TRUE(status.ok()) << status.error_message();
  ASSERT_FALSE(seen.empty());
  const Job& done = seen.back();
  ASSERT_EQ(done.state(), loracle::v1::JOB_STATE_SUCCEEDED) << done.error();
  EXPECT_EQ(done.published_version(), 1);
  bool saw_progress = false;
  for (const Job& j : seen)
    saw_progress |= j.state() == loracle::v1::JOB_STATE_RUNNING && j.step() > 0;
  EXPECT_TRUE(saw_progress) << "Watch streams steps while the job runs";
  EXPECT_GT(done.total_steps(), 0u);
  EXPECT_EQ(done.report().members_size(), 2);
  EXPECT_GT(done.report().temperature(), 0.0f);
  EXPECT_GE(done.report().ensemble().accuracy(), 0.9f);
  EXPECT_EQ(done.train_examples() + done.validation_examples(), 80u);

  // The next Predict uses it.
  auto inference = loracle::v1::Inference::NewStub(channel_);
  loracle::v1::PredictRequest req;
  req.set_adapter("spam");
  req.add_inputs("the mail free money win now");
  req.add_inputs("the mail meeting please review invoice");
  loracle::v1::PredictResponse resp;
  grpc::ClientContext ctx;
  ASSERT_TRUE(inference->Predict(&ctx, req, &resp).ok());
  EXPECT_EQ(resp.version(), 1);
  EXPECT_EQ(resp.members(), 2u);
  EXPECT_EQ(resp.predictions(0).label(), "spam");
  EXPECT_EQ(resp.predictions(1).label(), "ham");
  EXPECT_EQ(resp.predictions(0).prediction_set_size(), 0) << "sets only when asked for";
  for (const loracle::v1::Prediction& p : resp.predictions()) {
    EXPECT_GT(p.uncertainty().ood_score(), 0) << "the job fitted an OOD detector";
  }

  // Get and List show it; the store holds the PEFT files and the report.
  grpc::ClientContext list_ctx;
  loracle::v1::ListJobsResponse list;
  ASSERT_TRUE(training_->List(&list_ctx, {}, &list).ok());
  ASSERT_EQ(list.jobs_size(), 1);
  EXPECT_EQ(list.jobs(0).state(), loracle::v1::JOB_STATE_SUCCEEDED);
  const std::string dir = server_->store().VersionDir("spam", 1);
  for (const char* f : {"loracle.json", "training_report.json",
                        "member-0/adapter_model.safetensors", "member-1/adapter_config.json"}) {
    EXPECT_FALSE(testing::ReadFile(dir + "/" + f).empty()) << f;
  }

  // The validation distribution travels with the adapter and is the drift reference.
  const nlohmann::json serving = nlohmann::json::parse(testing::ReadFile(dir + "/loracle.json"));
  EXPECT_EQ(serving["reference"]["examples"].get<int64_t>(), done.validation_examples());
  EXPECT_EQ(serving["reference"]["confidence"].size(), 15u);
  grpc::ClientContext cal_ctx;
  loracle::v1::OnlineCalibrationRequest cal_req;
  cal_req.set_adapter("spam");
  loracle::v1::OnlineCalibrationResponse cal;
  ASSERT_TRUE(inference->OnlineCalibration(&cal_ctx, cal_req, &cal).ok());
  ASSERT_EQ(cal.versions_size(), 1);
  EXPECT_EQ(cal.versions(0).predictions(), 2u);
  EXPECT_TRUE(cal.versions(0).has_psi_confidence());
  EXPECT_EQ(cal.versions(0).drift_reference(), "validation");

  // The published version's validation report and the job's duration are on /metrics.
  const std::string metrics = testing::HttpGet(server_->server().metrics_port(), "/metrics");
  EXPECT_NE(metrics.find(absl::StrFormat(
                "loracle_adapter_validation_examples{adapter=\"spam\",version=\"1\"} %d",
                done.validation_examples())),
            std::string::npos);
  const std::string ece_series = "loracle_adapter_validation_ece{adapter=\"spam\",version=\"1\"} ";
  const size_t ece_at = metrics.find(ece_series);
  ASSERT_NE(ece_at, std::string::npos);
  EXPECT_NEAR(std::stod(metrics.substr(ece_at + ece_series.size())),
              serving["validation"]["ece"].get<double>(), 1e-9);
  EXPECT_NEAR(serving["validation"]["ece"].get<double>(), done.report().calibrated().ece(), 1e-6);
  EXPECT_NE(metrics.find("loracle_training_job_duration_seconds_count{state=\"SUCCEEDED\"} 1"),
            std::string::npos);
  EXPECT_NE(metrics.find("loracle_training_jobs{state=\"SUCCEEDED\"} 1"), std::string::npos);

  // The job kept the validation texts' conformal scores: it serves prediction sets, and a set
  // at a higher coverage holds at least the labels of one at a lower coverage.
  ASSERT_EQ(serving["conformal"]["scores"].size(), done.validation_examples());
  // And the error score it chose on them, with every candidate's AURC in the report.
  EXPECT_EQ(serving["error_score"]["name"], done.report().error_score());
  EXPECT_EQ(serving["error_score"]["scores"].size(), done.validation_examples());
  ASSERT_EQ(done.report().error_score_candidates_size(), 5);
  EXPECT_EQ(done.report().error_score_candidates(0).bootstrap_wins(), 0.0f);
  for (const loracle::v1::ErrorScoreCandidate& c : done.report().error_score_candidates()) {
    EXPECT_GE(c.bootstrap_wins(), 0.0f);
    EXPECT_LE(c.bootstrap_wins(), 1.0f);
    if (c.name() == done.report().error_score() && c.name() != "one_minus_confidence") {
      EXPECT_GE(c.bootstrap_wins(), 0.95f) << "chosen over 1 - confidence only when it wins";
    }
  }
  EXPECT_EQ(serving["conformal"]["score"], "LAC");
  ASSERT_EQ(done.report().conformal_size(), 3);
  EXPECT_FLOAT_EQ(done.report().conformal(1).target(), 0.9f);
  EXPECT_GE(done.report().conformal(1).coverage(), 0.9f) << "its own calibration data";
  // The OOD detector: its statistics in loracle's own file beside the PEFT files, its threshold
  // in loracle.json and the report, its scores on /metrics.
  EXPECT_EQ(serving["ood"]["method"], "mahalanobis");
  EXPECT_EQ(serving["ood"]["quantile"].get<double>(), 0.95);
  EXPECT_FALSE(testing::ReadFile(dir + "/" + serving["ood"]["file"].get<std::string>()).empty());
  EXPECT_EQ(done.report().ood().method(), "mahalanobis");
  EXPECT_NEAR(done.report().ood().threshold(), serving["ood"]["threshold"].get<double>(),
              1e-5 * serving["ood"]["threshold"].get<double>());
  EXPECT_NE(metrics.find("loracle_prediction_ood_score_count{adapter=\"spam\",version=\"1\"} 2"),
            std::string::npos);
  int previous = 0;
  for (float coverage : {0.5f, 0.99f}) {
    req.set_coverage(coverage);
    grpc::ClientContext set_ctx;
    loracle::v1::PredictResponse sets;
    ASSERT_TRUE(inference->Predict(&set_ctx, req, &sets).ok());
    const int size = sets.predictions(0).prediction_set_size();
    EXPECT_GE(size, previous) << coverage;
    previous = size;
  }
  EXPECT_EQ(previous, 2) << "8 validation texts cannot support 99%: every label";
}

// A publish that runs out of room: the store on a 160 KiB tmpfs (ENOSPC; needs the right to
// mount, else skipped) or a process file-size limit of 64 KiB (EFBIG; always runs). A rank-4
// version fits, a rank-256 one does not: its job fails with RESOURCE_EXHAUSTED naming the path,
// no partial version is listed, the previous one keeps serving, and once there is room again the
// next job publishes.
class FullStoreTest : public TrainingTest, public ::testing::WithParamInterface<std::string> {
 protected:
  void TearDown() override {
    RestoreLimit();
    server_.reset();
    if (mounted_) ::umount2(store_dir_.path().c_str(), MNT_DETACH);
  }
  void RestoreLimit() {
    if (limited_) ::setrlimit(RLIMIT_FSIZE, &saved_);
    limited_ = false;
  }
  Job Train(int rank) {
    SubmitRequest r = Request("spam");
    r.mutable_lora()->set_rank(rank);
    r.set_epochs(1);
    r.set_max_steps(2);
    Job job;
    EXPECT_TRUE(Submit(r, &job).ok());
    return WatchToEnd(job.id());
  }
  loracle::v1::PredictResponse Predict() {
    loracle::v1::PredictRequest req;
    req.set_adapter("spam");
    req.add_inputs("the mail free money win now");
    loracle::v1::PredictResponse resp;
    grpc::ClientContext ctx;
    EXPECT_TRUE(loracle::v1::Inference::NewStub(channel_)->Predict(&ctx, req, &resp).ok());
    return resp;
  }

  testing::TempDir store_dir_;
  bool mounted_ = false, limited_ = false;
  rlimit saved_{};
};

TEST_P(FullStoreTest, AFailedPublishFailsTheJobAndKeepsThePreviousVersionServing) {
  const std::string root = store_dir_ / "store";
  if (GetParam() == "tmpfs") {
    if (::mount("tmpfs", store_dir_.path().c_str(), "tmpfs", 0, "size=160k") != 0) {
      GTEST_SKIP() << "cannot mount a tmpfs here: " << std::strerror(errno);
    }
    mounted_ = true;
  }
  Start([&](adapters::Store&, app::LoracleServer::Options& o) {
    o.adapters_dir = root;
    o.spam_demo = false;
  });
  const Job first = Train(4);
  ASSERT_EQ(first.state(), loracle::v1::JOB_STATE_SUCCEEDED) << first.error();
  const loracle::v1::PredictResponse before = Predict();
  ASSERT_EQ(before.version(), 1);

  if (GetParam() == "rlimit") {
    ::signal(SIGXFSZ, SIG_IGN);  // as loracle-server does: EFBIG instead of a kill
    ASSERT_EQ(::getrlimit(RLIMIT_FSIZE, &saved_), 0);
    rlimit small = saved_;
    small.rlim_cur = 64 << 10;
    ASSERT_EQ(::setrlimit(RLIMIT_FSIZE, &small), 0);
    limited_ = true;
  }
  const Job failed = Train(256);
  RestoreLimit();
  EXPECT_EQ(failed.state(), loracle::v1::JOB_STATE_FAILED);
  EXPECT_EQ(failed.error_code(), static_cast<int>(absl::StatusCode::kResourceExhausted))
      << failed.error();
  EXPECT_NE(failed.error().find(root + "/.tmp-spam-"), std::string::npos) << failed.error();
  EXPECT_EQ(failed.published_version(), 0);

  auto store = adapters::Store::Create({root});
  ASSERT_TRUE(store.ok());
  auto versions = (*store)->ListVersions("spam");
  ASSERT_TRUE(versions.ok()) << versions.status();
  EXPECT_EQ(*versions, std::vector<int64_t>{1});
  for (const auto& e : std::filesystem::directory_iterator(root)) {
    EXPECT_EQ(e.path().filename().string().rfind(".tmp-", 0), std::string::npos) << e.path();
  }
  const loracle::v1::PredictResponse after = Predict();
  EXPECT_EQ(after.version(), 1);
  ASSERT_EQ(after.predictions_size(), 1);
  EXPECT_EQ(after.predictions(0).probs(0), before.predictions(0).probs(0));

  const Job next = Train(4);
  EXPECT_EQ(next.state(), loracle::v1::JOB_STATE_SUCCEEDED) << next.error();
  EXPECT_EQ(next.published_version(), 2);
  EXPECT_EQ(Predict().version(), 2);
}

INSTANTIATE_TEST_SUITE_P(Limits, FullStoreTest, ::testing::Values("tmpfs", "rlimit"),
                         [](const auto& info) { return info.param; });

// The bundled SpamAssassin files, named server-side through --data_dir (a few steps: the numbers
// on real data are in tests/bench/README.md).
// Adapter <-> base identity: a published adapter records its base's fingerprint; moved to another
// base of the same shapes (another seed), it fails to load and is never served, naming both
// fingerprints; an external adapter without one loads, marked unverified.
TEST_F(TrainingTest, AnAdapterMovedToAnotherBaseOfTheSameShapesIsNeverServed) {
  Start();
  SubmitRequest r = Request("home");
  r.set_ensemble_members(1);
  r.set_epochs(2);
  Job job;
  ASSERT_TRUE(Submit(r, &job).ok());
  ASSERT_EQ(WatchToEnd(job.id()).state(), loracle::v1::JOB_STATE_SUCCEEDED);
  const std::string published = server_->store().VersionDir("home", 1);
  const nlohmann::json serving =
      nlohmann::json::parse(testing::ReadFile(published + "/loracle.json"));
  const std::string home_base = serving["base"]["fingerprint"].get<std::string>();
  EXPECT_EQ(home_base.rfind("lfp1-", 0), 0u) << home_base;
  EXPECT_EQ(serving["base"]["model_type"], "bert");
  auto adapters_a = loracle::v1::Adapters::NewStub(channel_);
  {
    grpc::ClientContext ctx;
    loracle::v1::GetAdapterRequest get;
    get.set_name("home");
    loracle::v1::AdapterInfo info;
    ASSERT_TRUE(adapters_a->Get(&ctx, get, &info).ok());
    EXPECT_EQ(info.base_fingerprint(), home_base);
    EXPECT_TRUE(info.base_verified());
  }
  testing::TempDir moved;
  std::filesystem::copy(published, moved.path() + "/home",
                        std::filesystem::copy_options::recursive);
  server_.reset();

  // Another server, on a base with the same shapes and other weights.
  Start([&](adapters::Store& store, app::LoracleServer::Options& o) {
    testing::WriteTinyModel(o.model_dir, /*seed=*/4);
    ASSERT_TRUE(store
                    .Publish("home",
                             [&](const std::string& dir) {
                               std::filesystem::copy(
                                   moved.path() + "/home", dir,
                                   std::filesystem::copy_options::recursive |
                                       std::filesystem::copy_options::overwrite_existing);
                               return absl::OkStatus();
                             })
                    .ok());
    ASSERT_TRUE(store
                    .Publish("external",
                             [](const std::string& dir) {
                               return adapters::WriteRandomAdapter(
                                   dir, testing::TinyConfig(),
                                   testing::TinyAdapterSpec({"no", "yes"}, 1, 9));
                             })
                    .ok());
  });
  auto adapters_b = loracle::v1::Adapters::NewStub(channel_);
  auto inference = loracle::v1::Inference::NewStub(channel_);
  auto get = [&](const std::string& name) {
    grpc::ClientContext ctx;
    loracle::v1::GetAdapterRequest req;
    req.set_name(name);
    loracle::v1::AdapterInfo info;
    EXPECT_TRUE(adapters_b->Get(&ctx, req, &info).ok()) << name;
    return info;
  };
  auto predict = [&](const std::string& name) {
    grpc::ClientContext ctx;
    loracle::v1::PredictRequest req;
    req.set_adapter(name);
    req.add_inputs("the mail free money win now");
    loracle::v1::PredictResponse resp;
    return inference->Predict(&ctx, req, &resp);
  };
  const loracle::v1::AdapterInfo home = get("home");
  EXPECT_EQ(home.state(), loracle::v1::ADAPTER_STATE_FAILED);
  EXPECT_FALSE(home.base_verified());
  EXPECT_NE(home.error().find(home_base), std::string::npos) << home.error();
  EXPECT_NE(home.error().find("lfp1-"), home.error().rfind("lfp1-"))
      << "names the serving base's fingerprint too: " << home.error();
  EXPECT_NE(home.error().find("Retrain"), std::string::npos) << home.error();
  const grpc::Status served = predict("home");
  EXPECT_EQ(served.error_code(), grpc::StatusCode::FAILED_PRECONDITION) << served.error_message();
  {
    grpc::ClientContext ctx;
    loracle::v1::LoadAdapterRequest load;
    load.set_name("home");
    loracle::v1::AdapterInfo info;
    const grpc::Status s = adapters_b->Load(&ctx, load, &info);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION) << s.error_message();
    EXPECT_NE(s.error_message().find(home_base), std::string::npos) << s.error_message();
  }
  // The server stays up for the adapters that do load; one without a fingerprint is unchecked.
  const loracle::v1::AdapterInfo external = get("external");
  EXPECT_EQ(external.state(), loracle::v1::ADAPTER_STATE_READY);
  EXPECT_TRUE(external.base_fingerprint().empty());
  EXPECT_FALSE(external.base_verified());
  EXPECT_TRUE(predict("external").ok());

  // Retrained on this base, the same name serves again.
  ASSERT_TRUE(Submit(r, &job).ok());
  ASSERT_EQ(WatchToEnd(job.id()).state(), loracle::v1::JOB_STATE_SUCCEEDED);
  const loracle::v1::AdapterInfo retrained = get("home");
  EXPECT_EQ(retrained.state(), loracle::v1::ADAPTER_STATE_READY);
  EXPECT_TRUE(retrained.base_verified());
  EXPECT_NE(retrained.base_fingerprint(), home_base);
  EXPECT_TRUE(predict("home").ok());
}

TEST_F(TrainingTest, BundledDataThroughTheDataDirectory) {
  Start([](adapters::Store&, app::LoracleServer::Options& o) {
    o.training.data_dir = std::string(LORACLE_SOURCE_DIR) + "/tests/data/spam-assassin";
  });
  SubmitRequest r;
  r.set_adapter("mail");
  r.set_data_path("train.jsonl");
  r.set_validation_path("validation.jsonl");
  r.set_max_steps(3);
  r.set_max_length(48);
  Job job;
  ASSERT_TRUE(Submit(r, &job).ok());
  const Job done = WatchToEnd(job.id());
  ASSERT_EQ(done.state(), loracle::v1::JOB_STATE_SUCCEEDED) << done.error();
  EXPECT_EQ(done.train_examples(), 1399u);
  EXPECT_EQ(done.validation_examples(), 200u);
  EXPECT_EQ(done.step(), 3u);
  EXPECT_EQ(done.report().examples(), 200u);
  auto inference = loracle::v1::Inference::NewStub(channel_);
  loracle::v1::PredictRequest req;
  req.set_adapter("mail");
  req.add_inputs("Get your free money now");
  loracle::v1::PredictResponse resp;
  grpc::ClientContext ctx;
  ASSERT_TRUE(inference->Predict(&ctx, req, &resp).ok());
  EXPECT_EQ(resp.version(), 1);
  EXPECT_EQ(resp.mc_samples(), 1u) << "no dropout by default: independently trained members";
  EXPECT_GE(resp.members(), 1u);
  EXPECT_LE(resp.members(), 4u) << "up to 4 members by default, the ones that pay kept";
  EXPECT_EQ(done.report().members_trained(), 4u);
  EXPECT_EQ(done.report().ensemble_nll_by_members_size(), 4);
  EXPECT_EQ(done.report().members_kept(), resp.members());
}

// The words that decide the label come after 12 neutral tokens, windows hold 6: trained and
// served in windows, the adapter reads them; the windows travel with the adapter (loracle.json).
TEST_F(TrainingTest, LongTextsTrainAndServeInWindows) {
  Start();
  SubmitRequest r = Request("long");
  const std::string filler = "good bad movie cafe naive you good bad movie cafe naive you ";
  for (auto& e : *r.mutable_examples()) e.set_text(filler + e.text());
  r.set_max_length(8);
  r.set_max_windows(4);
  r.set_epochs(8);
  Job job;
  ASSERT_TRUE(Submit(r, &job).ok());
  const Job done = WatchToEnd(job.id());
  ASSERT_EQ(done.state(), loracle::v1::JOB_STATE_SUCCEEDED) << done.error();
  EXPECT_GE(done.report().ensemble().accuracy(), 0.9f);

  auto adapters = loracle::v1::Adapters::NewStub(channel_);
  {
    grpc::ClientContext ctx;
    loracle::v1::GetAdapterRequest get;
    get.set_name("long");
    loracle::v1::AdapterInfo info;
    ASSERT_TRUE(adapters->Get(&ctx, get, &info).ok());
    EXPECT_EQ(info.max_windows(), 4u);
    EXPECT_EQ(info.window_length(), 8u);
  }
  auto inference = loracle::v1::Inference::NewStub(channel_);
  loracle::v1::PredictRequest req;
  req.set_adapter("long");
  req.add_inputs(filler + "the mail free money win now");  // 18 tokens: 3 windows of 6
  req.add_inputs(filler + "the mail please review the invoice");
  req.add_inputs(filler + filler + filler);  // 36 tokens: the first 24 in 4 windows
  req.add_inputs("hello");
  loracle::v1::PredictResponse resp;
  grpc::ClientContext ctx;
  grpc::Status s = inference->Predict(&ctx, req, &resp);
  ASSERT_TRUE(s.ok()) << s.error_message();
  ASSERT_EQ(resp.predictions_size(), 4);
  EXPECT_EQ(resp.predictions(0).label(), "spam");
  EXPECT_EQ(resp.predictions(1).label(), "ham");
  EXPECT_EQ(resp.predictions(0).windows(), 3u);
  EXPECT_EQ(resp.predictions(0).num_tokens(), 24u);
  EXPECT_FALSE(resp.predictions(0).truncated());
  EXPECT_EQ(resp.predictions(2).windows(), 4u);
  EXPECT_TRUE(resp.predictions(2).truncated());
  EXPECT_EQ(resp.predictions(3).windows(), 1u);
  EXPECT_EQ(resp.predictions(3).num_tokens(), 3u);

  r.set_max_windows(65);
  grpc::ClientContext bad_ctx;
  s = training_->Submit(&bad_ctx, r, &job);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(s.error_message().find("max_windows"), std::string::npos) << s.error_message();
}

// train_windows = 1: the weights train on each text's first window, exactly as an adapter
// that cuts texts (byte-identical members, same seed), while validation and serving read
// max_windows windows.
TEST_F(TrainingTest, TrainWindowsTrainsOnTheFirstWindowWhileServingReadsAll) {
  Start();
  const std::string filler = " good bad movie cafe naive you good bad movie cafe naive you";
  auto request = [&](const std::string& name) {
    SubmitRequest r = Request(name);
    for (auto& e : *r.mutable_examples()) e.set_text(e.text() + filler);
    r.set_max_length(8);
    // The two validations differ (1 vs 4 windows) and choose the epoch kept: this recipe's best
    // epoch is the last for both (query/value, every epoch run).
    r.mutable_optimizer()->set_patience(100);
    r.mutable_lora()->add_target_modules("query");
    r.mutable_lora()->add_target_modules("value");
    return r;
  };
  SubmitRequest cut = request("cut");
  SubmitRequest first = request("first");
  first.set_max_windows(4);
  first.set_train_windows(1);
  std::vector<Job> done;
  for (const SubmitRequest& r : {cut, first}) {
    Job job;
    ASSERT_TRUE(Submit(r, &job).ok());
    done.push_back(WatchToEnd(job.id()));
    ASSERT_EQ(done.back().state(), loracle::v1::JOB_STATE_SUCCEEDED) << done.back().error();
  }
  for (const char* member : {"member-0", "member-1"}) {
    const std::string file = std::string("/") + member + "/adapter_model.safetensors";
    const std::string a = testing::ReadFile(server_->store().VersionDir("cut", 1) + file);
    const std::string b = testing::ReadFile(server_->store().VersionDir("first", 1) + file);
    ASSERT_FALSE(a.empty()) << file;
    EXPECT_TRUE(a == b) << member << ": train_windows=1 must train as one window does";
  }
  EXPECT_NE(done[0].report().ensemble().nll(), done[1].report().ensemble().nll())
      << "validation reads 4 windows for `first`, one for `cut`";

  auto inference = loracle::v1::Inference::NewStub(channel_);
  loracle::v1::PredictRequest req;
  req.set_adapter("first");
  req.add_inputs("the mail free money win now" + filler);  // 18 tokens: 3 windows of 6
  loracle::v1::PredictResponse resp;
  grpc::ClientContext ctx;
  ASSERT_TRUE(inference->Predict(&ctx, req, &resp).ok());
  ASSERT_EQ(resp.predictions_size(), 1);
  EXPECT_EQ(resp.predictions(0).windows(), 3u);

  for (auto [max_windows, train_windows] : {std::pair{4u, 5u}, std::pair{0u, 2u}}) {
    SubmitRequest bad = request("bad");
    bad.set_max_windows(max_windows);
    bad.set_train_windows(train_windows);
    grpc::ClientContext bad_ctx;
    Job job;
    grpc::Status s = training_->Submit(&bad_ctx, bad, &job);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << max_windows;
    EXPECT_NE(s.error_message().find("train_windows"), std::string::npos) << s.error_message();
  }
}

TEST_F(TrainingTest, BadRequestsAreRefusedWithPreciseStatuses) {
  Start();
  Job job;
  SubmitRequest r = Request("x");
  r.add_labels("ham");
  r.add_labels("eggs");
  grpc::Status s = Submit(r, &job);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(s.error_message().find("\"spam\", which is not one of the labels"), std::string::npos)
      << s.error_message();

  r = Request("x");
  r.add_labels("ham");
  r.add_labels("spam");
  r.add_labels("eggs");
  s = Submit(r, &job);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(s.error_message(), "class \"eggs\" has no examples");

  r = Request("x");
  r.clear_examples();
  s = Submit(r, &job);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << "empty data";

  r = Request("x");
  r.clear_examples();
  r.set_data_path("train.jsonl");
  s = Submit(r, &job);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED) << "no --data_dir";
  EXPECT_NE(s.error_message().find("--data_dir"), std::string::npos);

  r = Request("../evil");
  EXPECT_EQ(Submit(r, &job).error_code(), grpc::StatusCode::INVALID_ARGUMENT);

  grpc::ClientContext ctx;
  loracle::v1::GetJobRequest get;
  get.set_id("job-none");
  EXPECT_EQ(training_->Get(&ctx, get, &job).error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_FALSE(server_->store().LatestVersion("x").ok()) << "nothing published";
}

TEST_F(TrainingTest, ServerSideFilesStayInsideTheDataDirAndBadLinesNameTheirLine) {
  testing::TempDir data, outside;
  testing::WriteFile(data / "bad.jsonl",
                     "{\"text\": \"free money\", \"label\": \"spam\"}\n{\"text\": \"oops\"}\n");
  testing::WriteFile(outside / "secret.jsonl", "");
  Start(
      [&](adapters::Store&, app::LoracleServer::Options& o) { o.training.data_dir = data.path(); });
  Job job;
  SubmitRequest r = Request("filed");
  r.clear_examples();
  r.set_data_path(outside / "secret.jsonl");
  EXPECT_EQ(Submit(r, &job).error_code(), grpc::StatusCode::PERMISSION_DENIED);
  r.set_data_path("../" + outside.path() + "/secret.jsonl");
  EXPECT_EQ(Submit(r, &job).error_code(), grpc::StatusCode::PERMISSION_DENIED);

  r.set_data_path("bad.jsonl");
  ASSERT_TRUE(Submit(r, &job).ok());
  const Job done = WatchToEnd(job.id());
  EXPECT_EQ(done.state(), loracle::v1::JOB_STATE_FAILED);
  EXPECT_NE(done.error().find("bad.jsonl:2: missing field \"label\""), std::string::npos)
      << done.error();
  EXPECT_FALSE(server_->store().LatestVersion("filed").ok()) << "nothing published";
}

TEST_F(TrainingTest, CancelAndFullQueue) {
  Start([](adapters::Store&, app::LoracleServer::Options& o) { o.max_queued_jobs = 1; });
  SubmitRequest slow = Request("slow");
  slow.set_epochs(200);  // far longer than the test
  Job running, queued, refused;
  ASSERT_TRUE(Submit(slow, &running).ok());
  // Wait until it runs, so the next one is the only queued job.
  for (int i = 0; i < 600; ++i) {
    grpc::ClientContext ctx;
    loracle::v1::GetJobRequest get;
    get.set_id(running.id());
    Job j;
    ASSERT_TRUE(training_->Get(&ctx, get, &j).ok());
    if (j.state() == loracle::v1::JOB_STATE_RUNNING) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ASSERT_TRUE(Submit(Request("next"), &queued).ok());
  EXPECT_EQ(Submit(Request("third"), &refused).error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  for (const std::string& id : {queued.id(), running.id()}) {
    grpc::ClientContext ctx;
    loracle::v1::GetJobRequest req;
    req.set_id(id);
    Job j;
    ASSERT_TRUE(training_->Cancel(&ctx, req, &j).ok());
  }
  EXPECT_EQ(WatchToEnd(queued.id()).state(), loracle::v1::JOB_STATE_CANCELLED);
  EXPECT_EQ(WatchToEnd(running.id()).state(), loracle::v1::JOB_STATE_CANCELLED);
  EXPECT_FALSE(server_->store().LatestVersion("slow").ok()) << "nothing published";
  EXPECT_FALSE(server_->store().LatestVersion("next").ok());
}

// SIGTERM while a client watches a long job: the stream ends with UNAVAILABLE at once instead of
// holding the drain for the whole grace period, and the job goes back to the queue.
TEST_F(TrainingTest, ShutdownEndsWatchStreamsInsteadOfWaitingForThem) {
  testing::TempDir jobs_dir;
  Start([&](adapters::Store&, app::LoracleServer::Options& o) { o.jobs_dir = jobs_dir.path(); });
  SubmitRequest slow = Request("slow");
  slow.set_epochs(200);  // far longer than the test
  Job job;
  ASSERT_TRUE(Submit(slow, &job).ok());
  grpc::ClientContext ctx;
  loracle::v1::GetJobRequest req;
  req.set_id(job.id());
  auto reader = training_->Watch(&ctx, req);
  Job seen;
  while (reader->Read(&seen) && seen.step() == 0) {
  }
  ASSERT_EQ(seen.state(), loracle::v1::JOB_STATE_RUNNING);
  const auto start = std::chrono::steady_clock::now();
  std::thread stop([&] { server_->server().Shutdown(absl::Seconds(120)); });
  while (reader->Read(&seen)) {
  }
  const grpc::Status status = reader->Finish();
  stop.join();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE) << status.error_message();
  EXPECT_NE(status.error_message().find("shutting down"), std::string::npos);
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(60))
      << "the drain must not wait out the 120 s grace for a Watch stream";
  server_.reset();
  EXPECT_NE(
      testing::ReadFile(jobs_dir.path() + "/" + job.id() + "/job.json").find("JOB_STATE_QUEUED"),
      std::string::npos)
      << "a job interrupted by a graceful shutdown is queued again";
}

// A restart over real gRPC: jobs queued on a serving-only replica survive it; the one whose record
// says RUNNING (a crash mid-run) comes back FAILED, the queued one runs to SUCCEEDED.
TEST_F(TrainingTest, RestartKeepsQueuedJobsAndFailsTheOneThatWasRunning) {
  testing::TempDir jobs_dir;
  Start([&](adapters::Store&, app::LoracleServer::Options& o) {
    o.jobs_dir = jobs_dir.path();
    o.training_workers = 0;  // queue only: nothing runs before the "crash"
  });
  Job crashed, queued;
  ASSERT_TRUE(Submit(Request("first"), &crashed).ok());
  ASSERT_TRUE(Submit(Request("second"), &queued).ok());
  server_.reset();
  const std::string record = jobs_dir.path() + "/" + crashed.id() + "/job.json";
  std::string json = testing::ReadFile(record);
  json.replace(json.find("JOB_STATE_QUEUED"), 16, "JOB_STATE_RUNNING");
  testing::WriteFile(record, json);

  Start([&](adapters::Store&, app::LoracleServer::Options& o) { o.jobs_dir = jobs_dir.path(); });
  const Job failed = WatchToEnd(crashed.id());
  EXPECT_EQ(failed.state(), loracle::v1::JOB_STATE_FAILED);
  EXPECT_EQ(failed.error(), "server restarted during training");
  const Job done = WatchToEnd(queued.id());
  EXPECT_EQ(done.state(), loracle::v1::JOB_STATE_SUCCEEDED) << done.error();
  EXPECT_EQ(done.published_version(), 1);
  EXPECT_FALSE(server_->store().LatestVersion("first").ok()) << "nothing published for it";
}

// The CLI end to end: a local JSONL file uploaded, progress, the report table; then jobs list.
TEST_F(TrainingTest, CliFinetuneUploadsAFileAndPrintsTheReport) {
  Start();
  testing::TempDir dir;
  SubmitRequest examples;
  AddExamples(&examples, 60, 3);
  std::string jsonl;
  for (const auto& e : examples.examples()) {
    jsonl += "{\"text\": \"" + e.text() + "\", \"label\": \"" + e.label() + "\"}\n";
  }
  testing::WriteFile(dir / "train.jsonl", jsonl);
  std::ostringstream out, err;
  const int rc = client::RunCli({"--server=" + server_->address(), "finetune", "--name=cli",
                                 "--data=" + (dir / "train.jsonl"), "--members=2", "--epochs=3",
                                 "--batch_size=8", "--lr=0.01", "--rank=4"},
                                out, err);
  EXPECT_EQ(rc, 0) << err.str() << out.str();
  EXPECT_NE(out.str().find("SUCCEEDED"), std::string::npos) << out.str();
  EXPECT_NE(out.str().find("-> cli v1"), std::string::npos) << out.str();
  EXPECT_NE(out.str().find("calibrated (T="), std::string::npos) << out.str();
  EXPECT_NE(out.str().find("member 1"), std::string::npos) << out.str();

  std::ostringstream list, list_err;
  EXPECT_EQ(client::RunCli({"--server=" + server_->address(), "jobs", "list"}, list, list_err), 0);
  EXPECT_NE(list.str().find("cli"), std::string::npos) << list.str();

  std::ostringstream bad_out, bad_err;
  EXPECT_EQ(client::RunCli({"--server=" + server_->address(), "finetune", "--name=x",
                            "--data=" + (dir / "missing.jsonl")},
                           bad_out, bad_err),
            2);
  EXPECT_NE(bad_err.str().find("missing.jsonl"), std::string::npos) << bad_err.str();
}

// The first-start job carries the whole embedded split, passes Submit's checks, and is submitted
// once: not again while it is queued, not when the store has the adapter.
TEST(SpamDemoTest, EmbeddedDataAndSubmittedOnce) {
  const SubmitRequest r = app::SpamDemoRequest();
  EXPECT_EQ(r.examples_size(), 1399);
  EXPECT_EQ(r.validation_examples_size(), 200);
  EXPECT_TRUE(rpc::ValidateSubmit(r, {}).ok()) << rpc::ValidateSubmit(r, {});
  testing::TempDir jobs_dir, store_dir;
  auto jobs = *training::JobQueue::Create({jobs_dir.path(), 0, 4, nullptr});
  auto store = *adapters::Store::Create({store_dir.path()});
  ASSERT_TRUE(app::SubmitSpamDemoIfNeeded(*jobs, *store, "lfp1-aaaaaaaaaaaaaaaa").ok());
  ASSERT_TRUE(app::SubmitSpamDemoIfNeeded(*jobs, *store, "lfp1-aaaaaaaaaaaaaaaa").ok());
  std::string next;
  EXPECT_EQ(jobs->List(10, "", &next)->size(), 1u);
}

// A cached "spam" is kept on the base it was trained on and retrained on any other (an upgrade
// that changed the built-in model), or when it records none.
TEST(SpamDemoTest, ACachedAdapterOfAnotherBaseIsRetrained) {
  for (const std::string recorded : {"lfp1-aaaaaaaaaaaaaaaa", "lfp1-bbbbbbbbbbbbbbbb", ""}) {
    testing::TempDir jobs_dir, store_dir;
    auto jobs = *training::JobQueue::Create({jobs_dir.path(), 0, 4, nullptr});
    auto store = *adapters::Store::Create({store_dir.path()});
    adapters::ServingConfig serving;
    serving.labels = {"ham", "spam"};
    serving.base.fingerprint = recorded;
    ASSERT_TRUE(store
                    ->Publish(app::kSpamDemoAdapter,
                              [&](const std::string& dir) {
                                testing::WriteFile(dir + "/loracle.json",
                                                   adapters::ServingConfigToJson(serving));
                                return absl::OkStatus();
                              })
                    .ok());
    ASSERT_TRUE(app::SubmitSpamDemoIfNeeded(*jobs, *store, "lfp1-aaaaaaaaaaaaaaaa").ok());
    std::string next;
    EXPECT_EQ(jobs->List(10, "", &next)->size(), recorded == "lfp1-aaaaaaaaaaaaaaaa" ? 0u : 1u)
        << "recorded: " << recorded;
  }
}

}  // namespace
}  // namespace loracle
