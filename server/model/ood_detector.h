#ifndef LORACLE_SERVER_MODEL_OOD_DETECTOR_H_
#define LORACLE_SERVER_MODEL_OOD_DETECTOR_H_

// How unlike an adapter's training inputs an input is (torch): the Mahalanobis distance of the
// pooled features the adapter's head reads to the nearest class mean, with one covariance shared
// by all classes (Lee et al., 2018, "A Simple Unified Framework for Detecting Out-of-Distribution
// Samples and Adversarial Attacks"), shrunk towards a scaled identity by the Ledoit-Wolf formula
// (no tuned constant). Fitted by the fine-tune job on the training split's features; stored next
// to the PEFT files in loracle's own file (kOodFile), never inside them.
//
// Views: an ensemble's members are trained independently, so their feature spaces do not line up
// and one Gaussian fit to features averaged over members blurs what each separates. A detector of
// V views holds one Gaussian per member (view v = member v) and scores an input by the mean of
// its per-view distances. One view is the layout of adapters written before views existed
// (features averaged over every pass).
//
// Immutable after Fit/Load; Distances is thread-safe.

#include <torch/torch.h>

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace loracle::model {

inline constexpr char kOodFile[] = "loracle_ood.safetensors";

class OodDetector {
 public:
  // features: [n, H] (one view) or [V, n, H] (any floating type), labels: n class indices in
  // [0, classes); each view is fitted on its own. Needs at least two examples; a class without
  // examples gets no mean (it cannot be nearest). INVALID_ARGUMENT on mismatched sizes or labels
  // out of range.
  static absl::StatusOr<OodDetector> Fit(const torch::Tensor& features,
                                         const std::vector<int>& labels, int classes);
  // Reads `path` (kOodFile's layout: F32 "ood.means" [C, H] and "ood.whitening" [H, H] for one
  // view, [V, C, H] and [V, H, H] for V). NOT_FOUND, DATA_LOSS (corrupt), INVALID_ARGUMENT
  // (shapes; `hidden` > 0 checks H).
  static absl::StatusOr<OodDetector> Load(const std::string& path, int64_t hidden);
  absl::Status Save(const std::string& path) const;

  // Per input, the mean over views v < k of min over classes c of ||W_v (f_v - mu_vc)||, where
  // W_v^T W_v is view v's shrunk covariance inverse: float64 host [n] for features [k, n, H]
  // (1 <= k <= views(); the first k views) or [n, H] (view 0), on any device.
  torch::Tensor Distances(const torch::Tensor& features) const;

  int64_t views() const { return static_cast<int64_t>(means_.size()); }
  int64_t hidden() const { return means_[0].size(1); }
  int64_t classes() const { return means_[0].size(0); }
  // The Ledoit-Wolf shrinkage the fit chose, mean over views (0 = the sample covariance; 1 = a
  // scaled identity); -1 after Load.
  double shrinkage() const { return shrinkage_; }

 private:
  OodDetector(std::vector<torch::Tensor> means, std::vector<torch::Tensor> whitening,
              double shrinkage);

  std::vector<torch::Tensor> means_;      // per view [C', H] float32 host: classes with examples
  std::vector<torch::Tensor> whitening_;  // per view [H, H] float32 host, upper triangular
  std::vector<torch::Tensor> projected_;  // per view means W^T, float64
  double shrinkage_ = -1;
};

}  // namespace loracle::model

#endif  // LORACLE_SERVER_MODEL_OOD_DETECTOR_H_
