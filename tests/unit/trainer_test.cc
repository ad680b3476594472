#include "server/training/trainer.h"

#include <gtest/gtest.h>
#include <sched.h>
#include <torch/torch.h>

#include <random>
#include <string>
#include <vector>

#include "server/adapters/adapter_weights.h"
#include "server/model/checkpoint.h"
#include "server/model/cpu_runtime.h"
#include "tests/support/test_util.h"

// The trainer on the tiny model and a task its vocabulary can express: mails that mention
// money-words are "spam". No accuracy thresholds beyond "learns a separable task"; the numbers on
// real data are in tests/bench/README.md.
namespace loracle::training {
namespace {

class TrainerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    model::SetComputeThreads({2, 1});
    dir_ = new testing::TempDir();
    testing::WriteTinyModel(dir_->path(), 5);
    base_ = model::LoadBaseModel(dir_->path())->release();
  }
  static void TearDownTestSuite() {
    delete base_;
    delete dir_;
  }

  static EncodedData Data(int n, uint64_t seed) {
    EncodedData d;
    for (const auto& [text, label] : testing::SpamHamTexts(n, seed)) {
      d.inputs.push_back(*base_->tokenizer->Encode(text, std::nullopt, 32));
      d.labels.push_back(label);
    }
    return d;
  }

  static TrainerOptions Options() {
    TrainerOptions o;
    o.lora.rank = 4;
    o.lora.lora_alpha = 8;
    o.members = 2;
    o.epochs = 6;
    o.batch_size = 8;
    o.learning_rate = 1e-2;
    o.seed = 3;
    return o;
  }

  static testing::TempDir* dir_;
  static model::BaseModel* base_;
};
testing::TempDir* TrainerTest::dir_ = nullptr;
model::BaseModel* TrainerTest::base_ = nullptr;

TEST_F(TrainerTest, LearnsASeparableTaskAndReportsEveryView) {
  std::vector<TrainingProgress> seen;
  TrainerOptions o = Options();
  o.dropout = {model::DropoutMethod::kLoraDropout, 0.1};
  o.mc_samples = 3;
  auto r = Trainer::Train(
      *base_, {"ham", "spam"}, Data(64, 1), Data(32, 2), o,
      [&](const TrainingProgress& p) { seen.push_back(p); }, nullptr);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->members.size(), 2u);
  EXPECT_EQ(r->report.steps, 6 * 8);
  EXPECT_EQ(r->report.members.size(), 2u);
  EXPECT_GE(r->report.ensemble.accuracy, 0.9);
  EXPECT_GT(r->report.temperature, 0.0);
  EXPECT_LE(r->report.calibrated.nll, r->report.ensemble.nll + 1e-9)
      << "the fitted temperature cannot raise the NLL it minimised";
  ASSERT_FALSE(seen.empty());
  EXPECT_EQ(seen.back().total_steps, 48);
  EXPECT_LT(seen.back().loss, seen.front().loss);
  EXPECT_TRUE(seen.back().has_validation);
  // The base stays frozen and the result carries no autograd state.
  for (const auto& p : base_->backbone->parameters()) EXPECT_FALSE(p.requires_grad());
  for (const model::LoraMember& m : r->members) {
    EXPECT_FALSE(m.classifier_weight.requires_grad());
  }
  EXPECT_FALSE(torch::equal(r->members[0].classifier_weight, r->members[1].classifier_weight))
      << "members start from their own seeds";
}

// Every example given twice as two identical windows: the mean of two equal logit vectors is the
// one vector, so the same weights (dropout masks are per example, not per window).
TEST_F(TrainerTest, IdenticalWindowsTrainAsOneWindow) {
  TrainerOptions o = Options();
  o.epochs = 1;
  o.threads = 2;
  o.dropout = {model::DropoutMethod::kHiddenKey, 0, 0.1, 0.1};
  auto doubled = [](const EncodedData& d) {
    EncodedData out;
    for (size_t i = 0; i < d.size(); ++i) out.Add({d.inputs[i], d.inputs[i]}, d.labels[i]);
    return out;
  };
  auto once = Trainer::Train(*base_, {"ham", "spam"}, Data(32, 1), Data(8, 2), o, nullptr, nullptr);
  auto twice = Trainer::Train(*base_, {"ham", "spam"}, doubled(Data(32, 1)), doubled(Data(8, 2)), o,
                              nullptr, nullptr);
  ASSERT_TRUE(once.ok() && twice.ok()) << once.status() << twice.status();
  for (size_t m = 0; m < 2; ++m) {
    EXPECT_TRUE(torch::allclose(once->members[m].classifier_weight,
                                twice->members[m].classifier_weight, 1e-4, 1e-5));
  }
  EXPECT_NEAR(once->report.calibrated.nll, twice->report.calibrated.nll, 1e-4);
  // Inputs, labels and starts that disagree are refused.
  EncodedData bad = doubled(Data(8, 2));
  bad.starts.pop_back();
  EXPECT_EQ(
      Trainer::Train(*base_, {"ham", "spam"}, Data(8, 1), bad, o, nullptr, nullptr).status().code(),
      absl::StatusCode::kInvalidArgument);
}

// The words that decide the label come after 12 neutral tokens; a window holds 6. Cut to one
// window the task is noise; read in windows it is learnt.
TEST_F(TrainerTest, WindowsReadWhatTruncationCutsOff) {
  const std::vector<std::string> neutral = {"good", "bad", "movie", "cafe", "naive", "you"};
  auto data = [&](int n, uint64_t seed, int max_windows) {
    std::mt19937 rng(static_cast<uint32_t>(seed) + 100);
    EncodedData d;
    for (const auto& [text, label] : testing::SpamHamTexts(n, seed)) {
      std::string filler;
      for (int w = 0; w < 12; ++w) filler += neutral[rng() % neutral.size()] + " ";
      auto windows = base_->tokenizer->EncodeWindows(filler + text, std::nullopt, 8, max_windows);
      EXPECT_TRUE(windows.ok());
      d.Add(*std::move(windows), label);
    }
    return d;
  };
  TrainerOptions o = Options();
  o.epochs = 8;
  auto cut =
      Trainer::Train(*base_, {"ham", "spam"}, data(64, 1, 1), data(32, 2, 1), o, nullptr, nullptr);
  auto read =
      Trainer::Train(*base_, {"ham", "spam"}, data(64, 1, 4), data(32, 2, 4), o, nullptr, nullptr);
  ASSERT_TRUE(cut.ok() && read.ok()) << cut.status() << read.status();
  EXPECT_EQ(data(4, 1, 4).inputs.size(), 12u) << "18 tokens in windows of 6: 3 each";
  EXPECT_LE(cut->report.ensemble.accuracy, 0.75);
  EXPECT_GE(read->report.ensemble.accuracy, 0.9);
}

TEST_F(TrainerTest, SameSeedSameWeights) {
  TrainerOptions o = Options();
  o.epochs = 1;
  o.dropout = {model::DropoutMethod::kHiddenKey, 0, 0.1, 0.1};
  auto a = Trainer::Train(*base_, {"ham", "spam"}, Data(32, 1), Data(8, 2), o, nullptr, nullptr);
  auto b = Trainer::Train(*base_, {"ham", "spam"}, Data(32, 1), Data(8, 2), o, nullptr, nullptr);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_TRUE(torch::equal(a->members[1].classifier_weight, b->members[1].classifier_weight));
  o.seed = 4;
  auto c = Trainer::Train(*base_, {"ham", "spam"}, Data(32, 1), Data(8, 2), o, nullptr, nullptr);
  EXPECT_FALSE(torch::equal(a->members[1].classifier_weight, c->members[1].classifier_weight));
}

// Members one after another or in one forward, one thread or uneven shards on three: the same
// masks and gradients, so the same weights up to float rounding.
TEST_F(TrainerTest, MemberSchedulesAndShardsTrainTheSameWeights) {
  TrainerOptions o = Options();
  o.epochs = 1;
  o.dropout = {model::DropoutMethod::kHiddenKey, 0, 0.1, 0.1};
  auto train = [&](TrainerOptions::MemberSchedule schedule, int threads) {
    TrainerOptions x = o;
    x.member_schedule = schedule;
    x.threads = threads;
    auto r = Trainer::Train(*base_, {"ham", "spam"}, Data(32, 1), Data(8, 2), x, nullptr, nullptr);
    EXPECT_TRUE(r.ok()) << r.status();
    return *std::move(r);
  };
  using S = TrainerOptions::MemberSchedule;
  const TrainedMembers sequential = train(S::kSequential, 1);
  for (const TrainedMembers& other : {train(S::kOneForward, 1), train(S::kSequential, 3)}) {
    for (size_t m = 0; m < 2; ++m) {
      EXPECT_TRUE(torch::allclose(sequential.members[m].classifier_weight,
                                  other.members[m].classifier_weight, 1e-3, 1e-5));
      const auto& a = sequential.members[m].layers;
      const auto& b = other.members[m].layers;
      for (size_t i = 0; i < a.size(); ++i) {
        if (!a[i].b.defined()) continue;
        EXPECT_TRUE(torch::allclose(a[i].b, b[i].b, 1e-3, 1e-5)) << "layer " << i;
      }
    }
    EXPECT_NEAR(sequential.report.ensemble.nll, other.report.ensemble.nll, 1e-4);
  }
}

// While a job trains, BLAS is single-threaded process-wide and, with idle_priority, the training
// thread runs at SCHED_IDLE; both are undone afterwards.
TEST_F(TrainerTest, TrainingLeavesTheCoresToServing) {
  TrainerOptions o = Options();
  o.epochs = 1;
  o.idle_priority = true;
  bool checked = false;
  model::SetBlasThreads(2);
  auto r = Trainer::Train(
      *base_, {"ham", "spam"}, Data(16, 1), Data(4, 2), o,
      [&](const TrainingProgress&) {
        if (checked) return;
        checked = true;
        EXPECT_TRUE(model::TrainingActive());
        EXPECT_EQ(model::SetServingBlasThreads(2), 1);
        if (model::BlasThreads() != 0) EXPECT_EQ(model::BlasThreads(), 1);
        EXPECT_EQ(sched_getscheduler(0), SCHED_IDLE);
      },
      nullptr);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE(checked);
  EXPECT_FALSE(model::TrainingActive());
  EXPECT_EQ(model::SetServingBlasThreads(2), 2);
  EXPECT_NE(sched_getscheduler(0), SCHED_IDLE);
}

TEST_F(TrainerTest, CancelStopsBeforeTheNextStep) {
  int steps = 0;
  auto r = Trainer::Train(
      *base_, {"ham", "spam"}, Data(64, 1), Data(8, 2), Options(),
      [&](const TrainingProgress&) { ++steps; }, [&] { return steps >= 3; });
  EXPECT_EQ(r.status().code(), absl::StatusCode::kCancelled);
  EXPECT_EQ(steps, 3);
}

TEST_F(TrainerTest, DivergingLossFailsWithTheStepAndAHint) {
  TrainerOptions o = Options();
  o.learning_rate = 1e30;
  o.max_grad_norm = 1e30;
  auto r = Trainer::Train(*base_, {"ham", "spam"}, Data(64, 1), Data(8, 2), o, nullptr, nullptr);
  ASSERT_EQ(r.status().code(), absl::StatusCode::kInternal) << r.status();
  EXPECT_NE(r.status().message().find("learning_rate"), std::string::npos) << r.status();
}

TEST_F(TrainerTest, BadOptionsAndTargetsAreRefused) {
  TrainerOptions o = Options();
  o.lora.target_modules = {"no_such_layer"};
  auto r = Trainer::Train(*base_, {"ham", "spam"}, Data(8, 1), Data(4, 2), o, nullptr, nullptr);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Trainer::Train(*base_, {"ham", "spam"}, {}, Data(4, 2), Options(), nullptr, nullptr)
                .status()
                .code(),
            absl::StatusCode::kInvalidArgument);
}

// What the trainer produces is written in PEFT's format and serves the same logits back.
TEST_F(TrainerTest, TrainedMembersRoundTripThroughPeftFiles) {
  TrainerOptions o = Options();
  o.epochs = 2;
  auto r = Trainer::Train(*base_, {"ham", "spam"}, Data(32, 1), Data(8, 2), o, nullptr, nullptr);
  ASSERT_TRUE(r.ok()) << r.status();
  adapters::Adapter identity;
  identity.name = "t";
  identity.version = 1;
  identity.serving.labels = {"ham", "spam"};
  identity.serving.members = 2;
  identity.lora = o.lora;
  auto adapter = adapters::MakeAdapter(identity, r->members);
  testing::TempDir out;
  ASSERT_TRUE(adapters::SaveAdapter(out.path(), *adapter, *base_).ok());
  auto loaded = adapters::LoadAdapter(out.path(), "t", 1, *base_);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  for (int m = 0; m < 2; ++m) {
    const model::LoraMember& a = r->members[static_cast<size_t>(m)];
    const model::LoraMember& b = adapters::MembersOf(**loaded)[static_cast<size_t>(m)];
    EXPECT_TRUE(torch::equal(a.classifier_weight, b.classifier_weight));
    for (size_t i = 0; i < a.layers.size(); ++i) {
      EXPECT_EQ(a.layers[i].a.defined(), b.layers[i].a.defined());
      if (a.layers[i].a.defined()) EXPECT_TRUE(torch::equal(a.layers[i].b, b.layers[i].b));
    }
  }
}

}  // namespace
}  // namespace loracle::training
