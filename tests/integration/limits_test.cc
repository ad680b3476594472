// Every request limit of the server, over real gRPC on loopback, with the limits set small: the
// precise status, a message naming the flag, and nothing stored or queued for a rejected call.

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "loracle/v1/adapters.grpc.pb.h"
#include "loracle/v1/inference.grpc.pb.h"
#include "loracle/v1/training.grpc.pb.h"
#include "tests/support/test_server.h"
#include "tests/support/test_util.h"

namespace loracle {
namespace {

// Every file under `root` with its size and modification time: equal snapshots mean nothing was
// written, replaced or removed.
std::map<std::string, std::pair<uintmax_t, int64_t>> Snapshot(const std::string& root) {
  std::map<std::string, std::pair<uintmax_t, int64_t>> out;
  for (const auto& e : std::filesystem::recursive_directory_iterator(root)) {
    const int64_t mtime = e.last_write_time().time_since_epoch().count();
    out[e.path().string()] = {e.is_regular_file() ? e.file_size() : 0, mtime};
  }
  return out;
}

class LimitsTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    data_dir_ = new testing::TempDir();
    adapters::RandomAdapterSpec ens = testing::TinyAdapterSpec({"neg", "pos"}, 2, 5);
    ens.serving.mc_samples = 8;  // 2 members x 8 samples = 16 passes, past the bound of 12
    ens.serving.dropout = model::DropoutSpec{model::DropoutMethod::kLoraDropout, 0.1};
    auto t = testing::TestServer::Start(
        {{"one", testing::TinyAdapterSpec({"neg", "pos"}, 1, 1)}, {"ens", ens}},
        [](adapters::Store&, app::LoracleServer::Options& o) {
          o.max_message_bytes = 64 << 10;
          o.inference.max_inputs_per_request = 4;
          o.inference.max_input_bytes = 256;
          o.inference.max_mc_samples = 8;
          o.inference.max_passes_per_request = 12;
          o.inference.max_feedback_items = 3;
          o.training.data_dir = data_dir_->path();
          o.training.limits.max_examples = 50;
          o.training.limits.max_bytes = 4000;
          o.training.limits.max_labels = 3;
          o.training.limits.max_label_bytes = 8;
          o.training.max_members = 2;
          o.training.max_mc_samples = 8;
          o.training.max_watch_streams = 2;
          o.max_queued_jobs = 1;
          o.training_workers = 0;  // jobs stay QUEUED: the queue bound and Watch streams hold
          o.spam_demo = false;
        });
    ASSERT_NE(t, nullptr);
    server_ = t.release();
  }
  static void TearDownTestSuite() {
    delete server_;
    delete data_dir_;
  }

  static grpc::Status Predict(const v1::PredictRequest& r, v1::PredictResponse* out = nullptr) {
    v1::PredictResponse ignored;
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    return v1::Inference::NewStub(server_->NewChannel())
        ->Predict(&ctx, r, out != nullptr ? out : &ignored);
  }
  static grpc::Status Submit(const v1::SubmitRequest& r, v1::Job* out = nullptr) {
    v1::Job ignored;
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    return v1::Training::NewStub(server_->NewChannel())
        ->Submit(&ctx, r, out != nullptr ? out : &ignored);
  }
  // A valid job: 8 examples of two classes.
  static v1::SubmitRequest Job(const std::string& adapter = "new") {
    v1::SubmitRequest r;
    r.set_adapter(adapter);
    for (int i = 0; i < 8; ++i) {
      v1::Example* e = r.add_examples();
      e->set_text(absl::StrCat("example text ", i));
      e->set_label(i % 2 ? "pos" : "neg");
    }
    return r;
  }
  static void ExpectRejected(const grpc::Status& s, grpc::StatusCode code,
                             const std::string& says) {
    EXPECT_EQ(s.error_code(), code) << s.error_message();
    EXPECT_NE(s.error_message().find(says), std::string::npos) << s.error_message();
  }

  static testing::TempDir* data_dir_;
  static testing::TestServer* server_;
};
testing::TempDir* LimitsTest::data_dir_ = nullptr;
testing::TestServer* LimitsTest::server_ = nullptr;

TEST_F(LimitsTest, PredictBoundsHaveStatusesThatNameTheirFlags) {
  v1::PredictRequest ok;
  ok.set_adapter("one");
  ok.add_inputs("a short text");
  ASSERT_TRUE(Predict(ok).ok());

  v1::PredictRequest r = ok;
  for (int i = 0; i < 4; ++i) r.add_inputs("more");  // 5 inputs, the bound is 4
  ExpectRejected(Predict(r), grpc::StatusCode::INVALID_ARGUMENT, "the limit per request is 4");

  r = ok;
  r.set_inputs(0, std::string(257, 'a'));
  ExpectRejected(Predict(r), grpc::StatusCode::INVALID_ARGUMENT, "inputs[0] is 257 bytes");
  r = ok;
  r.add_text_pairs(std::string(257, 'b'));
  ExpectRejected(Predict(r), grpc::StatusCode::INVALID_ARGUMENT, "text_pairs[0] is 257 bytes");
  r = ok;
  r.add_inputs("second");
  r.add_text_pairs("only one pair");
  ExpectRejected(Predict(r), grpc::StatusCode::INVALID_ARGUMENT, "must be empty or match");

  r = ok;
  r.set_mc_samples(9);
  ExpectRejected(Predict(r), grpc::StatusCode::INVALID_ARGUMENT, "mc_samples must be in [1, 8]");

  // members x samples: the ensemble's own default of 2 x 8 is past 12; 2 x 6 is within.
  r = ok;
  r.set_adapter("ens");
  ExpectRejected(Predict(r), grpc::StatusCode::INVALID_ARGUMENT, "--max_passes_per_request");
  r.set_mc_samples(6);
  EXPECT_TRUE(Predict(r).ok());
}

TEST_F(LimitsTest, AMessagePastTheGrpcBoundIsResourceExhaustedAndTheServerGoesOn) {
  v1::PredictRequest r;
  r.set_adapter("one");
  r.add_inputs(std::string(70 << 10, 'a'));  // 70 KiB > --max_message_bytes of 64 KiB
  const grpc::Status s = Predict(r);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << s.error_message();
  r.set_inputs(0, "fine");
  EXPECT_TRUE(Predict(r).ok());
}

TEST_F(LimitsTest, FeedbackItemsAreBounded) {
  v1::FeedbackRequest r;
  for (int i = 0; i < 4; ++i) {
    v1::FeedbackItem* item = r.add_items();
    item->set_prediction_id(absl::StrCat("id", i));
    item->set_true_label("pos");
  }
  v1::FeedbackResponse resp;
  grpc::ClientContext ctx;
  ExpectRejected(v1::Inference::NewStub(server_->NewChannel())->Feedback(&ctx, r, &resp),
                 grpc::StatusCode::INVALID_ARGUMENT, "the limit per call is 3");
}

TEST_F(LimitsTest, RejectedSubmitsAndLoadsStoreAndQueueNothing) {
  const std::string store_root = server_->store().root();
  const auto store_before = Snapshot(store_root);
  testing::WriteFile(data_dir_->path() + "/big.jsonl",
                     std::string(4001, '\n'));  // 4001 bytes, past --max_dataset_bytes

  struct Case {
    std::string what;
    v1::SubmitRequest request;
    std::string says;
  };
  std::vector<Case> cases;
  {
    v1::SubmitRequest r = Job();
    for (int i = 0; i < 43; ++i) *r.add_examples() = r.examples(i % 8);  // 51 examples
    cases.push_back({"examples", r, "--max_examples_per_job"});
  }
  {
    v1::SubmitRequest r = Job();
    r.mutable_examples(0)->set_text(std::string(4000, 'x'));
    cases.push_back({"inline bytes", r, "--max_dataset_bytes"});
  }
  {
    v1::SubmitRequest r = Job();
    r.clear_examples();
    r.set_data_path("big.jsonl");
    cases.push_back({"file bytes", r, "--max_dataset_bytes"});
  }
  {
    v1::SubmitRequest r = Job();
    for (int i = 0; i < 4; ++i) r.mutable_examples(i)->set_label(absl::StrCat("c", i));
    cases.push_back({"distinct labels", r, "--max_labels"});
  }
  {
    v1::SubmitRequest r = Job();
    for (const char* l : {"neg", "pos", "a", "b"}) r.add_labels(l);
    cases.push_back({"requested labels", r, "--max_labels"});
  }
  {
    v1::SubmitRequest r = Job();
    for (int i = 0; i < 8; i += 2) r.mutable_examples(i)->set_label("negative!");  // 9 bytes
    cases.push_back({"label bytes", r, "--max_label_bytes"});
  }
  {
    v1::SubmitRequest r = Job();
    r.set_ensemble_members(3);
    cases.push_back({"members", r, "ensemble_members must be in [1, 2]"});
  }
  {
    v1::SubmitRequest r = Job();
    r.set_mc_samples(9);
    cases.push_back({"mc_samples", r, "mc_samples must be in [1, 8]"});
  }
  for (const std::string& name :
       {std::string(""), std::string("../escape"), std::string("a/b"), std::string(".hidden"),
        std::string("-flag"), std::string(65, 'n'), std::string("caf\xc3\xa9"),
        std::string("sp ace"), std::string("..")}) {
    cases.push_back({"name '" + name + "'", Job(name), "adapter"});
  }
  for (const Case& c : cases) {
    SCOPED_TRACE(c.what);
    ExpectRejected(Submit(c.request), grpc::StatusCode::INVALID_ARGUMENT, c.says);
  }

  // Adapters.Load with a name that could leave the store.
  for (const std::string& name :
       std::vector<std::string>{"../one", "one/..", "/etc", std::string(65, 'n')}) {
    v1::LoadAdapterRequest load;
    load.set_name(name);
    v1::AdapterInfo info;
    grpc::ClientContext ctx;
    const grpc::Status s = v1::Adapters::NewStub(server_->NewChannel())->Load(&ctx, load, &info);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT)
        << name << ": " << s.error_message();
  }

  v1::ListJobsResponse jobs;
  grpc::ClientContext ctx;
  ASSERT_TRUE(
      v1::Training::NewStub(server_->NewChannel())->List(&ctx, v1::ListJobsRequest(), &jobs).ok());
  for (const v1::Job& j : jobs.jobs()) EXPECT_NE(j.adapter(), "new");
  EXPECT_EQ(Snapshot(store_root), store_before);
}

TEST_F(LimitsTest, QueuedJobsAndWatchStreamsAreBoundedAndFreedSlotsAreReused) {
  v1::Job queued;
  ASSERT_TRUE(Submit(Job("queued"), &queued).ok());
  EXPECT_EQ(queued.state(), v1::JOB_STATE_QUEUED);
  ExpectRejected(Submit(Job("second")), grpc::StatusCode::RESOURCE_EXHAUSTED, "--max_queued_jobs");

  // Two streams stay open on the queued job; a third is refused; closing one frees its slot.
  auto stub = v1::Training::NewStub(server_->NewChannel());
  v1::GetJobRequest get;
  get.set_id(queued.id());
  struct Stream {
    grpc::ClientContext ctx;
    std::unique_ptr<grpc::ClientReader<v1::Job>> reader;
  };
  std::vector<std::unique_ptr<Stream>> open;
  for (int i = 0; i < 2; ++i) {
    auto s = std::make_unique<Stream>();
    s->reader = stub->Watch(&s->ctx, get);
    v1::Job first;
    ASSERT_TRUE(s->reader->Read(&first));  // the stream is live: it sent the job's state
    EXPECT_EQ(first.id(), queued.id());
    open.push_back(std::move(s));
  }
  auto refused = [&] {
    grpc::ClientContext ctx;
    auto reader = stub->Watch(&ctx, get);
    v1::Job j;
    while (reader->Read(&j)) {
    }
    return reader->Finish();
  };
  ExpectRejected(refused(), grpc::StatusCode::RESOURCE_EXHAUSTED, "--max_watch_streams");

  open[0]->ctx.TryCancel();
  open[0]->reader->Finish();
  open.erase(open.begin());
  // The server frees the slot when its reactor is done, just after the client sees the end.
  grpc::Status again;
  for (int i = 0; i < 100; ++i) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(300));
    auto reader = stub->Watch(&ctx, get);
    v1::Job j;
    const bool live = reader->Read(&j);
    ctx.TryCancel();
    again = reader->Finish();
    if (live) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_NE(again.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << again.error_message();
  for (auto& s : open) {
    s->ctx.TryCancel();
    s->reader->Finish();
  }

  grpc::ClientContext cancel_ctx;
  v1::Job cancelled;
  ASSERT_TRUE(stub->Cancel(&cancel_ctx, get, &cancelled).ok());
}

}  // namespace
}  // namespace loracle
