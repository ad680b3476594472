#ifndef LORACLE_SERVER_MODEL_DEFAULT_MODEL_H_
#define LORACLE_SERVER_MODEL_DEFAULT_MODEL_H_

// Where the built-in (pretrained) base model is, and a random BERT-architecture encoder whose
// Hugging Face-layout checkpoint (config.json, model.safetensors, vocab.txt,
// tokenizer_config.json) is generated deterministically, without torch: the init transformers
// uses (N(0, 0.02) matrices, zero biases, unit LayerNorm). Tests, benchmarks and the pretraining
// program (its initial weights) use the random one.

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

// transformers' initialisation of the tensor `name` of `shape`: N(0, weight_std^2) matrices and
// embeddings (the padding row zero), zero biases, unit LayerNorm weights; seeded per tensor name.
std::vector<float> RandomInitValues(const std::string& name, const std::vector<int64_t>& shape,
                                    const ModelConfig& config, uint64_t seed,
                                    float weight_std = 0.02f);

// A randomly initialised bare BERT in Hugging Face layout: config.json, model.safetensors (F32),
// a WordPiece vocab.txt and tokenizer_config.json (lower-casing). config.vocab_size must equal
// the vocabulary's line count. (Test fixtures with other layouts: tests/support.)
absl::Status WriteRandomBertCheckpoint(const std::string& dir, const ModelConfig& config,
                                       absl::string_view vocab_text, uint64_t seed);

// The built-in base model: a small BERT pretrained with masked-language modelling by
// loracle-pretrain (server/model/builtin; its README.md is the model card), an ordinary Hugging
// Face checkpoint loaded like any other. Found as installed, <binary dir>/../share/loracle/
// builtin-model, else in the source tree the binary was built from (a build-tree binary).
// NOT_FOUND naming both places when neither holds a config.json and model.safetensors.
absl::StatusOr<std::string> BuiltinModelDir();

// The random model of DefaultModelConfig() (for tests and benchmarks that want a base of this
// shape without pretraining): returns `<cache_dir>/<kDefaultModelName>`, generating it there
// first if absent. Generation
// goes to a temporary sibling that is renamed into place, so concurrent starts are safe.
absl::StatusOr<std::string> EnsureDefaultModel(const std::string& cache_dir);

}  // namespace loracle::model

#endif  // LORACLE_SERVER_MODEL_DEFAULT_MODEL_H_
