#ifndef LORACLE_SERVER_MODEL_FINGERPRINT_H_
#define LORACLE_SERVER_MODEL_FINGERPRINT_H_

// The identity of a base checkpoint (torch-free), recorded in every adapter loracle writes and
// checked when an adapter loads: an adapter trained on one base answers wrong on another of the
// same shapes, silently, so a mismatch is refused instead.
//
// What it covers: config.json's architecture fields (model_type, sizes, heads, layers, positions,
// token types, pad id, norm epsilon, activation), then every base tensor the backbone reads,
// sorted by name (the "bert." / "model." prefix of *For* classes removed, so a bare model and its
// *ForSequenceClassification save share one fingerprint), each with its dtype, shape and bytes.
// Bytes: all of them when the base tensors hold at most kFullHashBytes; otherwise a fixed strided
// sample of each tensor (its first and last 4 KiB and 254 evenly spaced 4 KiB blocks between).
//
// What it catches: another checkpoint (pretrained or fine-tuned separately), a further-trained
// base, a merged LoRA, another config, another dtype (a converted copy stores rounded weights).
// What it does not: the tokenizer files and the classification head (neither is part of the
// base's features), and, on sampled checkpoints, edits confined to unsampled bytes (a few rows).

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "server/model/model_config.h"
#include "server/model/safetensors.h"

namespace loracle::model {

inline constexpr int64_t kFullHashBytes = int64_t{1} << 30;  // 1 GiB

struct BaseFingerprint {
  std::string id;  // "lfp1-" + 16 hex digits; empty: unknown
  int64_t tensors = 0;
  int64_t bytes = 0;         // the base tensors' bytes
  int64_t hashed_bytes = 0;  // of which hashed (== bytes unless sampled)
  bool sampled = false;
};

// `tensors`: (name as the backbone knows it, view) for every base tensor; order does not matter.
// Tensors sample their bytes when all of them together exceed `full_hash_bytes`.
BaseFingerprint FingerprintBase(const ModelConfig& config,
                                const std::vector<std::pair<std::string, TensorView>>& tensors,
                                int64_t full_hash_bytes = kFullHashBytes);

// 64-bit hash of `size` bytes, stable across builds and machines (little-endian words).
uint64_t StableHash64(const void* data, size_t size, uint64_t seed);

}  // namespace loracle::model

#endif  // LORACLE_SERVER_MODEL_FINGERPRINT_H_
