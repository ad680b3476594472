#include "server/calibration/error_score.h"

#include <gtest/gtest.h>

#include <algorithm>
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

// A candidate that ranks errors only slightly better on a split with a handful of errors is
// noise: the default stays.
TEST(ErrorScoreTest, KeepsOneMinusConfidenceWhenTheValidationSplitCannotTellThemApart) {
  std::mt19937_64 rng(5);
  std::uniform_real_distribution<double> u(0, 1);
  std::vector<serving::UncertaintySummary> p;
  std::vector<int> labels;
  for (int i = 0; i < 200; ++i) {
    const double c = 0.55 + 0.45 * u(rng);
    const bool wrong = i % 40 == 0;  // 5 errors, unrelated to either score
    p.push_back(Summary({c, 1 - c}, 0.1 * u(rng)));
    labels.push_back(wrong ? 1 : 0);
  }
  absl::StatusOr<ErrorScoreChoice> c = ChooseErrorScore(p, labels);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->score, ErrorScore::kOneMinusConfidence);
  ASSERT_EQ(c->wins.size(), std::size(kErrorScores));
  for (double w : c->wins) EXPECT_LT(w, kChoiceConfidence);
}

struct Draw {
  std::vector<double> scores;
  std::vector<bool> wrong;
};

// Scores uniform on [0, 1], wrong with probability 0.6 * score, sorted by score.
Draw DrawPredictions(int n, std::mt19937_64* rng) {
  std::uniform_real_distribution<double> u(0, 1);
  std::vector<std::pair<double, bool>> v;
  for (int i = 0; i < n; ++i) {
    const double s = u(*rng);
    v.emplace_back(s, u(*rng) < 0.6 * s);
  }
  std::sort(v.begin(), v.end());
  Draw d;
  for (auto& [s, w] : v) {
    d.scores.push_back(s);
    d.wrong.push_back(w);
  }
  return d;
}

// The true error rate among answered inputs of threshold t: errors at rate 0.6 s for s in [0, t].
double TrueRisk(double t) { return t <= 0 ? 0 : 0.3 * t; }

// Over many validation draws of 300 predictions, the answered error rate on fresh inputs averages
// within the risk (the guarantee is in expectation), and a looser risk answers more.
TEST(ErrorScoreTest, RiskThresholdHoldsOnAverageOverValidationDrawsAndLooserRisksAnswerMore) {
  std::mt19937_64 rng(11);
  double last = 0;
  for (double risk : {0.1, 0.2}) {
    double risk_sum = 0, coverage_sum = 0;
    constexpr int kDraws = 400;
    for (int i = 0; i < kDraws; ++i) {
      const Draw val = DrawPredictions(300, &rng);
      const RiskThreshold t = ThresholdForRisk(val.scores, val.wrong, risk);
      EXPECT_LE(t.error_rate, risk);
      risk_sum += TrueRisk(std::clamp(t.threshold, 0.0, 1.0));
      coverage_sum += std::clamp(t.threshold, 0.0, 1.0);
    }
    EXPECT_LE(risk_sum / kDraws, risk) << risk;
    // Near the oracle threshold (0.3 t = risk), not far more conservative.
    EXPECT_GT(coverage_sum / kDraws, 0.9 * risk / 0.3) << risk;
    EXPECT_GT(coverage_sum / kDraws, last) << risk;
    last = coverage_sum / kDraws;
  }
  // Too strict for 20 predictions without an error: (0 + 1) / (20 + 1) > 0.01 answers none.
  std::vector<double> few(20, 0.5);
  EXPECT_TRUE(std::isinf(ThresholdForRisk(few, std::vector<bool>(20, false), 0.01).threshold));
  // The largest prefix within the risk, cut back to a change of score: 40 right answers, 5 wrong,
  // 15 right at one tied score, 40 right: all 100 give (5 + 1) / 101 <= 0.1.
  std::vector<double> scores;
  std::vector<bool> wrong;
  for (int i = 0; i < 100; ++i) {
    scores.push_back(i < 45 || i >= 60 ? i : 45);
    wrong.push_back(i >= 40 && i < 45);
  }
  RiskThreshold t = ThresholdForRisk(scores, wrong, 0.1);
  EXPECT_EQ(t.threshold, 99);
  EXPECT_NEAR(t.error_rate, 0.05, 1e-12);
  // At 0.05: 100 answered give 6 / 101 > 0.05, fewer give more, down to 42: 3 / 43; 41 answered
  // give 2 / 42 <= 0.05. The tied block (scores 45) answers together or not at all.
  t = ThresholdForRisk(scores, wrong, 0.05);
  EXPECT_EQ(t.threshold, 40);
  EXPECT_NEAR(t.coverage, 0.41, 1e-12);
  EXPECT_NEAR(t.error_rate, 1.0 / 41, 1e-12);
}

}  // namespace
}  // namespace loracle::calibration
