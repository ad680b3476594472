#ifndef LORACLE_SERVER_TRAINING_FINE_TUNE_JOB_H_
#define LORACLE_SERVER_TRAINING_FINE_TUNE_JOB_H_

// One fine-tune job from request to served adapter: read and check the data (inline, or files
// under the data directory), tokenise, train (trainer.h), write the members in PEFT's format with
// loracle.json and the validation report as a new version in the store (atomically), and load it
// through the registry, so the next Predict uses it. Nothing is published unless every step
// before it succeeded.
//
// Defaults for fields left 0 (documented in the README's fine-tune section): rank 8, alpha 16,
// PEFT's target modules for the architecture, LORA_DROPOUT p = 0.1 (HIDDENKEY: DropKey and
// HiddenCut 0.1, KL weight 0.5), 1 member, N = 4 test-time samples when dropout is on (else 1),
// 3 epochs, learning rate 1e-3, batch 16, warmup 6%, weight decay 0.01, gradient clipping 1.0,
// 128 tokens in one window (texts cut to it), validation split 0.1.

#include <string>

#include "absl/status/statusor.h"
#include "loracle/v1/training.pb.h"
#include "server/training/dataset.h"
#include "server/training/job_queue.h"
#include "server/training/trainer.h"

namespace loracle::model {
struct BaseModel;
}
namespace loracle::adapters {
class Registry;
class Store;
}  // namespace loracle::adapters

namespace loracle::training {

struct FineTuneContext {
  const model::BaseModel* base = nullptr;  // not owned
  adapters::Store* store = nullptr;        // not owned
  adapters::Registry* registry = nullptr;  // not owned
  std::string data_dir;                    // server-side files must lie inside; empty = none
  DataLimits limits;                       // checked again when the job reads its data
  int threads = 1;                         // TrainerOptions::threads
  bool idle_priority = true;               // TrainerOptions::idle_priority
};

// A job given only data: up to kDefaultMembers members (the first ones that pay kept), no
// dropout, every linear layer adapted, at most kDefaultEpochs epochs, stopped after
// kDefaultPatience epochs without a better validation NLL, the best epoch's weights kept.
inline constexpr int kDefaultMembers = 4;
inline constexpr int kDefaultEpochs = 6;
inline constexpr int kDefaultPatience = 2;

// The trainer options `request` asks for, defaults filled in. INVALID_ARGUMENT for unknown
// dropout methods.
absl::StatusOr<TrainerOptions> TrainerOptionsFor(const loracle::v1::SubmitRequest& request,
                                                 const model::BaseModel& base);

// Runs the job (a JobQueue::Runner). Errors name their cause: the data file and line, the label,
// the step where the loss diverged; CANCELLED when the job was cancelled.
absl::StatusOr<JobOutcome> RunFineTune(const loracle::v1::SubmitRequest& request,
                                       JobContext& context, const FineTuneContext& env);

}  // namespace loracle::training

#endif  // LORACLE_SERVER_TRAINING_FINE_TUNE_JOB_H_
