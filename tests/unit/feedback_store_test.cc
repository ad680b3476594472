#include "server/calibration/feedback_store.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <random>
#include <string>
#include <vector>

#include "server/calibration/conformal.h"

namespace loracle::calibration {
namespace {

using Result = FeedbackStore::Result;

const std::vector<std::string> kLabels = {"ham", "spam", "phish"};

FeedbackStore::Served Served(const std::string& adapter, int64_t version) {
  return {adapter, version, &kLabels};
}

std::unique_ptr<FeedbackStore> Store(int64_t capacity = 1000, int64_t window = 100) {
  FeedbackStore::Options o;
  o.capacity = capacity;
  o.window = window;
  o.ttl = absl::Minutes(10);
  return *FeedbackStore::Create(o);
}

// The online report equals Evaluate's on the same probabilities and labels, since load and over
// the window (the latest `window` outcomes).
TEST(FeedbackStoreTest, OnlineReportEqualsTheOfflineOne) {
  auto store = Store(10000, 150);
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> u(0.01f, 1.0f);
  const absl::Time t0 = absl::Now();
  std::vector<std::vector<double>> probs;
  std::vector<int> labels;
  for (int i = 0; i < 400; ++i) {
    std::vector<float> p = {u(rng), u(rng) * 3, u(rng)};
    const float sum = p[0] + p[1] + p[2];
    for (float& x : p) x /= sum;
    const int y = static_cast<int>(rng() % 3);
    store->Remember("id" + std::to_string(i), Served("spam", 2), p, 0.5, 0.0, t0);
    ASSERT_EQ(*store->Record("id" + std::to_string(i), kLabels[static_cast<size_t>(y)], t0),
              Result::kRecorded);
    probs.emplace_back(p.begin(), p.end());
    labels.push_back(y);
  }
  const auto reports = store->Reports();
  ASSERT_EQ(reports.size(), 1u);
  const CalibrationReport online = reports[0].since_load.Report();
  const CalibrationReport offline = *Evaluate(probs, labels);
  EXPECT_EQ(online.examples, 400u);
  EXPECT_NEAR(online.accuracy, offline.accuracy, 1e-9);
  EXPECT_NEAR(online.ece, offline.ece, 1e-9);
  EXPECT_NEAR(online.mce, offline.mce, 1e-9);
  EXPECT_NEAR(online.nll, offline.nll, 1e-9);
  EXPECT_NEAR(online.brier, offline.brier, 1e-9);
  const CalibrationReport window = reports[0].window.Report();
  const CalibrationReport last =
      *Evaluate({probs.end() - 150, probs.end()}, {labels.end() - 150, labels.end()});
  EXPECT_EQ(window.examples, 150u);
  EXPECT_NEAR(window.ece, last.ece, 1e-9);
  EXPECT_NEAR(window.nll, last.nll, 1e-9);
  int64_t binned = 0;
  for (int64_t c : reports[0].since_load.bin_count) binned += c;
  EXPECT_EQ(binned, 400);
}

// Online set coverage: for an adapter with conformal scores, each labelled prediction counts
// whether PredictionSet at each target held its label; none for adapters without scores.
TEST(FeedbackStoreTest, OnlineSetCoverageEqualsTheOfflineSets) {
  auto store = Store();
  const std::vector<double> scores = {0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95};
  FeedbackStore::Served with_sets = Served("sets", 1);
  with_sets.conformal_scores = &scores;
  std::mt19937 rng(3);
  std::uniform_real_distribution<float> u(0.01f, 1.0f);
  const absl::Time t0 = absl::Now();
  std::array<int64_t, kOnlineCoverageTargets.size()> covered{}, size{};
  for (int i = 0; i < 200; ++i) {
    std::vector<float> p = {u(rng), u(rng), u(rng)};
    const float sum = p[0] + p[1] + p[2];
    for (float& x : p) x /= sum;
    const int y = i % 3;
    for (size_t t = 0; t < kOnlineCoverageTargets.size(); ++t) {
      const std::vector<int> set =
          PredictionSet(std::vector<double>(p.begin(), p.end()),
                        ConformalThreshold(scores, kOnlineCoverageTargets[t]));
      covered[t] += std::find(set.begin(), set.end(), y) != set.end();
      size[t] += static_cast<int64_t>(set.size());
    }
    store->Remember("s" + std::to_string(i), with_sets, p, 0.5, 0.0, t0);
    store->Remember("n" + std::to_string(i), Served("plain", 1), p, 0.5, 0.0, t0);
    ASSERT_TRUE(store->Record("s" + std::to_string(i), kLabels[static_cast<size_t>(y)], t0).ok());
    ASSERT_TRUE(store->Record("n" + std::to_string(i), kLabels[static_cast<size_t>(y)], t0).ok());
  }
  const auto reports = store->Reports();
  ASSERT_EQ(reports.size(), 2u);
  const auto& plain = reports[0].adapter == "plain" ? reports[0] : reports[1];
  const auto& sets = reports[0].adapter == "sets" ? reports[0] : reports[1];
  EXPECT_FALSE(plain.has_sets);
  ASSERT_TRUE(sets.has_sets);
  EXPECT_EQ(sets.set_labelled, 200);
  EXPECT_EQ(sets.set_covered, covered);
  EXPECT_EQ(sets.set_size, size);
  EXPECT_LT(sets.set_covered[0], sets.set_covered[2]) << "higher targets, larger sets";
}

TEST(FeedbackStoreTest, UnknownExpiredDuplicateAndBadLabel) {
  auto store = Store(/*capacity=*/3);
  const absl::Time t0 = absl::Now();
  for (int i = 0; i < 4; ++i) {
    store->Remember("p" + std::to_string(i), Served("a", 1), {0.2f, 0.7f, 0.1f}, 0.7, 0.0, t0);
  }
  EXPECT_EQ(store->remembered(), 3);
  EXPECT_EQ(store->Record("p0", "spam", t0).status().code(), absl::StatusCode::kNotFound)
      << "the oldest is forgotten beyond capacity";
  EXPECT_EQ(store->Record("nope", "spam", t0).status().code(), absl::StatusCode::kNotFound);
  const auto bad = store->Record("p1", "eggs", t0);
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("ham, spam, phish"), std::string::npos) << bad.status();
  EXPECT_EQ(*store->Record("p1", "spam", t0), Result::kRecorded);
  EXPECT_EQ(*store->Record("p1", "ham", t0), Result::kDuplicate);
  EXPECT_EQ(store->Reports()[0].since_load.count, 1) << "counted once";
  EXPECT_EQ(store->Reports()[0].duplicates, 1);
  EXPECT_EQ(store->Record("p2", "spam", t0 + absl::Minutes(11)).status().code(),
            absl::StatusCode::kNotFound)
      << "older than the ttl";
  EXPECT_EQ(store->remembered(), 0);
}

TEST(FeedbackStoreTest, RetainDropsUnloadedVersions) {
  auto store = Store();
  const absl::Time t0 = absl::Now();
  store->Remember("x", Served("a", 1), {0.9f, 0.05f, 0.05f}, 0.9, 0.0, t0);
  store->Remember("y", Served("a", 2), {0.9f, 0.05f, 0.05f}, 0.9, 0.0, t0);
  store->Remember("z", Served("a", 2), {0.9f, 0.05f, 0.05f}, 0.9, 0.0, t0);
  ASSERT_TRUE(store->Record("x", "ham", t0).ok());
  ASSERT_TRUE(store->Record("y", "spam", t0).ok());
  ASSERT_EQ(store->Reports().size(), 2u);
  store->Retain([](absl::string_view, int64_t version) { return version == 2; });
  const auto reports = store->Reports();
  ASSERT_EQ(reports.size(), 1u);
  EXPECT_EQ(reports[0].version, 2);
  EXPECT_EQ(reports[0].since_load.Report().accuracy, 0.0);
  EXPECT_EQ(store->remembered(), 2);
}

// Drift against the validation reference, and against the first window when there is none: the
// same distribution scores near 0, a shifted one far above the 0.25 rule of thumb.
TEST(FeedbackStoreTest, DriftComparesLiveTrafficWithTheReference) {
  auto store = Store(100000, 500);
  std::mt19937 rng(3);
  std::uniform_real_distribution<double> confident(0.85, 1.0), unsure(0.34, 0.6);
  std::uniform_real_distribution<double> low_mi(0.0, 0.004), high_mi(0.1, 0.6);
  std::vector<double> ref_conf, ref_mi;
  for (int i = 0; i < 2000; ++i) {
    ref_conf.push_back(confident(rng));
    ref_mi.push_back(low_mi(rng));
  }
  const DriftHistogram ref = HistogramOf(ref_conf, ref_mi);
  FeedbackStore::Served validated{
      "v", 1, &kLabels, ref.examples, &ref.confidence, &ref.mutual_information};
  const absl::Time t0 = absl::Now();
  int id = 0;
  auto send = [&](const FeedbackStore::Served& s, int n, bool shifted) {
    for (int i = 0; i < n; ++i) {
      store->Remember("q" + std::to_string(id++), s, {0.1f, 0.8f, 0.1f},
                      shifted ? unsure(rng) : confident(rng), shifted ? high_mi(rng) : low_mi(rng),
                      t0);
    }
  };
  auto report = [&](const std::string& adapter) {
    for (const auto& r : store->Reports()) {
      if (r.adapter == adapter) return r;
    }
    return FeedbackStore::VersionReport{};
  };
  send(validated, 500, false);
  FeedbackStore::VersionReport r = report("v");
  ASSERT_TRUE(r.has_drift);
  EXPECT_TRUE(r.reference_from_validation);
  EXPECT_EQ(r.reference_examples, 2000);
  EXPECT_EQ(r.live_examples, 500);
  EXPECT_LT(r.psi_confidence, 0.1);
  EXPECT_LT(r.psi_mutual_information, 0.1);
  send(validated, 500, true);  // the whole window is now shifted traffic
  r = report("v");
  EXPECT_GT(r.psi_confidence, 0.25);
  EXPECT_GT(r.psi_mutual_information, 0.25);

  const FeedbackStore::Served elsewhere{"e", 1, &kLabels};
  send(elsewhere, 499, false);
  EXPECT_FALSE(report("e").has_drift) << "the first window is still filling";
  send(elsewhere, 1, false);
  send(elsewhere, 500, false);
  r = report("e");
  ASSERT_TRUE(r.has_drift);
  EXPECT_FALSE(r.reference_from_validation);
  EXPECT_EQ(r.reference_examples, 500);
  EXPECT_LT(r.psi_confidence, 0.1);
  send(elsewhere, 500, true);
  EXPECT_GT(report("e").psi_confidence, 0.25);
}

TEST(FeedbackStoreTest, BadOptionsAreRefused) {
  FeedbackStore::Options o;
  o.capacity = 0;
  EXPECT_EQ(FeedbackStore::Create(o).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace loracle::calibration
