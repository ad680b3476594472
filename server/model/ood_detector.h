#ifndef LORACLE_SERVER_MODEL_OOD_DETECTOR_H_
#define LORACLE_SERVER_MODEL_OOD_DETECTOR_H_

// How unlike an adapter's training inputs an input is (torch): the Mahalanobis distance of the
// pooled features the adapter's head reads to the nearest class mean, with one covariance shared
// by all classes (Lee et al., 2018, "A Simple Unified Framework for Detecting Out-of-Distribution
// Samples and Adversarial Attacks"), shrunk towards a scaled identity by the Ledoit-Wolf formula
// (no tuned constant). Fitted by the fine-tune job on the training split's features; stored next
// to the PEFT files in loracle's own file (kOodFile), never inside them.
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
  // features: [n, H] (any floating type), labels: n class indices in [0, classes). Needs at least
  // two examples; a class without examples gets no mean (it cannot be nearest). INVALID_ARGUMENT
  // on mismatched sizes or labels out of range.
  static absl::StatusOr<OodDetector> Fit(const torch::Tensor& features,
                                         const std::vector<int>& labels, int classes);
  // Reads `path` (kOodFile's layout: F32 "ood.means" [C, H], "ood.whitening" [H, H]).
  // NOT_FOUND, DATA_LOSS (corrupt), INVALID_ARGUMENT (shapes; `hidden` > 0 checks H).
  static absl::StatusOr<OodDetector> Load(const std::string& path, int64_t hidden);
  absl::Status Save(const std::string& path) const;

  // min over classes c of ||W (f - mu_c)||, W^T W = the shrunk covariance's inverse: float64
  // host [n] for features [n, H] on any device.
  torch::Tensor Distances(const torch::Tensor& features) const;

  int64_t hidden() const { return means_.size(1); }
  int64_t classes() const { return means_.size(0); }
  // The Ledoit-Wolf shrinkage the fit chose (0 = the sample covariance; 1 = a scaled identity);
  // -1 after Load.
  double shrinkage() const { return shrinkage_; }

 private:
  OodDetector(torch::Tensor means, torch::Tensor whitening, double shrinkage);

  torch::Tensor means_;      // [C', H] float32 host: the classes that had examples
  torch::Tensor whitening_;  // [H, H] float32 host, upper triangular
  torch::Tensor projected_;  // means_ W^T, float64
  double shrinkage_ = -1;
};

}  // namespace loracle::model

#endif  // LORACLE_SERVER_MODEL_OOD_DETECTOR_H_
