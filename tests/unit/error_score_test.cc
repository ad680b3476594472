#include "server/calibration/error_score.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

namespace loracle::calibration {
namespace {

serving::UncertaintySummary Summary(std::vector<double> p, double mi = 0) {
  serving::UncertaintySummary s;
  s.mean_probs = p;
  s.argmax = static_cast<int>(std::max_element(p.begin(), p.end()) - p.begin());
  s.confidence = p[static_cast<size_t>(s.argmax)];
  s.predictive_entropy = serving::Entropy(p);
  s.mutual_information = mi;
  s.prob_std.assign(p.size(), mi / 2);
  return s;
}

TEST(ErrorScoreTest, EachCandidateIsHigherWhenLessSure) {
  const serving::UncertaintySummary sure = Summary({0.9, 0.05, 0.05}, 0.01);
  const serving::UncertaintySummary unsure = Summary({0.4, 0.35, 0.25}, 0.2);
  for (ErrorScore s : kErrorScores) {
    EXPECT_LT(ErrorScoreOf(s, sure), ErrorScoreOf(s, unsure)) << ErrorScoreName(s);
    EXPECT_EQ(*ParseErrorScore(ErrorScoreName(s)), s);
  }
  EXPECT_NEAR(ErrorScoreOf(ErrorScore::kMargin, unsure), 1 - (0.4 - 0.35), 1e-12);
  EXPECT_FALSE(ParseErrorScore("confidence").ok());
}

TEST(ErrorScoreTest, AurcIsTheMeanSelectiveRiskAndTiesCountInExpectation) {
  // Ranked right, right, wrong: risks 0, 0, 1/3.
  EXPECT_NEAR(Aurc({0.1, 0.2, 0.9}, {false, false, true}), (0 + 0 + 1.0 / 3) / 3, 1e-12);
  // Ranked wrong first: risks 1, 1/2, 1/3.
  EXPECT_NEAR(Aurc({0.9, 0.2, 0.1}, {false, false, true}), (1 + 0.5 + 1.0 / 3) / 3, 1e-12);
  // A constant score is a random order: the error rate at every coverage, whatever the indices.
  EXPECT_NEAR(Aurc({0, 0, 0, 0}, {true, false, false, false}), 0.25, 1e-12);
  EXPECT_NEAR(Aurc({0, 0, 0, 0}, {false, false, false, true}), 0.25, 1e-12);
  EXPECT_EQ(Aurc({}, {}), 0);
}

TEST(ErrorScoreTest, ChoosesTheCandidateThatRanksErrorsBest) {
  // Mutual information, not confidence, separates the wrong answers here.
  std::vector<serving::UncertaintySummary> p;
  std::vector<int> labels;
  for (int i = 0; i < 40; ++i) {
    const bool wrong = i % 4 == 0;
    p.push_back(Summary({0.6 + 0.01 * (i % 7), 0.4 - 0.01 * (i % 7)}, wrong ? 0.3 : 0.01));
    labels.push_back(wrong ? 1 : 0);
  }
  absl::StatusOr<ErrorScoreChoice> c = ChooseErrorScore(p, labels);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_TRUE(c->score == ErrorScore::kMutualInformation || c->score == ErrorScore::kProbStd)
      << ErrorScoreName(c->score);
  ASSERT_EQ(c->aurc.size(), std::size(kErrorScores));
  EXPECT_LT(c->aurc[3], c->aurc[0]);
  EXPECT_FALSE(ChooseErrorScore(p, {0}).ok());
}

TEST(ErrorScoreTest, ClopperPearsonUpperBoundMatchesKnownValues) {
  // No errors: 1 - delta^(1/n).
  EXPECT_NEAR(BinomialUpperBound(0, 10, 0.05), 1 - std::pow(0.05, 0.1), 1e-6);
  // 5 of 50 at 95%: 0.2000 (the exact Clopper-Pearson one-sided bound).
  EXPECT_NEAR(BinomialUpperBound(5, 50, 0.05), 0.2, 0.005);
  EXPECT_EQ(BinomialUpperBound(3, 3, 0.1), 1.0);
  EXPECT_GT(BinomialUpperBound(1, 100, 0.1), 0.01);
}

// Exchangeable validation and test predictions: the answered error rate stays within the risk,
// and a looser risk answers more.
TEST(ErrorScoreTest, RiskThresholdHoldsOnFreshDataAndLooserRisksAnswerMore) {
  std::mt19937_64 rng(11);
  std::uniform_real_distribution<double> u(0, 1);
  auto draw = [&](int n, std::vector<double>* scores, std::vector<bool>* wrong) {
    std::vector<std::pair<double, bool>> v;
    for (int i = 0; i < n; ++i) {
      const double s = u(rng);
      v.emplace_back(s, u(rng) < 0.6 * s);  // errors likelier at higher scores
    }
    std::sort(v.begin(), v.end());
    for (auto& [s, w] : v) {
      scores->push_back(s);
      wrong->push_back(w);
    }
  };
  std::vector<double> val, test;
  std::vector<bool> val_wrong, test_wrong;
  draw(2000, &val, &val_wrong);
  draw(20000, &test, &test_wrong);
  double last = 0;
  for (double risk : {0.1, 0.2, 0.3}) {
    const RiskThreshold t = ThresholdForRisk(val, val_wrong, risk, 0.1);
    EXPECT_LE(t.error_rate, risk);
    EXPECT_GT(t.coverage, last) << risk;
    last = t.coverage;
    double answered = 0, errors = 0;
    for (size_t i = 0; i < test.size(); ++i) {
      if (test[i] <= t.threshold) {
        ++answered;
        errors += test_wrong[i];
      }
    }
    ASSERT_GT(answered, 0);
    EXPECT_LE(errors / answered, risk) << risk;
  }
  // Too strict to certify on 20 predictions: answer none.
  std::vector<double> few(20, 0.5);
  EXPECT_TRUE(std::isinf(ThresholdForRisk(few, std::vector<bool>(20, false), 0.01, 0.1).threshold));
}

}  // namespace
}  // namespace loracle::calibration
