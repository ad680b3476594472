#ifndef LORACLE_SERVER_TRAINING_OPTIMISATION_H_
#define LORACLE_SERVER_TRAINING_OPTIMISATION_H_

// The optimisation LoRA fine-tuning (trainer.h) and masked-language-model pretraining
// (pretrainer.h) share, so that both run one training loop's parts:
//
//   optimiser   AdamW; weight decay on the `decayed` tensors only
//   schedule    linear warmup over warmup_fraction of the steps, then linear decay to 0
//   clipping    the gradient norm of each clip group capped at max_grad_norm
//   failure     a step whose loss is not finite is refused (INTERNAL, naming step and rate)
//   sharding    a step's examples split into contiguous shards, each forward + backward on a
//               thread of its own, gradients summed in shard order (deterministic)
//
// Not thread-safe: one caller drives an Optimisation.

#include <torch/torch.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <utility>
#include <vector>

#include "absl/status/status.h"

namespace loracle::training {

struct OptimisationOptions {
  double learning_rate = 1e-3;
  double warmup_fraction = 0.06;
  double weight_decay = 0.01;
  double max_grad_norm = 1.0;
};

// INVALID_ARGUMENT unless learning_rate and max_grad_norm > 0, warmup_fraction in [0, 1) and
// weight_decay >= 0.
absl::Status ValidateOptimisationOptions(const OptimisationOptions& o);

class Optimisation {
 public:
  // `decayed`, `not_decayed`: the trainable tensors (requires_grad), disjoint. `clip_groups`:
  // the tensors whose gradient norm is clipped together (each a subset of the trainable ones).
  Optimisation(std::vector<torch::Tensor> decayed, std::vector<torch::Tensor> not_decayed,
               std::vector<std::vector<torch::Tensor>> clip_groups, const OptimisationOptions& o,
               int64_t total_steps);

  // The rate of step `step` (0-based) of `total_steps`.
  static double LearningRateAt(const OptimisationOptions& o, int64_t total_steps, int64_t step);

  // With the gradients in the tensors' .grad: INTERNAL when `loss` (the step's) is not finite;
  // else sets this step's rate, clips, steps and advances.
  absl::Status Step(double loss);

  int64_t step() const { return step_; }
  int64_t total_steps() const { return total_steps_; }
  double last_learning_rate() const { return last_lr_; }

 private:
  OptimisationOptions options_;
  int64_t total_steps_;
  std::vector<std::vector<torch::Tensor>> clip_groups_;
  std::unique_ptr<torch::optim::AdamW> optimizer_;
  int64_t step_ = 0;
  double last_lr_ = 0;
};

// [begin, end) of shard `s` of `n` items split into `shards` contiguous parts.
std::pair<size_t, size_t> ShardRange(size_t n, int shards, int s);

// Runs fn(s) for every shard s: shard 0 on the calling thread, the others on threads of their
// own (at idle priority when asked; the caller sets its own). Rethrows the first shard's
// exception, in shard order, after all have finished. Grad mode is per thread: fn sets its own.
void RunShards(int shards, bool idle_priority, const std::function<void(int)>& fn);

// One step's backward over `shards` threads: loss_of(s) (run with grad mode on) returns shard
// s's share of the step's loss, whose gradients with respect to `params` are summed in shard
// order into each param's .grad (zero when no shard reaches it). Returns the sum of the shares.
// Rethrows a shard's exception as RunShards does.
double ShardedBackward(int shards, bool idle_priority, const std::vector<torch::Tensor>& params,
                       const std::function<torch::Tensor(int)>& loss_of);

}  // namespace loracle::training

#endif  // LORACLE_SERVER_TRAINING_OPTIMISATION_H_
