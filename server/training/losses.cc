#include "server/training/losses.h"

namespace loracle::training {

torch::Tensor CrossEntropy(const torch::Tensor& logits, const torch::Tensor& labels) {
  return torch::nll_loss(torch::log_softmax(logits, -1), labels);
}

torch::Tensor SymmetricKl(const torch::Tensor& logits_a, const torch::Tensor& logits_b) {
  const torch::Tensor la = torch::log_softmax(logits_a, -1);
  const torch::Tensor lb = torch::log_softmax(logits_b, -1);
  // sum_c p_a (log p_a - log p_b) + p_b (log p_b - log p_a) = sum_c (p_a - p_b)(log p_a - log p_b)
  return 0.5 * ((la.exp() - lb.exp()) * (la - lb)).sum(-1).mean();
}

torch::Tensor HiddenKeyLoss(const torch::Tensor& logits_a, const torch::Tensor& logits_b,
                            const torch::Tensor& labels, double kl_weight) {
  return 0.5 * (CrossEntropy(logits_a, labels) + CrossEntropy(logits_b, labels)) +
         kl_weight * SymmetricKl(logits_a, logits_b);
}

}  // namespace loracle::training
