#include "server/model/ood_detector.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/types/span.h"
#include "server/model/checkpoint.h"
#include "server/model/safetensors.h"

namespace loracle::model {

OodDetector::OodDetector(std::vector<torch::Tensor> means, std::vector<torch::Tensor> whitening,
                         double shrinkage)
    : means_(std::move(means)), whitening_(std::move(whitening)), shrinkage_(shrinkage) {
  for (size_t v = 0; v < means_.size(); ++v) {
    projected_.push_back(
        torch::matmul(means_[v].to(torch::kFloat64), whitening_[v].to(torch::kFloat64).t()));
  }
}

namespace {

struct ViewFit {
  torch::Tensor means, whitening;
  double shrinkage = 0;
};

// One view: class means and the Ledoit-Wolf shrunk shared covariance's whitening.
ViewFit FitView(const torch::Tensor& x, const torch::Tensor& y, int classes) {
  const int64_t n = x.size(0), h = x.size(1);
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
  return {torch::stack(means).to(torch::kFloat32), whitening.to(torch::kFloat32), shrinkage};
}

}  // namespace

absl::StatusOr<OodDetector> OodDetector::Fit(const torch::Tensor& features,
                                             const std::vector<int>& labels, int classes) {
  const bool viewed = features.dim() == 3;
  if ((features.dim() != 2 && !viewed) ||
      features.size(viewed ? 1 : 0) != static_cast<int64_t>(labels.size()) ||
      (viewed && features.size(0) < 1)) {
    return absl::InvalidArgumentError(
        "OOD fit: features must be [examples, hidden] or [views, examples, hidden], one label "
        "per example");
  }
  if (labels.size() < 2) return absl::InvalidArgumentError("OOD fit: needs at least 2 examples");
  for (int y : labels) {
    if (y < 0 || y >= classes) return absl::InvalidArgumentError("OOD fit: label out of range");
  }
  torch::NoGradGuard no_grad;
  const torch::Tensor x = features.detach().to(torch::kCPU, torch::kFloat64).contiguous();
  const torch::Tensor y =
      torch::tensor(std::vector<int64_t>(labels.begin(), labels.end()), torch::kInt64);
  std::vector<torch::Tensor> means, whitening;
  double shrinkage = 0;
  const int64_t views = viewed ? x.size(0) : 1;
  for (int64_t v = 0; v < views; ++v) {
    ViewFit f = FitView(viewed ? x[v] : x, y, classes);
    means.push_back(std::move(f.means));
    whitening.push_back(std::move(f.whitening));
    shrinkage += f.shrinkage / static_cast<double>(views);
  }
  return OodDetector(std::move(means), std::move(whitening), shrinkage);
}

torch::Tensor OodDetector::Distances(const torch::Tensor& features) const {
  torch::NoGradGuard no_grad;
  const torch::Tensor x = features.detach().to(torch::kCPU, torch::kFloat64);
  const torch::Tensor per_view = x.dim() == 2 ? x.unsqueeze(0) : x;
  const int64_t k = per_view.size(0);
  TORCH_CHECK(k >= 1 && k <= views(), "OodDetector::Distances: ", k, " views of ", views());
  torch::Tensor sum;
  for (int64_t v = 0; v < k; ++v) {
    const torch::Tensor& p = projected_[static_cast<size_t>(v)];
    const torch::Tensor g = torch::matmul(
        per_view[v], whitening_[static_cast<size_t>(v)].to(torch::kFloat64).t());  // [n, H]
    const torch::Tensor d2 = g.pow(2).sum(1, /*keepdim=*/true) - 2.0 * torch::matmul(g, p.t()) +
                             p.pow(2).sum(1).unsqueeze(0);  // [n, C']
    const torch::Tensor d = std::get<0>(d2.min(1)).clamp_min(0.0).sqrt();
    sum = sum.defined() ? sum + d : d;
  }
  return (sum / static_cast<double>(k)).contiguous();
}

absl::Status OodDetector::Save(const std::string& path) const {
  // One view keeps the layout of adapters written before views existed.
  const torch::Tensor means = (views() == 1 ? means_[0] : torch::stack(means_)).contiguous();
  const torch::Tensor whitening =
      (views() == 1 ? whitening_[0] : torch::stack(whitening_)).contiguous();
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
  const bool one = tensors[0].dim() == 2;
  const torch::Tensor means = one ? tensors[0].unsqueeze(0) : tensors[0];
  const torch::Tensor whitening = one ? tensors[1].unsqueeze(0) : tensors[1];
  const int64_t h = means.dim() == 3 ? means.size(2) : -1;
  if (means.dim() != 3 || means.size(0) < 1 || means.size(1) < 1 || whitening.dim() != 3 ||
      whitening.size(0) != means.size(0) || whitening.size(1) != h || whitening.size(2) != h ||
      (hidden > 0 && h != hidden)) {
    return absl::InvalidArgumentError(absl::StrCat(
        path,
        ": ood.means must be [classes, H] and ood.whitening [H, H] (or [views, classes, H] and "
        "[views, H, H])",
        hidden > 0 ? absl::StrCat(" with H = ", hidden, " (the base's)") : ""));
  }
  std::vector<torch::Tensor> m, w;
  for (int64_t v = 0; v < means.size(0); ++v) {
    m.push_back(means[v].contiguous());
    w.push_back(whitening[v].contiguous());
  }
  return OodDetector(std::move(m), std::move(w), -1);
}

}  // namespace loracle::model
