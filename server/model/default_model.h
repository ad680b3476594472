#ifndef LORACLE_SERVER_MODEL_DEFAULT_MODEL_H_
#define LORACLE_SERVER_MODEL_DEFAULT_MODEL_H_

// The built-in base model: a small BERT-architecture encoder whose Hugging Face-layout checkpoint
// (config.json, model.safetensors, vocab.txt, tokenizer_config.json) is generated
// deterministically, without torch, and then loaded through the same loader as any user
// checkpoint. Weights are random (the init transformers uses: N(0, 0.02) matrices, zero biases,
// unit LayerNorm), so it is a base for adapters, not a pretrained language model.

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "server/model/model_config.h"
#include "server/model/safetensors.h"

namespace loracle::model {

// Name of the directory (under the cache dir) holding the default model; bump the suffix when
// the generator's output changes.
inline constexpr char kDefaultModelName[] = "default-bert-4x256-v1";

// The embedded WordPiece vocabulary built from SpamAssassin mail (server/model/default_vocab.txt).
absl::string_view DefaultVocab();

// 4 layers, hidden 256, 4 heads, FFN 1024, 512 positions, vocab = DefaultVocab().
ModelConfig DefaultModelConfig();

// `n` deterministic N(0, stddev^2) samples (SplitMix64 + Box-Muller): identical on every machine.
std::vector<float> DeterministicNormal(uint64_t seed, size_t n, float stddev);

// FNV-1a of `name` mixed with `seed`: a per-tensor seed independent of tensor order.
uint64_t SeedFor(uint64_t seed, absl::string_view name);

// How WriteRandomCheckpoint lays the weights out.
struct CheckpointLayout {
  DType dtype = DType::kF32;  // F32, F16 or BF16
  // > 0: a *ForSequenceClassification checkpoint: base tensors under "<base_prefix>." plus a
  // random head with this many labels (config.id2label, when set, must have as many entries).
  int64_t num_labels = 0;
  // > 1: model-0000i-of-0000n.safetensors shards plus model.safetensors.index.json, as
  // transformers' save_pretrained(max_shard_size=...) writes them.
  int shards = 1;
  // Test fixtures: > 0 makes biases N(0, s^2) and LayerNorm weights 1 + N(0, s^2) instead of the
  // 0 / 1 transformers initialises them to, so a loader that skipped them would be caught.
  float bias_std = 0.0f;
  float weight_std = 0.02f;  // std of every matrix and embedding
};

// Writes config.json and the safetensors weights of a randomly initialised model (the init
// transformers uses) into `dir` (created if needed). No tokenizer files.
absl::Status WriteRandomCheckpoint(const std::string& dir, const ModelConfig& config, uint64_t seed,
                                   const CheckpointLayout& layout = {});

// WriteRandomCheckpoint plus a WordPiece vocab.txt and tokenizer_config.json (lower-casing).
// config.vocab_size must equal the vocabulary's line count.
absl::Status WriteRandomBertCheckpoint(const std::string& dir, const ModelConfig& config,
                                       absl::string_view vocab_text, uint64_t seed);

// Returns `<cache_dir>/<kDefaultModelName>`, generating it there first if absent. Generation
// goes to a temporary sibling that is renamed into place, so concurrent starts are safe.
absl::StatusOr<std::string> EnsureDefaultModel(const std::string& cache_dir);

}  // namespace loracle::model

#endif  // LORACLE_SERVER_MODEL_DEFAULT_MODEL_H_
