#include "server/training/optimisation.h"

#include <algorithm>
#include <cmath>
#include <exception>
#include <optional>
#include <thread>

#include "absl/strings/str_cat.h"
#include "server/model/cpu_runtime.h"

namespace loracle::training {

absl::Status ValidateOptimisationOptions(const OptimisationOptions& o) {
  if (!(o.learning_rate > 0) || !(o.warmup_fraction >= 0 && o.warmup_fraction < 1) ||
      !(o.weight_decay >= 0) || !(o.max_grad_norm > 0)) {
    return absl::InvalidArgumentError(
        "learning_rate and max_grad_norm must be > 0, warmup_fraction in [0, 1), weight_decay "
        ">= 0");
  }
  return absl::OkStatus();
}

Optimisation::Optimisation(std::vector<torch::Tensor> decayed,
                           std::vector<torch::Tensor> not_decayed,
                           std::vector<std::vector<torch::Tensor>> clip_groups,
                           const OptimisationOptions& o, int64_t total_steps)
    : options_(o), total_steps_(total_steps), clip_groups_(std::move(clip_groups)) {
  std::vector<torch::optim::OptimizerParamGroup> groups;
  groups.emplace_back(
      std::move(decayed),
      std::make_unique<torch::optim::AdamWOptions>(
          torch::optim::AdamWOptions(o.learning_rate).weight_decay(o.weight_decay)));
  groups.emplace_back(std::move(not_decayed),
                      std::make_unique<torch::optim::AdamWOptions>(
                          torch::optim::AdamWOptions(o.learning_rate).weight_decay(0)));
  optimizer_ = std::make_unique<torch::optim::AdamW>(std::move(groups));
}

double Optimisation::LearningRateAt(const OptimisationOptions& o, int64_t total_steps,
                                    int64_t step) {
  const int64_t warmup = static_cast<int64_t>(std::llround(o.warmup_fraction * total_steps));
  if (step < warmup) return o.learning_rate * static_cast<double>(step + 1) / warmup;
  return o.learning_rate * static_cast<double>(total_steps - step) /
         static_cast<double>(std::max<int64_t>(1, total_steps - warmup));
}

absl::Status Optimisation::Step(double loss) {
  if (!std::isfinite(loss)) {
    return absl::InternalError(absl::StrCat("the training loss became ", loss, " at step ",
                                            step_ + 1, "; try a lower learning_rate (now ",
                                            options_.learning_rate, ")"));
  }
  last_lr_ = LearningRateAt(options_, total_steps_, step_);
  for (auto& group : optimizer_->param_groups()) {
    static_cast<torch::optim::AdamWOptions&>(group.options()).lr(last_lr_);
  }
  for (const auto& group : clip_groups_) {
    torch::nn::utils::clip_grad_norm_(group, options_.max_grad_norm);
  }
  optimizer_->step();
  ++step_;
  return absl::OkStatus();
}

std::pair<size_t, size_t> ShardRange(size_t n, int shards, int s) {
  return {n * static_cast<size_t>(s) / static_cast<size_t>(shards),
          n * static_cast<size_t>(s + 1) / static_cast<size_t>(shards)};
}

void RunShards(int shards, bool idle_priority, const std::function<void(int)>& fn) {
  std::vector<std::exception_ptr> errors(static_cast<size_t>(shards));
  auto run = [&](int s) {
    std::optional<model::IdlePriorityScope> priority;
    if (idle_priority && s > 0) priority.emplace();
    try {
      fn(s);
    } catch (...) {
      errors[static_cast<size_t>(s)] = std::current_exception();
    }
  };
  std::vector<std::thread> threads;
  for (int s = 1; s < shards; ++s) threads.emplace_back(run, s);
  run(0);
  for (std::thread& t : threads) t.join();
  for (const std::exception_ptr& e : errors) {
    if (e) std::rethrow_exception(e);
  }
}

double ShardedBackward(int shards, bool idle_priority, const std::vector<torch::Tensor>& params,
                       const std::function<torch::Tensor(int)>& loss_of) {
  std::vector<std::vector<torch::Tensor>> grads(static_cast<size_t>(shards));
  std::vector<double> losses(static_cast<size_t>(shards), 0.0);
  RunShards(shards, idle_priority, [&](int shard) {
    torch::AutoGradMode grad_mode(true);
    const torch::Tensor loss = loss_of(shard);
    losses[static_cast<size_t>(shard)] = loss.item<double>();
    grads[static_cast<size_t>(shard)] =
        torch::autograd::grad({loss}, params, /*grad_outputs=*/{}, /*retain_graph=*/false,
                              /*create_graph=*/false, /*allow_unused=*/true);
  });
  for (size_t i = 0; i < params.size(); ++i) {
    torch::Tensor sum;
    for (const auto& g : grads) {
      if (!g[i].defined()) continue;
      sum = sum.defined() ? sum + g[i] : g[i];
    }
    if (!sum.defined()) sum = torch::zeros_like(params[i]);
    params[i].mutable_grad() = sum;
  }
  double total = 0;
  for (double l : losses) total += l;
  return total;
}

}  // namespace loracle::training
