#include "server/serving/ensemble_runner.h"

#include <gtest/gtest.h>

#include <cmath>

#include "server/adapters/adapter_files.h"
#include "server/adapters/adapter_weights.h"
#include "server/metrics/metrics.h"
#include "server/model/checkpoint.h"
#include "server/model/cpu_runtime.h"
#include "server/model/lora.h"
#include "tests/support/test_util.h"

namespace loracle::serving {
namespace {

class EnsembleRunnerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    testing::WriteTinyModel(model_dir_.path());
    auto metrics = metrics::Metrics::Create({});
    ASSERT_TRUE(metrics.ok());
    metrics_ = *std::move(metrics);
    model::SetComputeThreads({1, 1});
    auto base = model::LoadBaseModel(model_dir_.path());
    ASSERT_TRUE(base.ok()) << base.status();
    base_ = *std::move(base);
    auto runner = EnsembleRunner::Create({base_.get(), 1, true, metrics_.get()});
    ASSERT_TRUE(runner.ok()) << runner.status();
    runner_ = *std::move(runner);
    ASSERT_TRUE(adapters::WriteRandomAdapter(adapter_dir_.path(), testing::TinyConfig(),
                                             testing::TinyAdapterSpec({"ham", "spam"}, 2, 1))
                    .ok());
    auto adapter = adapters::LoadAdapter(adapter_dir_.path(), "a", 1, *base_);
    ASSERT_TRUE(adapter.ok()) << adapter.status();
    adapter_ = *std::move(adapter);
  }

  std::unique_ptr<InferenceRequest> Request(const std::string& text, InputResult* out) {
    auto r = std::make_unique<InferenceRequest>();
    r->adapter = adapter_;
    r->members = 2;
    r->inputs.push_back(*base_->tokenizer->Encode(text, std::nullopt, base_->max_length));
    r->done = [out](absl::StatusOr<InferenceResult> result) {
      ASSERT_TRUE(result.ok()) << result.status();
      *out = result->inputs[0];
    };
    return r;
  }

  testing::TempDir model_dir_, adapter_dir_;
  std::unique_ptr<metrics::Metrics> metrics_;
  std::unique_ptr<model::BaseModel> base_;
  std::unique_ptr<EnsembleRunner> runner_;
  std::shared_ptr<const adapters::Adapter> adapter_;
};

TEST(EnsembleRunnerRowPartsTest, SplitsOnlyBatchesWithWorkForEveryCore) {
  // One 128-token request: 128 tokens, less than a part's worth; it keeps every core in its GEMMs.
  EXPECT_EQ(EnsembleRunner::RowParts(1, 128, 2, true), 1);
  EXPECT_EQ(EnsembleRunner::RowParts(2, 128, 2, true), 1);  // 256 tokens: one part's worth
  EXPECT_EQ(EnsembleRunner::RowParts(4, 128, 2, true), 2);
  EXPECT_EQ(EnsembleRunner::RowParts(32, 128, 2, true), 2);   // at most one part per core
  EXPECT_EQ(EnsembleRunner::RowParts(64, 16, 4, true), 4);    // 1024 tokens over 4 cores
  EXPECT_EQ(EnsembleRunner::RowParts(3, 512, 8, true), 3);    // at least a row per part
  EXPECT_EQ(EnsembleRunner::RowParts(32, 128, 2, false), 1);  // --parallel_rows=false
  EXPECT_EQ(EnsembleRunner::RowParts(32, 128, 0, true), 1);   // no cores given: one part
}

TEST_F(EnsembleRunnerTest, ShortAndLongRequestsRunInSeparateLengthBuckets) {
  std::string long_text;
  for (int i = 0; i < 40; ++i) long_text += "free money ";
  InputResult short_alone, long_alone, short_mixed, long_mixed;
  {
    std::vector<std::unique_ptr<InferenceRequest>> batch;
    batch.push_back(Request("hello world", &short_alone));
    EXPECT_EQ(EnsembleRunner::LengthBucket(*batch.back()), 16);
    runner_->Run(std::move(batch));
  }
  {
    std::vector<std::unique_ptr<InferenceRequest>> batch;
    batch.push_back(Request(long_text, &long_alone));
    EXPECT_EQ(EnsembleRunner::LengthBucket(*batch.back()), 64);
    runner_->Run(std::move(batch));
  }
  std::vector<std::unique_ptr<InferenceRequest>> batch;
  batch.push_back(Request("hello world", &short_mixed));
  batch.push_back(Request(long_text, &long_mixed));
  runner_->Run(std::move(batch));
  // Two forwards for the mixed batch: 4 in total.
  EXPECT_NE(metrics_->Scrape().find("loracle_forward_seconds_count 4"), std::string::npos)
      << metrics_->Scrape();
  for (size_t c = 0; c < 2; ++c) {
    EXPECT_NEAR(short_mixed.summary.mean_probs[c], short_alone.summary.mean_probs[c], 1e-6);
    EXPECT_NEAR(long_mixed.summary.mean_probs[c], long_alone.summary.mean_probs[c], 1e-6);
  }
  EXPECT_EQ(short_mixed.passes.size(), 2u) << "two members";
}

// An input read in two windows: each pass's logits are the mean of the windows' logits (with
// temperature 1, log-probabilities up to a constant), and the inputs around it are unchanged.
TEST_F(EnsembleRunnerTest, WindowsOfAnInputAverageTheirLogits) {
  const std::string first = "free money now", second = "please review the invoice";
  InputResult first_alone, second_alone, hello_alone;
  std::vector<std::unique_ptr<InferenceRequest>> singles;
  singles.push_back(Request(first, &first_alone));
  singles.push_back(Request(second, &second_alone));
  singles.push_back(Request("hello", &hello_alone));
  runner_->Run(std::move(singles));

  auto encode = [&](const std::string& text) {
    return *base_->tokenizer->Encode(text, std::nullopt, base_->max_length);
  };
  auto r = std::make_unique<InferenceRequest>();
  r->adapter = adapter_;
  r->members = 2;
  r->inputs = {encode("hello"), encode(first), encode(second), encode("hello")};
  r->windows = {1, 2, 1};
  std::vector<InputResult> out;
  r->done = [&out](absl::StatusOr<InferenceResult> result) {
    ASSERT_TRUE(result.ok()) << result.status();
    out = result->inputs;
  };
  std::vector<std::unique_ptr<InferenceRequest>> batch;
  batch.push_back(std::move(r));
  runner_->Run(std::move(batch));
  ASSERT_EQ(out.size(), 3u) << "one result per input, not per window";
  ASSERT_EQ(out[1].passes.size(), 2u);
  for (size_t k = 0; k < 2; ++k) {
    std::vector<double> mean_logits;
    for (size_t c = 0; c < 2; ++c) {
      mean_logits.push_back(
          (std::log(first_alone.passes[k][c]) + std::log(second_alone.passes[k][c])) / 2);
    }
    const std::vector<double> expected = Softmax(mean_logits);
    for (size_t c = 0; c < 2; ++c) {
      EXPECT_NEAR(out[1].passes[k][c], expected[c], 1e-5) << k << " " << c;
      EXPECT_NEAR(out[0].passes[k][c], hello_alone.passes[k][c], 1e-6);
      EXPECT_NEAR(out[2].passes[k][c], hello_alone.passes[k][c], 1e-6);
    }
  }
}

// While a job trains BLAS runs on one thread, and a single long row is split by tokens across
// the cores instead (model::TokenParallelScope): the answer must not change.
TEST_F(EnsembleRunnerTest, TokenSplitWhileTrainingGivesTheSameAnswer) {
  auto two_cores = EnsembleRunner::Create({base_.get(), 2, true, metrics_.get()});
  ASSERT_TRUE(two_cores.ok()) << two_cores.status();
  std::string long_text;
  for (int i = 0; i < 40; ++i) long_text += "free money ";
  InputResult alone, during_training;
  {
    std::vector<std::unique_ptr<InferenceRequest>> batch;
    batch.push_back(Request(long_text, &alone));
    (*two_cores)->Run(std::move(batch));
  }
  {
    model::TrainingScope training;
    std::vector<std::unique_ptr<InferenceRequest>> batch;
    batch.push_back(Request(long_text, &during_training));
    (*two_cores)->Run(std::move(batch));
  }
  ASSERT_EQ(during_training.passes.size(), alone.passes.size());
  for (size_t k = 0; k < alone.passes.size(); ++k) {
    for (size_t c = 0; c < 2; ++c) {
      EXPECT_NEAR(during_training.passes[k][c], alone.passes[k][c], 1e-5) << k << " " << c;
    }
  }
}

TEST(TokenParallelTest, FusedLinearSplitsTokensWithoutChangingTheResult) {
  torch::manual_seed(3);
  const torch::Tensor x = torch::randn({2, 40, 24});
  const torch::Tensor w = torch::randn({12, 24});
  const torch::Tensor b = torch::randn({12});
  c10::InferenceMode inference;
  const torch::Tensor plain = model::FusedLinear(x, w, b);
  EXPECT_EQ(model::TokenParallelParts(), 1);
  model::TokenParallelScope split(3);
  EXPECT_EQ(model::TokenParallelParts(), 3);
  const torch::Tensor parted = model::FusedLinear(x, w, b);
  EXPECT_EQ(parted.sizes(), plain.sizes());
  EXPECT_TRUE(torch::allclose(parted, plain, 1e-5, 1e-5));
  {
    model::TokenParallelScope off(1);
    EXPECT_EQ(model::TokenParallelParts(), 1);
  }
  EXPECT_EQ(model::TokenParallelParts(), 3);
}

TEST(TokenParallelTest, RunInParallelRunsEveryPartAndRethrows) {
  std::vector<int> hits(4, 0);
  model::RunInParallel(4, [&](int p) { hits[static_cast<size_t>(p)] += 1; });
  EXPECT_EQ(hits, (std::vector<int>{1, 1, 1, 1}));
  EXPECT_THROW(model::RunInParallel(3,
                                    [](int p) {
                                      if (p == 2) throw std::runtime_error("part 2");
                                    }),
               std::runtime_error);
  model::RunInParallel(2, [&](int p) { hits[static_cast<size_t>(p)] += 1; });  // still works
  EXPECT_EQ(hits[1], 2);
}

}  // namespace
}  // namespace loracle::serving
