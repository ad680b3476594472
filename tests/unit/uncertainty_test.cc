#include "server/serving/uncertainty.h"

#include <gtest/gtest.h>

#include <cmath>

namespace loracle::serving {
namespace {

TEST(UncertaintyTest, SingleMemberHasExactlyZeroEpistemicTerms) {
  auto s = Summarize({{0.7, 0.2, 0.1}});
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s->mutual_information, 0.0);
  EXPECT_EQ(s->prob_std, (std::vector<double>{0, 0, 0}));
  EXPECT_DOUBLE_EQ(s->predictive_entropy, s->expected_entropy);
  EXPECT_EQ(s->argmax, 0);
  EXPECT_DOUBLE_EQ(s->confidence, 0.7);
}

TEST(UncertaintyTest, MatchesHandComputedTwoMemberExample) {
  // p1 = (0.9, 0.1), p2 = (0.5, 0.5): p_bar = (0.7, 0.3).
  auto s = Summarize({{0.9, 0.1}, {0.5, 0.5}});
  ASSERT_TRUE(s.ok());
  const double h_bar = -(0.7 * std::log(0.7) + 0.3 * std::log(0.3));  // 0.610864
  const double h1 = -(0.9 * std::log(0.9) + 0.1 * std::log(0.1));     // 0.325083
  const double h2 = std::log(2.0);                                    // 0.693147
  EXPECT_NEAR(s->mean_probs[0], 0.7, 1e-12);
  EXPECT_NEAR(s->predictive_entropy, h_bar, 1e-12);
  EXPECT_NEAR(s->expected_entropy, (h1 + h2) / 2, 1e-12);
  EXPECT_NEAR(s->mutual_information, h_bar - (h1 + h2) / 2, 1e-12);
  EXPECT_NEAR(s->mutual_information, 0.101749, 1e-6);
  EXPECT_NEAR(s->prob_std[0], 0.2, 1e-12);  // population std of {0.9, 0.5}
  EXPECT_NEAR(s->prob_std[1], 0.2, 1e-12);
  EXPECT_NEAR(s->confidence, 0.7, 1e-12);
}

TEST(UncertaintyTest, AgreeingMembersHaveZeroAndDisagreeingPositiveInformation) {
  auto same = Summarize({{0.6, 0.4}, {0.6, 0.4}, {0.6, 0.4}});
  ASSERT_TRUE(same.ok());
  EXPECT_NEAR(same->mutual_information, 0.0, 1e-15);
  EXPECT_GE(same->mutual_information, 0.0);
  auto split = Summarize({{1.0, 0.0}, {0.0, 1.0}});
  ASSERT_TRUE(split.ok());
  EXPECT_NEAR(split->mutual_information, std::log(2.0), 1e-12) << "0 log 0 = 0; maximal MI";
  EXPECT_NEAR(split->expected_entropy, 0.0, 1e-15);
}

TEST(UncertaintyTest, SoftmaxHonoursTemperature) {
  auto p = Softmax({2.0, 0.0});
  EXPECT_NEAR(p[0], 1.0 / (1.0 + std::exp(-2.0)), 1e-12);
  auto warm = Softmax({2.0, 0.0}, 2.0);
  EXPECT_NEAR(warm[0], 1.0 / (1.0 + std::exp(-1.0)), 1e-12);
  auto big = Softmax({1000.0, 0.0});  // no overflow
  EXPECT_NEAR(big[0], 1.0, 1e-12);
}

TEST(UncertaintyTest, RejectsEmptyAndRaggedInput) {
  EXPECT_EQ(Summarize({}).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Summarize({{0.5, 0.5}, {1.0}}).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace loracle::serving
