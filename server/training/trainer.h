#ifndef LORACLE_SERVER_TRAINING_TRAINER_H_
#define LORACLE_SERVER_TRAINING_TRAINER_H_

// Trains the LoRA factors and classification heads of M ensemble members on a frozen base model
// (LibTorch), with the LoRA dropout family's seeded masks under autograd, then writes a
// validation report (DESIGN.md): per member, first member, ensemble of M members x N test-time
// samples, and the ensemble after one temperature fitted by NLL on the validation data.
//
//   optimiser   AdamW over the LoRA factors and the heads only (the base has no gradients);
//               linear warmup over warmup_fraction of the steps, then linear decay to 0;
//               gradients clipped to max_grad_norm per member
//   loss        cross-entropy per member, summed over members (each member trains as if alone);
//               HIDDENKEY: (CE(a) + CE(b)) / 2 + kl_weight * symmetric KL of two masked passes
//   members     each initialised from its own seed (PEFT: A kaiming-uniform, B = 0); a step
//               runs them one after another (kSequential, the default: measured faster on CPU)
//               or as M row groups of ONE forward (kOneForward, as serving runs them); the same
//               masks and, up to float rounding, the same result either way
//   threads     a step's examples are split into `threads` shards, each forward + backward on
//               its own thread, gradients summed in shard order; the run holds a
//               model::TrainingScope (single-threaded BLAS) and, with idle_priority, its threads
//               run at SCHED_IDLE so that serving keeps the cores it wants
//   early stop  the ensemble's validation NLL after every epoch; the best epoch's weights are
//               kept; `patience` epochs without improvement stop the run
//
// Deterministic given the seed, the thread count and the member schedule. Not thread-safe; one
// Train call at a time per Trainer, on the calling thread.

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "server/adapters/adapter_config.h"
#include "server/calibration/calibration.h"
#include "server/calibration/error_score.h"
#include "server/model/dropout.h"
#include "server/model/lora.h"
#include "server/model/ood_detector.h"
#include "server/text/tokenizer.h"

namespace loracle::model {
struct BaseModel;
}

namespace loracle::training {

struct TrainerOptions {
  adapters::PeftLoraConfig lora;  // rank, lora_alpha, target_modules, use_rslora
  model::DropoutSpec dropout;     // training-time (and serving) dropout
  double kl_weight = 0.5;         // HIDDENKEY's lambda
  int members = 1;                // M
  int mc_samples = 1;             // N: test-time samples per member in the report (and serving)
  int epochs = 3;
  int64_t max_steps = 0;  // 0 = all epochs
  double learning_rate = 1e-3;
  double warmup_fraction = 0.06;
  double weight_decay = 0.01;
  int batch_size = 16;  // examples per step (each runs as M rows)
  double max_grad_norm = 1.0;
  int patience = 0;  // epochs without validation-NLL improvement before stopping; 0 = never
  // Fit the OOD detector after training (one more forward over the training split).
  bool fit_ood = true;
  // Keep only the first members that pay: member k stays when the calibrated ensemble of the
  // first k cuts the validation NLL by at least kMemberPayoff of the smaller kept ensemble's.
  bool choose_members = false;
  uint64_t seed = 1;
  enum class MemberSchedule { kSequential, kOneForward };
  MemberSchedule member_schedule = MemberSchedule::kSequential;
  int threads = 1;
  bool idle_priority = false;
};

// Tokenised examples and their class indices. An example read in windows (Tokenizer::Windows)
// has several consecutive inputs; its logits are the mean of its windows' logits, in training
// and in the report as in serving.
struct EncodedData {
  std::vector<text::Encoding> inputs;  // every example's windows, example-major
  std::vector<int> labels;             // one per example
  // Example i's inputs are [starts[i], starts[i + 1]); empty = one input per example.
  std::vector<size_t> starts;
  size_t size() const { return labels.size(); }
  size_t begin(size_t i) const { return starts.empty() ? i : starts[i]; }
  size_t end(size_t i) const { return starts.empty() ? i + 1 : starts[i + 1]; }
  // Appends one example.
  void Add(std::vector<text::Encoding> windows, int label);
};

struct TrainingProgress {
  int64_t step = 0;
  int64_t total_steps = 0;
  int epoch = 0;
  double loss = 0;           // mean training loss over the last steps
  double learning_rate = 0;  // of the last step
  double examples_per_s = 0;
  double eta_s = 0;
  bool has_validation = false;
  calibration::CalibrationReport validation;  // the ensemble's, after the latest epoch
};

struct TrainingReport {
  size_t validation_examples = 0;
  std::vector<calibration::CalibrationReport> members;  // one pass each, no dropout
  calibration::CalibrationReport single;                // member 0
  calibration::CalibrationReport ensemble;              // M x N passes
  double temperature = 1.0;
  calibration::CalibrationReport calibrated;  // the ensemble at `temperature`
  // Per validation example, as serving will summarise it (M x N passes at `temperature`, run by
  // the same ensemble engine, masks as a Predict without a seed draws them): the probabilities,
  // and confidence and mutual information, the reference distribution for drift
  // (calibration/drift.h).
  std::vector<std::vector<double>> validation_probs;
  std::vector<int> validation_labels;
  std::vector<double> validation_confidence;
  std::vector<double> validation_mutual_information;
  // The split-conformal LAC scores 1 - p_y of validation_probs, sorted (calibration/conformal.h).
  std::vector<double> conformal_scores;
  // The error score chosen on those predictions (calibration/error_score.h), each candidate's
  // AURC (in kErrorScores order), and the chosen score of every validation prediction, ascending,
  // with whether it was wrong.
  calibration::ErrorScore error_score = calibration::ErrorScore::kOneMinusConfidence;
  std::vector<double> error_score_aurc;
  std::vector<double> error_score_wins;  // bootstrap share beating 1 - confidence, same order
  std::vector<double> error_scores;
  std::vector<bool> error_wrong;
  // The OOD detector's threshold (the kOodQuantile quantile of the validation distances), the
  // Ledoit-Wolf shrinkage its covariance took, and every validation text's ood_score, ascending.
  // ood_threshold == 0: no detector.
  double ood_threshold = 0;
  double ood_shrinkage = 0;
  std::vector<double> ood_validation_scores;
  // Members: how many were trained (`members` reports each); the calibrated validation NLL of
  // the ensemble of the first k members, k = 1..members_trained (one deterministic pass each);
  // the best single member calibrated at its own temperature, and the AURC (1 - confidence) of
  // that member and of all trained members together.
  int members_trained = 1;
  std::vector<double> ensemble_nll_by_members;
  int best_member = 0;
  calibration::CalibrationReport best_member_calibrated;
  double best_member_aurc = 0;
  double members_aurc = 0;
  int64_t steps = 0;      // optimiser steps run
  int64_t best_step = 0;  // the step whose weights were kept
  double seconds = 0;
};

struct TrainedMembers {
  std::vector<model::LoraMember> members;  // detached, no gradients
  TrainingReport report;
  std::shared_ptr<const model::OodDetector> ood;  // null: none fitted
};

// ood_score = 1 at this quantile of the validation texts' distances.
inline constexpr double kOodQuantile = 0.95;
// TrainerOptions::choose_members: the relative validation-NLL cut a member must buy.
inline constexpr double kMemberPayoff = 0.01;

class Trainer {
 public:
  // `progress` is called on the calling thread after every step; `cancelled` is polled before
  // every step (CANCELLED when it returns true). Errors: INVALID_ARGUMENT (bad options, no
  // targeted layer, empty data), CANCELLED, INTERNAL (a torch error, or a loss that became NaN or
  // infinite: the message names the step and suggests a lower learning rate).
  static absl::StatusOr<TrainedMembers> Train(
      const model::BaseModel& base, const std::vector<std::string>& labels,
      const EncodedData& train, const EncodedData& validation, const TrainerOptions& options,
      const std::function<void(const TrainingProgress&)>& progress,
      const std::function<bool()>& cancelled);
};

}  // namespace loracle::training

#endif  // LORACLE_SERVER_TRAINING_TRAINER_H_
