#include "server/calibration/conformal.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

namespace loracle::calibration {
namespace {

TEST(ConformalTest, ThresholdIsTheCeilOfNPlusOneTimesCoverageSmallestScore) {
  std::vector<double> s;
  for (int i = 1; i <= 10; ++i) s.push_back(i / 10.0);
  EXPECT_DOUBLE_EQ(ConformalThreshold(s, 0.9), 1.0);  // ceil(11 * 0.9) = 10
  EXPECT_DOUBLE_EQ(ConformalThreshold(s, 0.5), 0.6);  // ceil(5.5) = 6
  EXPECT_DOUBLE_EQ(ConformalThreshold(s, 0.01), 0.1);
  EXPECT_TRUE(std::isinf(ConformalThreshold(s, 0.95)));  // 11 > n: every label
  EXPECT_TRUE(std::isinf(ConformalThreshold({}, 0.5)));
}

TEST(ConformalTest, ScoresAreOneMinusTheTrueLabelsProbabilitySorted) {
  auto s = LacScores({{0.7, 0.3}, {0.2, 0.8}, {0.5, 0.5}}, {1, 1, 0});
  ASSERT_TRUE(s.ok()) << s.status();
  ASSERT_EQ(s->size(), 3u);
  EXPECT_NEAR((*s)[0], 0.2, 1e-12);
  EXPECT_NEAR((*s)[1], 0.5, 1e-12);
  EXPECT_NEAR((*s)[2], 0.7, 1e-12);
  EXPECT_FALSE(LacScores({{0.5, 0.5}}, {2}).ok());
  EXPECT_FALSE(LacScores({{0.5, 0.5}}, {}).ok());
}

TEST(ConformalTest, SetsHoldLabelsWithinTheThresholdMostProbableFirst) {
  const std::vector<double> p = {0.1, 0.6, 0.3};
  EXPECT_EQ(PredictionSet(p, 0.45), (std::vector<int>{1}));
  EXPECT_EQ(PredictionSet(p, 0.7), (std::vector<int>{1, 2}));
  EXPECT_EQ(PredictionSet(p, INFINITY), (std::vector<int>{1, 2, 0}));
  EXPECT_TRUE(PredictionSet(p, 0.2).empty());
}

// Exchangeable calibration and test data from a calibrated 4-class model: the sets cover the
// target within sampling error, and larger targets give larger sets.
TEST(ConformalTest, MarginalCoverageHoldsOnExchangeableData) {
  std::mt19937_64 rng(7);
  std::gamma_distribution<double> gamma(0.7, 1.0);
  auto draw = [&](int n, std::vector<std::vector<double>>* probs, std::vector<int>* labels) {
    for (int i = 0; i < n; ++i) {
      std::vector<double> p(4);
      double sum = 0;
      for (double& v : p) sum += v = gamma(rng);
      for (double& v : p) v /= sum;
      std::discrete_distribution<int> label(p.begin(), p.end());
      probs->push_back(p);
      labels->push_back(label(rng));
    }
  };
  std::vector<std::vector<double>> cal_p, test_p;
  std::vector<int> cal_y, test_y;
  draw(1000, &cal_p, &cal_y);
  draw(20000, &test_p, &test_y);
  const absl::StatusOr<std::vector<double>> scores = LacScores(cal_p, cal_y);
  ASSERT_TRUE(scores.ok());
  double last_size = 0;
  for (double c : {0.8, 0.9, 0.95}) {
    const double q = ConformalThreshold(*scores, c);
    double covered = 0, size = 0;
    for (size_t i = 0; i < test_p.size(); ++i) {
      const std::vector<int> set = PredictionSet(test_p[i], q);
      size += static_cast<double>(set.size());
      for (int k : set) covered += k == test_y[i];
    }
    covered /= static_cast<double>(test_p.size());
    size /= static_cast<double>(test_p.size());
    // Coverage given one calibration draw is Beta-distributed around c (sd ~ 0.01 at n = 1000).
    EXPECT_NEAR(covered, c, 0.025) << c;
    EXPECT_GT(size, last_size) << c;
    last_size = size;
  }
}

}  // namespace
}  // namespace loracle::calibration
