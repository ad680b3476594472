#ifndef LORACLE_SERVER_TRAINING_LOSSES_H_
#define LORACLE_SERVER_TRAINING_LOSSES_H_

// Training losses for the dropout family (DESIGN.md): cross-entropy, and HiddenKey's
// bidirectional KL consistency term between two dropout-masked forwards of the same batch.

#include <torch/torch.h>

namespace loracle::training {

// Mean cross-entropy of logits [rows, labels] against int64 labels [rows].
torch::Tensor CrossEntropy(const torch::Tensor& logits, const torch::Tensor& labels);

// 0.5 * (KL(p_a || p_b) + KL(p_b || p_a)), averaged over rows, with p = softmax(logits).
// Symmetric, >= 0, and 0 exactly when the two distributions agree. Differentiable in both.
torch::Tensor SymmetricKl(const torch::Tensor& logits_a, const torch::Tensor& logits_b);

// HiddenKey's objective for two forwards a, b of the same rows under independent masks:
// (CE(a) + CE(b)) / 2 + kl_weight * SymmetricKl(a, b).
torch::Tensor HiddenKeyLoss(const torch::Tensor& logits_a, const torch::Tensor& logits_b,
                            const torch::Tensor& labels, double kl_weight);

}  // namespace loracle::training

#endif  // LORACLE_SERVER_TRAINING_LOSSES_H_
