#include "server/serving/ensemble_layout.h"

#include <gtest/gtest.h>

#include <vector>

namespace loracle::serving {
namespace {

LayoutItem Item(const void* adapter, int members, int samples, bool sampled, uint64_t seed,
                int64_t encodings) {
  LayoutItem it;
  it.adapter = adapter;
  it.members = members;
  it.samples = samples;
  it.sampled = sampled;
  it.seed = seed;
  it.encodings = encodings;
  return it;
}

TEST(EnsembleLayoutTest, OneRequestIsPassMajorAndEveryInputOfAPassSharesItsMasks) {
  const int adapter = 0;
  const EnsembleLayout l = LayOut({Item(&adapter, 2, 3, true, 42, 4)});
  ASSERT_EQ(l.rows.size(), 2u * 3 * 4);
  ASSERT_EQ(l.groups.size(), 2u);  // one per member
  for (size_t k = 0; k < l.rows.size(); ++k) {
    const RowRef& r = l.rows[k];
    EXPECT_EQ(r.member, static_cast<int>(k / 12));
    EXPECT_EQ(r.sample, static_cast<int>(k / 4 % 3));
    EXPECT_EQ(r.encoding, static_cast<int64_t>(k % 4));
    const RowGroup& g = l.groups[static_cast<size_t>(r.member)];
    EXPECT_TRUE(g.sampled);
    EXPECT_EQ(g.row_seeds[k - static_cast<size_t>(g.begin)], PassSeed(42, r.member, r.sample));
  }
  EXPECT_NE(PassSeed(42, 0, 1), PassSeed(42, 1, 0));
  EXPECT_NE(PassSeed(42, 0, 0), PassSeed(43, 0, 0));
}

TEST(EnsembleLayoutTest, ARequestsMasksDoNotDependOnWhatElseIsInTheBatch) {
  const int a = 0, b = 0;
  const LayoutItem sampled = Item(&a, 2, 2, true, 7, 3);
  const EnsembleLayout alone = LayOut({sampled});
  const EnsembleLayout mixed =
      LayOut({Item(&b, 1, 1, false, 0, 2), Item(&a, 2, 1, false, 0, 1), sampled});
  // Adapters in order of first appearance; per member, unsampled rows then sampled ones.
  ASSERT_EQ(mixed.groups.size(), 5u);
  EXPECT_EQ(mixed.groups[0].item, 0u);
  EXPECT_EQ(mixed.groups[1].item, 1u);
  EXPECT_FALSE(mixed.groups[1].sampled);
  EXPECT_TRUE(mixed.groups[2].sampled);
  EXPECT_EQ(mixed.groups[2].member, 0);
  EXPECT_EQ(mixed.groups[4].member, 1);
  std::vector<uint64_t> seeds_alone, seeds_mixed;
  for (const RowGroup& g : alone.groups) {
    seeds_alone.insert(seeds_alone.end(), g.row_seeds.begin(), g.row_seeds.end());
  }
  for (const RowGroup& g : mixed.groups) {
    if (g.sampled) seeds_mixed.insert(seeds_mixed.end(), g.row_seeds.begin(), g.row_seeds.end());
  }
  EXPECT_EQ(seeds_alone, seeds_mixed);
  EXPECT_TRUE(mixed.groups[0].row_seeds.empty());
}

TEST(EnsembleLayoutTest, ExampleKeysGiveEachExampleItsOwnMasksAndMemberChunksKeepTheirIndex) {
  const std::vector<int64_t> keys = {5, 5, 6};  // example 5 in two windows, then example 6
  LayoutItem it = Item(nullptr, 1, 1, true, 9, 3);
  it.first_member = 2;
  it.example_keys = &keys;
  const EnsembleLayout l = LayOut({it});
  ASSERT_EQ(l.groups.size(), 1u);
  EXPECT_EQ(l.groups[0].member, 2);
  const uint64_t pass = PassSeed(9, 2, 0);
  EXPECT_EQ(
      l.groups[0].row_seeds,
      (std::vector<uint64_t>{ExampleSeed(pass, 5), ExampleSeed(pass, 5), ExampleSeed(pass, 6)}));
}

TEST(EnsembleLayoutTest, GatherAveragesEachInputsWindowsPassByPass) {
  // One member, two samples, three encodings: input 0 in two windows, input 1 in one.
  const EnsembleLayout l = LayOut({Item(nullptr, 1, 2, false, 0, 3)});
  ASSERT_EQ(l.groups.size(), 1u);
  // Rows: (s0, e0) (s0, e1) (s0, e2) (s1, e0) (s1, e1) (s1, e2), two classes each.
  const std::vector<double> logits = {1, 2, 3, 4, 5, 6, 10, 20, 30, 40, 50, 60};
  const std::vector<std::vector<PassLogits>> out = GatherPasses(l, {logits.data()}, {2}, {{2, 1}});
  ASSERT_EQ(out.size(), 1u);
  ASSERT_EQ(out[0].size(), 2u);
  EXPECT_EQ(out[0][0], (PassLogits{{2, 3}, {20, 30}}));
  EXPECT_EQ(out[0][1], (PassLogits{{5, 6}, {50, 60}}));
}

TEST(EnsembleLayoutTest, SummariseIsSoftmaxAtTheTemperatureThenTheSummary) {
  std::vector<std::vector<double>> probs;
  absl::StatusOr<UncertaintySummary> s = Summarise({{0, 0}, {2, 0}}, 2.0, &probs);
  ASSERT_TRUE(s.ok()) << s.status();
  ASSERT_EQ(probs.size(), 2u);
  EXPECT_EQ(probs[1], Softmax({2, 0}, 2.0));
  EXPECT_EQ(s->mean_probs, MeanProbs(probs));
  EXPECT_GT(s->mutual_information, 0);
  EXPECT_FALSE(Summarise({}, 1.0).ok());
}

}  // namespace
}  // namespace loracle::serving
