#include "server/calibration/calibration.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "server/serving/uncertainty.h"

namespace loracle::calibration {
namespace {

TEST(CalibrationTest, MatchesAHandComputedExample) {
  // Four examples, two classes.
  //   p = (0.9, 0.1) y=0  correct, conf 0.9  -> bin (0.867, 0.933]
  //   p = (0.8, 0.2) y=1  wrong,   conf 0.8  -> bin (0.733, 0.8]
  //   p = (0.3, 0.7) y=1  correct, conf 0.7  -> bin (0.667, 0.733]
  //   p = (0.4, 0.6) y=0  wrong,   conf 0.6  -> bin (0.533, 0.6]
  const std::vector<std::vector<double>> p = {{0.9, 0.1}, {0.8, 0.2}, {0.3, 0.7}, {0.4, 0.6}};
  const std::vector<int> y = {0, 1, 1, 0};
  auto r = Evaluate(p, y);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_DOUBLE_EQ(r->accuracy, 0.5);
  // Each example alone in its bin: ECE = mean |correct - conf| = (0.1 + 0.8 + 0.3 + 0.6) / 4.
  EXPECT_NEAR(r->ece, 0.45, 1e-12);
  EXPECT_NEAR(r->mce, 0.8, 1e-12);
  EXPECT_NEAR(r->nll, -(std::log(0.9) + std::log(0.2) + std::log(0.7) + std::log(0.4)) / 4, 1e-12);
  EXPECT_NEAR(r->brier, (2 * 0.01 + 2 * 0.64 + 2 * 0.09 + 2 * 0.36) / 4, 1e-12);
}

TEST(CalibrationTest, SharedBinAveragesBeforeTakingTheGap) {
  // Both confidences fall in (0.6, 0.667]: acc 0.5, conf 0.625 -> ECE 0.125 (not 0.625).
  auto r = Evaluate({{0.62, 0.38}, {0.63, 0.37}}, {0, 1});
  ASSERT_TRUE(r.ok());
  EXPECT_NEAR(r->ece, 0.125, 1e-12);
  EXPECT_NEAR(r->mce, 0.125, 1e-12);
}

TEST(CalibrationTest, PerfectlyConfidentAndRightIsPerfectlyCalibrated) {
  auto r = Evaluate({{1, 0, 0}, {0, 0, 1}}, {0, 2});
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->accuracy, 1.0);
  EXPECT_EQ(r->ece, 0.0);
  EXPECT_EQ(r->brier, 0.0);
  EXPECT_NEAR(r->nll, 0.0, 1e-12);
}

TEST(CalibrationTest, TemperatureRecoversTheOneThatGeneratedTheLabels) {
  // Labels drawn from softmax(z / 2.5): the NLL-optimal temperature is close to 2.5.
  std::mt19937_64 rng(7);
  std::normal_distribution<double> normal(0, 3);
  std::vector<std::vector<double>> logits;
  std::vector<int> labels;
  for (int i = 0; i < 4000; ++i) {
    std::vector<double> z = {normal(rng), normal(rng), normal(rng)};
    std::discrete_distribution<int> draw({0, 0, 0});
    const std::vector<double> p = serving::Softmax(z, 2.5);
    draw = std::discrete_distribution<int>(p.begin(), p.end());
    labels.push_back(draw(rng));
    logits.push_back(z);
  }
  auto t = FitTemperature(logits, labels);
  ASSERT_TRUE(t.ok());
  EXPECT_NEAR(*t, 2.5, 0.25);
}

// With one pass per example the ensemble fit is the plain fit; with passes whose average is too
// sharp for the labels drawn, the fitted T softens them, and the NLL at T is the minimum.
TEST(CalibrationTest, EnsembleTemperatureScalesEveryPassBeforeAveraging) {
  std::mt19937 rng(11);
  std::normal_distribution<double> normal(0.0, 2.0);
  std::vector<std::vector<double>> logits;
  std::vector<std::vector<std::vector<double>>> one_pass, three_passes;
  std::vector<int> labels;
  for (int i = 0; i < 1500; ++i) {
    std::vector<double> z = {normal(rng), normal(rng)};
    const std::vector<double> p = serving::Softmax(z, 2.0);
    labels.push_back(std::bernoulli_distribution(p[1])(rng) ? 1 : 0);
    logits.push_back(z);
    one_pass.push_back({z});
    three_passes.push_back({z, {z[0] + 0.3, z[1]}, {z[0], z[1] + 0.3}});
  }
  EXPECT_NEAR(*FitEnsembleTemperature(one_pass, labels), *FitTemperature(logits, labels), 1e-6);
  const double t = *FitEnsembleTemperature(three_passes, labels);
  EXPECT_GT(t, 1.5);
  auto nll = [&](double temp) { return Evaluate(EnsembleProbs(three_passes, temp), labels)->nll; };
  EXPECT_LT(nll(t), nll(1.0));
  EXPECT_LE(nll(t), nll(t * 1.05) + 1e-9);
  EXPECT_LE(nll(t), nll(t / 1.05) + 1e-9);
  EXPECT_EQ(FitEnsembleTemperature({{{1, 2}}}, {2}).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(CalibrationTest, RejectsBadInput) {
  EXPECT_EQ(Evaluate({}, {}).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Evaluate({{0.5, 0.5}}, {2}).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Evaluate({{0.5, 0.5}, {1.0}}, {0, 0}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(FitTemperature({{1, 2}}, {0, 1}).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace loracle::calibration
