// model::OodDetector: the Mahalanobis distance to the nearest class mean under a shared,
// Ledoit-Wolf-shrunk covariance; its file round trip; its errors.

#include "server/model/ood_detector.h"

#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "tests/support/test_util.h"

namespace loracle::model {
namespace {

// Two classes in 8 dimensions: means +-2 on the first axis, correlated noise.
torch::Tensor Sample(int n, int label, uint64_t seed) {
  torch::manual_seed(seed);
  torch::Tensor x = torch::randn({n, 8}, torch::kFloat64);
  x.select(1, 1) += 0.9 * x.select(1, 0);  // a correlation the covariance has to learn
  x.select(1, 0) += label == 0 ? -2.0 : 2.0;
  return x;
}

TEST(OodDetectorTest, FarPointsScoreHigherThanHeldOutInDistributionPoints) {
  const torch::Tensor train = torch::cat({Sample(400, 0, 1), Sample(400, 1, 2)});
  std::vector<int> labels(800, 0);
  std::fill(labels.begin() + 400, labels.end(), 1);
  absl::StatusOr<OodDetector> d = OodDetector::Fit(train, labels, 2);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->hidden(), 8);
  EXPECT_EQ(d->classes(), 2);
  EXPECT_GE(d->shrinkage(), 0);
  EXPECT_LT(d->shrinkage(), 0.5) << "800 samples in 8 dimensions need little shrinkage";

  const torch::Tensor held_out = torch::cat({Sample(200, 0, 3), Sample(200, 1, 4)});
  const torch::Tensor in = d->Distances(held_out);
  ASSERT_EQ(in.scalar_type(), torch::kFloat64);
  ASSERT_EQ(in.size(0), 400);
  // Whitened 8-dim Gaussian: the squared distance to the own class mean is about chi2(8), mean 8.
  EXPECT_NEAR(in.pow(2).mean().item<double>(), 8.0, 1.5);

  // 6 conditional standard deviations off class 1's mean along the second axis.
  torch::Tensor off = torch::zeros({1, 8}, torch::kFloat64);
  off[0][1] = -6.0;
  off[0][0] = 2.0;
  const double far = d->Distances(off).item<double>();
  EXPECT_GT(far, torch::quantile(in, 0.99).item<double>());
  // A point at a class mean is at distance ~0.
  torch::Tensor at_mean = torch::zeros({1, 8}, torch::kFloat64);
  at_mean[0][0] = 2.0;
  EXPECT_LT(d->Distances(at_mean).item<double>(), 0.5);
}

TEST(OodDetectorTest, SavesAndLoadsTheSameDistances) {
  const torch::Tensor train = torch::cat({Sample(50, 0, 5), Sample(50, 1, 6)});
  std::vector<int> labels(100, 0);
  std::fill(labels.begin() + 50, labels.end(), 1);
  absl::StatusOr<OodDetector> d = OodDetector::Fit(train, labels, 3);  // class 2 has no examples
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->classes(), 2);
  testing::TempDir dir;
  const std::string path = dir.path() + "/" + kOodFile;
  ASSERT_TRUE(d->Save(path).ok());
  absl::StatusOr<OodDetector> loaded = OodDetector::Load(path, 8);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  const torch::Tensor probe = Sample(20, 1, 7);
  EXPECT_TRUE(torch::allclose(d->Distances(probe), loaded->Distances(probe), 1e-9, 1e-9));
  EXPECT_EQ(loaded->shrinkage(), -1);

  EXPECT_EQ(OodDetector::Load(path, 16).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(OodDetector::Load(dir.path() + "/missing.safetensors", 8).status().code(),
            absl::StatusCode::kNotFound);
}

TEST(OodDetectorTest, RejectsMismatchedInputs) {
  const torch::Tensor x = torch::randn({4, 3});
  EXPECT_EQ(OodDetector::Fit(x, {0, 1, 0}, 2).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(OodDetector::Fit(x, {0, 1, 0, 2}, 2).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(OodDetector::Fit(x.slice(0, 0, 1), {0}, 2).status().code(),
            absl::StatusCode::kInvalidArgument);
  // Constant features: a finite detector (the covariance floor), every point at distance 0.
  absl::StatusOr<OodDetector> flat = OodDetector::Fit(torch::ones({6, 3}), {0, 0, 0, 1, 1, 1}, 2);
  ASSERT_TRUE(flat.ok()) << flat.status();
  EXPECT_TRUE(torch::isfinite(flat->Distances(torch::zeros({1, 3}))).all().item<bool>());
}

}  // namespace
}  // namespace loracle::model
