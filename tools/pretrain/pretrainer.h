#ifndef LORACLE_TOOLS_PRETRAIN_PRETRAINER_H_
#define LORACLE_TOOLS_PRETRAIN_PRETRAINER_H_

// Masked-language-model pretraining of a BERT encoder: BERT's objective (15% of the tokens
// selected; of those 80% become [MASK], 10% a random token, 10% stay) through BertForMaskedLM's
// head (MlmHead), every encoder weight but the pooler trained, with the optimiser, schedule,
// clipping and step sharding LoRA fine-tuning uses (optimisation.h). Optionally a sentence-level
// term trains the pooler too (PretrainOptions::cls_bow_weight). Deterministic given the seed and
// the thread count. tools/pretrain/README.md has the program and the data.

#include <torch/torch.h>

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "server/model/model_config.h"
#include "server/model/safetensors.h"
#include "server/training/optimisation.h"

namespace loracle::model {
struct BaseModel;
}

namespace loracle::pretrain {

using training::OptimisationOptions;

// Token rows of one length: [CLS] t1 ... tn [SEP].
using TokenRows = std::vector<std::vector<int64_t>>;

// Rows of `seq_len` tokens cut from the documents' concatenation, [SEP] between documents
// (transformers' run_mlm "group_texts"); the last partial row is dropped.
TokenRows PackSequences(const std::vector<std::vector<int64_t>>& documents, int seq_len,
                        int64_t cls_id, int64_t sep_id);

struct MaskingOptions {
  double probability = 0.15;     // tokens selected for prediction
  double mask_fraction = 0.8;    // of the selected: replaced by [MASK]
  double random_fraction = 0.1;  // of the selected: replaced by a uniformly random token
  int64_t mask_id = -1;
  int64_t vocab_size = 0;
  std::vector<int64_t> never_mask;  // [CLS], [SEP], [PAD]
};

// Rows `idx` of `rows` with BERT's masking. Row i draws from MixSeed(seed, idx[i]), so a row's
// masks do not depend on how rows are batched or sharded. A row with no selected token gets its
// first maskable one, so every row predicts something.
struct MaskedBatch {
  torch::Tensor input_ids;  // int64 [rows, seq]
  torch::Tensor positions;  // int64 [n]: flat indices (row * seq + t) of the selected tokens
  torch::Tensor labels;     // int64 [n]: their original ids
};
MaskedBatch MaskRows(const TokenRows& rows, const std::vector<size_t>& idx, uint64_t seed,
                     const MaskingOptions& o);

// transformers' BertLMPredictionHead: logits = LayerNorm(act(dense(h))) · Eᵀ + bias, with the
// decoder E tied to the encoder's word embeddings. Parameters are named as in BertForMaskedLM's
// state dict under "cls.predictions.".
class MlmHeadImpl : public torch::nn::Module {
 public:
  // transformers' initialisation: dense N(0, 0.02) from `seed`, zero biases, unit LayerNorm.
  MlmHeadImpl(const model::ModelConfig& config, uint64_t seed);
  // hidden [n, hidden] → logits [n, vocab].
  torch::Tensor forward(const torch::Tensor& hidden, const torch::Tensor& word_embeddings);
  // ("cls.predictions.transform.dense.weight", tensor), ...: every head tensor by its name in
  // BertForMaskedLM's checkpoints.
  std::vector<std::pair<std::string, torch::Tensor>> NamedTensors() const;

 private:
  std::string activation_;
  torch::nn::Linear dense_{nullptr};
  torch::nn::LayerNorm norm_{nullptr};
  torch::Tensor bias_;
};
TORCH_MODULE(MlmHead);

struct PretrainOptions {
  OptimisationOptions optimisation{/*learning_rate=*/1e-3, /*warmup_fraction=*/0.05,
                                   /*weight_decay=*/0.01, /*max_grad_norm=*/1.0};
  int64_t steps = 1000;
  int batch_size = 64;  // rows per step
  MaskingOptions masking;
  int64_t eval_every = 500;  // steps between held-out evaluations; 0: only at the end
  int threads = 2;           // shards of a step (each single-threaded BLAS)
  uint64_t seed = 1;
  // Weight of a sentence-level term beside MLM, for the features BertForSequenceClassification
  // reads: the pooled [CLS] output (BertPooler, then trained too) predicts the row's bag of words
  // through the MLM head: cross-entropy against the uniform distribution over the row's distinct
  // tokens (never_mask ones excluded), averaged over rows. 0: MLM only, the pooler stays as it is.
  double cls_bow_weight = 0;
  // Mixed precision: the training forward's matrix products in bfloat16 (CPU autocast), with
  // float32 weights, gradients, optimiser state and losses. Held-out evaluation stays float32.
  bool bf16 = false;
};

struct MlmEval {
  double loss = 0;      // mean cross-entropy over the selected tokens
  double accuracy = 0;  // of the argmax at the selected tokens
  int64_t predictions = 0;
};

struct PretrainProgress {
  int64_t step = 0;
  int64_t total_steps = 0;
  double loss = 0;          // mean training loss of the steps since the previous report
  double cls_bow_loss = 0;  // its bag-of-words term (unweighted), when cls_bow_weight > 0
  double learning_rate = 0;
  double tokens_per_s = 0;  // since the start
  double elapsed_s = 0;
  bool has_eval = false;
  MlmEval eval;  // held out, when has_eval
};

struct PretrainReport {
  int64_t steps = 0;
  int64_t tokens = 0;  // training tokens processed (steps x batch x seq)
  double seconds = 0;
  double tokens_per_s = 0;
  std::vector<PretrainProgress> curve;  // one entry per log interval and evaluation
  MlmEval heldout;                      // after the last step
};

// Trains `base`'s encoder (all but its pooler unless cls_bow_weight > 0) and `head` on `train`,
// evaluating `heldout` with fixed masks every eval_every steps and at the end; `progress` gets
// every `log_every` steps and every evaluation (the same entries as the report's curve). `base`
// must be on the CPU in float32. INVALID_ARGUMENT for bad options, no rows, rows of mixed lengths,
// or cls_bow_weight > 0 on a model without a pooler; INTERNAL for a torch error or a loss that is
// not finite.
absl::StatusOr<PretrainReport> Pretrain(
    model::BaseModel& base, MlmHead& head, const TokenRows& train, const TokenRows& heldout,
    const PretrainOptions& options, int64_t log_every,
    const std::function<void(const PretrainProgress&)>& progress);

// MLM loss and accuracy of `rows` with masks from `seed`, on `threads` threads, no gradients.
// The bag-of-words targets of rows `idx`: float [rows, vocab_size], each row uniform over its
// distinct tokens outside `never` (all zero for a row of only such tokens).
torch::Tensor BagOfWordsTargets(const TokenRows& rows, const std::vector<size_t>& idx,
                                const std::vector<int64_t>& never, int64_t vocab_size);

MlmEval EvaluateMlm(model::BaseModel& base, MlmHead& head, const TokenRows& rows,
                    const MaskingOptions& masking, uint64_t seed, int threads);

// The MLM head of the BertForMaskedLM checkpoint in `dir` (its cls.predictions.* tensors), for
// `config` (the checkpoint's). NOT_FOUND without model.safetensors; INVALID_ARGUMENT for a missing
// or mis-shaped head tensor.
absl::StatusOr<MlmHead> ReadMlmHead(const std::string& dir, const model::ModelConfig& config);

// `base` and `head` as a BertForMaskedLM checkpoint in `dir` (created): config.json (the base's
// config, architectures ["BertForMaskedLM"]), model.safetensors in `dtype` (F32, F16 or BF16;
// "bert."-prefixed encoder tensors with the pooler, then "cls.predictions.*"), and the base's
// vocab.txt and tokenizer_config.json copied. Files are written atomically.
absl::Status WriteMlmCheckpoint(const std::string& dir, const model::BaseModel& base,
                                const MlmHead& head, model::DType dtype,
                                const std::map<std::string, std::string>& metadata);

// Grows the vocabulary of the BertForMaskedLM checkpoint in `from` (loracle-pretrain's output) to
// `vocab` (vocab.txt's text, whose first entries must be `from`'s, in order) and writes the result
// to `to` (F32): each added entry's word embedding and MLM output bias are the mean of those of
// the tokens it had under the old vocabulary ("##x" as the word "x"), every other tensor as it
// was, so the old ids mean what they meant. INVALID_ARGUMENT when `vocab` does not extend the old
// one or repeats an entry; the loader's errors for `from`.
absl::Status ExtendVocabulary(const std::string& from, const std::string& vocab,
                              const std::string& to);

}  // namespace loracle::pretrain

#endif  // LORACLE_TOOLS_PRETRAIN_PRETRAINER_H_
