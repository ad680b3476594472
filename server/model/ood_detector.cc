#include "server/model/ood_detector.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/types/span.h"
#include "server/model/checkpoint.h"
#include "server/model/safetensors.h"

namespace loracle::model {

OodDetector::OodDetector(torch::Tensor means, torch::Tensor whitening, double shrinkage)
    : means_(std::move(means)), whitening_(std::move(whitening)), shrinkage_(shrinkage) {
  projected_ = torch::matmul(means_.to(torch::kFloat64), whitening_.to(torch::kFloat64).t());
}

absl::StatusOr<OodDetector> OodDetector::Fit(const torch::Tensor& features,
                                             const std::vector<int>& labels, int classes) {
  if (features.dim() != 2 || features.size(0) != static_cast<int64_t>(labels.size())) {
    return absl::InvalidArgumentError(
        "OOD fit: features must be [examples, hidden], one label each");
  }
  if (labels.size() < 2) return absl::InvalidArgumentError("OOD fit: needs at least 2 examples");
  for (int y : labels) {
    if (y < 0 || y >= classes) return absl::InvalidArgumentError("OOD fit: label out of range");
  }
  torch::NoGradGuard no_grad;
  const torch::Tensor x = features.detach().to(torch::kCPU, torch::kFloat64).contiguous();
  const int64_t n = x.size(0), h = x.size(1);
  const torch::Tensor y =
      torch::tensor(std::vector<int64_t>(labels.begin(), labels.end()), torch::kInt64);
  // Class means of the classes that have examples; every example centred on its own class.
  std::vector<torch::Tensor> means;
  torch::Tensor centred = torch::empty_like(x);
  for (int c = 0; c < classes; ++c) {
    const torch::Tensor idx = torch::nonzero(y == c).reshape({-1});
    if (idx.numel() == 0) continue;
    const torch::Tensor rows = x.index_select(0, idx);
    const torch::Tensor mu = rows.mean(0);
    centred.index_copy_(0, idx, rows - mu);
    means.push_back(mu);
  }
  // Ledoit & Wolf (2004): S the sample covariance, m = tr(S)/H, d2 = ||S - mI||^2/H,
  // b2 = min(d2, (mean_k ||x_k||^4 - ||S||^2) / (n H)); Sigma = (b2/d2) m I + (1 - b2/d2) S.
  const torch::Tensor s = torch::matmul(centred.t(), centred) / static_cast<double>(n);
  const double m = s.trace().item<double>() / static_cast<double>(h);
  const torch::Tensor eye = torch::eye(h, torch::kFloat64);
  const double d2 = (s - m * eye).pow(2).sum().item<double>() / static_cast<double>(h);
  const double norm4 = centred.pow(2).sum(1).pow(2).mean().item<double>();
  const double b2 = std::clamp(
      (norm4 - s.pow(2).sum().item<double>()) / (static_cast<double>(n) * static_cast<double>(h)),
      0.0, d2);
  const double shrinkage = d2 > 0 ? b2 / d2 : 1.0;
  // A floor keeps the Cholesky factor finite when every feature is constant.
  const double scale = std::max(m, 1e-12);
  const torch::Tensor sigma = shrinkage * scale * eye + (1.0 - shrinkage) * s + 1e-9 * scale * eye;
  const torch::Tensor lower = torch::linalg_cholesky(sigma);
  const torch::Tensor whitening = torch::linalg_solve_triangular(lower, eye, /*upper=*/false);
  return OodDetector(torch::stack(means).to(torch::kFloat32), whitening.to(torch::kFloat32),
                     shrinkage);
}

torch::Tensor OodDetector::Distances(const torch::Tensor& features) const {
  torch::NoGradGuard no_grad;
  const torch::Tensor g = torch::matmul(features.detach().to(torch::kCPU, torch::kFloat64),
                                        whitening_.to(torch::kFloat64).t());  // [n, H]
  const torch::Tensor d2 = g.pow(2).sum(1, /*keepdim=*/true) -
                           2.0 * torch::matmul(g, projected_.t()) +
                           projected_.pow(2).sum(1).unsqueeze(0);  // [n, C']
  return std::get<0>(d2.min(1)).clamp_min(0.0).sqrt().contiguous();
}

absl::Status OodDetector::Save(const std::string& path) const {
  const torch::Tensor means = means_.contiguous(), whitening = whitening_.contiguous();
  auto bytes = [](const torch::Tensor& t) {
    return absl::Span<const uint8_t>(static_cast<const uint8_t*>(t.data_ptr()),
                                     static_cast<size_t>(t.nbytes()));
  };
  return WriteSafetensors(
      path,
      {{"ood.means", DType::kF32, means.sizes().vec(), bytes(means)},
       {"ood.whitening", DType::kF32, whitening.sizes().vec(), bytes(whitening)}},
      {{"format", "loracle-ood"}, {"method", "mahalanobis"}});
}

absl::StatusOr<OodDetector> OodDetector::Load(const std::string& path, int64_t hidden) {
  absl::StatusOr<std::unique_ptr<SafetensorsFile>> file = SafetensorsFile::Open(path);
  if (!file.ok()) return file.status();
  torch::Tensor tensors[2];
  const char* names[2] = {"ood.means", "ood.whitening"};
  for (int i = 0; i < 2; ++i) {
    absl::StatusOr<TensorView> view = (*file)->Get(names[i]);
    if (!view.ok()) return view.status();
    absl::StatusOr<torch::Tensor> t = ToFloatTensor(*view, names[i]);
    if (!t.ok()) return t.status();
    tensors[i] = *std::move(t);
  }
  const torch::Tensor& means = tensors[0];
  const torch::Tensor& whitening = tensors[1];
  const int64_t h = means.dim() == 2 ? means.size(1) : -1;
  if (means.dim() != 2 || means.size(0) < 1 || whitening.dim() != 2 || whitening.size(0) != h ||
      whitening.size(1) != h || (hidden > 0 && h != hidden)) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": ood.means must be [classes, H] and ood.whitening [H, H]",
                     hidden > 0 ? absl::StrCat(" with H = ", hidden, " (the base's)") : ""));
  }
  return OodDetector(means, whitening, -1);
}

}  // namespace loracle::model
