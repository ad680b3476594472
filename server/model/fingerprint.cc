#include "server/model/fingerprint.h"

#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"

namespace loracle::model {
namespace {

constexpr uint64_t kMul1 = 0x9E3779B185EBCA87ull;
constexpr uint64_t kMul2 = 0xC2B2AE3D27D4EB4Full;
constexpr size_t kBlock = 4096;
constexpr int kSampleBlocks = 256;

uint64_t Rotl(uint64_t x, int r) { return (x << r) | (x >> (64 - r)); }

uint64_t Mix(uint64_t h, uint64_t word) {
  h ^= Rotl(word * kMul2, 31) * kMul1;
  return Rotl(h, 27) * kMul1 + 0x52DCE729;
}

uint64_t Finish(uint64_t h) {
  h ^= h >> 33;
  h *= kMul2;
  h ^= h >> 29;
  h *= kMul1;
  return h ^ (h >> 32);
}

}  // namespace

uint64_t StableHash64(const void* data, size_t size, uint64_t seed) {
  const auto* p = static_cast<const uint8_t*>(data);
  uint64_t h = seed ^ (size * kMul1);
  size_t i = 0;
  for (; i + 8 <= size; i += 8) {
    uint64_t w;
    std::memcpy(&w, p + i, 8);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    w = __builtin_bswap64(w);
#endif
    h = Mix(h, w);
  }
  uint64_t tail = 0;
  for (size_t b = 0; b < size - i; ++b) tail |= static_cast<uint64_t>(p[i + b]) << (8 * b);
  return Finish(Mix(h, tail));
}

BaseFingerprint FingerprintBase(const ModelConfig& config,
                                const std::vector<std::pair<std::string, TensorView>>& tensors,
                                int64_t full_hash_bytes) {
  BaseFingerprint fp;
  std::vector<const std::pair<std::string, TensorView>*> sorted;
  for (const auto& t : tensors) {
    sorted.push_back(&t);
    fp.bytes += static_cast<int64_t>(t.second.nbytes);
  }
  std::sort(sorted.begin(), sorted.end(),
            [](const auto* a, const auto* b) { return a->first < b->first; });
  fp.tensors = static_cast<int64_t>(sorted.size());
  fp.sampled = fp.bytes > full_hash_bytes;

  const std::string header = absl::StrFormat(
      "loracle-base-v1|%s|vocab=%d|hidden=%d|layers=%d|heads=%d|ffn=%d|positions=%d|types=%d|"
      "pad=%d|eps=%.17g|act=%s",
      config.model_type, config.vocab_size, config.hidden_size, config.num_hidden_layers,
      config.num_attention_heads, config.intermediate_size, config.max_position_embeddings,
      config.type_vocab_size, config.pad_token_id, config.layer_norm_eps, config.hidden_act);
  std::string full = header;
  if (config.is_decoder()) {
    const RopeScaling& r = config.rope_scaling;
    full += absl::StrFormat(
        "|kv=%d|head_dim=%d|rms_eps=%.17g|theta=%.17g|rope=%s,%.17g,%.17g,%.17g,%d|qkv_bias=%d|"
        "o_bias=%d|mlp_bias=%d|window=%d",
        config.num_key_value_heads, config.head_dim, config.rms_norm_eps, config.rope_theta, r.type,
        r.factor, r.low_freq_factor, r.high_freq_factor, r.original_max_position_embeddings,
        config.qkv_bias(), config.o_bias(), config.mlp_bias, config.sliding_window);
  }
  uint64_t h = StableHash64(full.data(), full.size(), 0);
  for (const auto* t : sorted) {
    const TensorView& v = t->second;
    const std::string meta =
        absl::StrCat(t->first, "|", DTypeName(v.dtype), "|", absl::StrJoin(v.shape, ","));
    h = Mix(h, StableHash64(meta.data(), meta.size(), h));
    if (!fp.sampled || v.nbytes <= kBlock * kSampleBlocks) {
      h = Mix(h, StableHash64(v.data, v.nbytes, h));
      fp.hashed_bytes += static_cast<int64_t>(v.nbytes);
      continue;
    }
    // Blocks at offsets k * (nbytes - kBlock) / (kSampleBlocks - 1): first and last included.
    const size_t span = v.nbytes - kBlock;
    for (int k = 0; k < kSampleBlocks; ++k) {
      const size_t offset =
          static_cast<size_t>((static_cast<unsigned __int128>(span) * k) / (kSampleBlocks - 1));
      h = Mix(h, StableHash64(v.data + offset, kBlock, h));
      fp.hashed_bytes += kBlock;
    }
  }
  fp.id = absl::StrFormat("lfp1-%016x", Finish(h));
  return fp;
}

}  // namespace loracle::model
