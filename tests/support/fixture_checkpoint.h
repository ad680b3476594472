#ifndef LORACLE_TESTS_SUPPORT_FIXTURE_CHECKPOINT_H_
#define LORACLE_TESTS_SUPPORT_FIXTURE_CHECKPOINT_H_

// Random Hugging Face checkpoints in every layout the loader must read, for tests and benchmark
// fixtures (torch-free, deterministic).

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "server/model/model_config.h"
#include "server/model/safetensors.h"

namespace loracle::testing {

// How WriteRandomCheckpoint lays the weights out.
struct CheckpointLayout {
  model::DType dtype = model::DType::kF32;  // F32, F16 or BF16
  // > 0: a *ForSequenceClassification checkpoint: base tensors under "<base_prefix>." plus a
  // random head with this many labels (config.id2label, when set, must have as many entries).
  int64_t num_labels = 0;
  // > 1: model-0000i-of-0000n.safetensors shards plus model.safetensors.index.json, as
  // transformers' save_pretrained(max_shard_size=...) writes them.
  int shards = 1;
  // > 0 makes biases N(0, s^2) and LayerNorm weights 1 + N(0, s^2) instead of the 0 / 1
  // transformers initialises them to, so a loader that skipped them would be caught.
  float bias_std = 0.0f;
  float weight_std = 0.02f;  // std of every matrix and embedding
};

// Writes config.json and the safetensors weights of a randomly initialised model into `dir`
// (created if needed). No tokenizer files.
absl::Status WriteRandomCheckpoint(const std::string& dir, const model::ModelConfig& config,
                                   uint64_t seed, const CheckpointLayout& layout = {});

}  // namespace loracle::testing

#endif  // LORACLE_TESTS_SUPPORT_FIXTURE_CHECKPOINT_H_
