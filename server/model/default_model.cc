#include "server/model/default_model.h"

#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "nlohmann/json.hpp"
#include "server/model/architecture.h"
#include "server/model/safetensors.h"
#include "server/util/file_util.h"

namespace loracle::model {

extern const char kDefaultVocab[];  // generated from default_vocab.txt at build time

namespace {

constexpr uint64_t kDefaultSeed = 20240601;

uint64_t SplitMix64(uint64_t* state) {
  uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

int64_t CountLines(absl::string_view text) {
  int64_t n = 0;
  for (char c : text) n += c == '\n';
  if (!text.empty() && text.back() != '\n') ++n;
  return n;
}

bool EndsWith(absl::string_view s, absl::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

// IEEE binary16 / bfloat16 bits of `f`, rounded to nearest even.
uint16_t ToHalf(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  const uint32_t sign = (x >> 16) & 0x8000u;
  const uint32_t abs = x & 0x7FFFFFFFu;
  if (abs >= 0x7F800000u)
    return static_cast<uint16_t>(sign | (abs > 0x7F800000u ? 0x7E00u : 0x7C00u));
  if (abs >= 0x477FF000u) return static_cast<uint16_t>(sign | 0x7C00u);  // overflows to inf
  if (abs < 0x38800000u) {  // subnormal half (or zero): scale the float's value by 2^24
    float a;
    std::memcpy(&a, &abs, 4);
    return static_cast<uint16_t>(sign | static_cast<uint32_t>(std::nearbyint(a * 16777216.0f)));
  }
  const uint32_t mant = abs & 0x7FFFFFu;
  uint32_t h = ((abs >> 23) - 112) << 10 | (mant >> 13);
  const uint32_t rest = mant & 0x1FFFu;
  if (rest > 0x1000u || (rest == 0x1000u && (h & 1u))) ++h;  // may carry into the exponent: fine
  return static_cast<uint16_t>(sign | h);
}
uint16_t ToBFloat16(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  if ((x & 0x7FFFFFFFu) > 0x7F800000u) return static_cast<uint16_t>((x >> 16) | 0x40u);  // NaN
  x += 0x7FFFu + ((x >> 16) & 1u);
  return static_cast<uint16_t>(x >> 16);
}

std::vector<uint8_t> EncodeFloats(const std::vector<float>& values, DType dtype) {
  std::vector<uint8_t> out;
  if (dtype == DType::kF32) {
    out.resize(values.size() * 4);
    std::memcpy(out.data(), values.data(), out.size());
    return out;
  }
  std::vector<uint16_t> half(values.size());
  for (size_t i = 0; i < values.size(); ++i) {
    half[i] = dtype == DType::kF16 ? ToHalf(values[i]) : ToBFloat16(values[i]);
  }
  out.resize(half.size() * 2);
  std::memcpy(out.data(), half.data(), out.size());
  return out;
}

}  // namespace

absl::string_view DefaultVocab() { return kDefaultVocab; }

ModelConfig DefaultModelConfig() {
  ModelConfig c;
  c.vocab_size = CountLines(DefaultVocab());
  c.hidden_size = 256;
  c.num_hidden_layers = 4;
  c.num_attention_heads = 4;
  c.intermediate_size = 1024;
  c.max_position_embeddings = 512;
  c.type_vocab_size = 2;
  c.pad_token_id = 0;
  c.layer_norm_eps = 1e-12;
  c.hidden_act = "gelu";
  return c;
}

std::vector<float> DeterministicNormal(uint64_t seed, size_t n, float stddev) {
  std::vector<float> out(n);
  uint64_t state = seed;
  constexpr double kTwoPi = 6.283185307179586;
  for (size_t k = 0; k < n; k += 2) {
    // Uniforms in (0, 1]: 53 random bits.
    const double u1 = (static_cast<double>(SplitMix64(&state) >> 11) + 1.0) * 0x1.0p-53;
    const double u2 = static_cast<double>(SplitMix64(&state) >> 11) * 0x1.0p-53;
    const double r = std::sqrt(-2.0 * std::log(u1));
    out[k] = static_cast<float>(stddev * r * std::cos(kTwoPi * u2));
    if (k + 1 < n) out[k + 1] = static_cast<float>(stddev * r * std::sin(kTwoPi * u2));
  }
  return out;
}

uint64_t SeedFor(uint64_t seed, absl::string_view name) {
  uint64_t h = 1469598103934665603ull ^ seed;
  for (unsigned char ch : name) {
    h ^= ch;
    h *= 1099511628211ull;
  }
  return h;
}

absl::Status WriteRandomCheckpoint(const std::string& dir, const ModelConfig& config, uint64_t seed,
                                   const CheckpointLayout& layout) {
  if (layout.dtype != DType::kF32 && layout.dtype != DType::kF16 && layout.dtype != DType::kBF16) {
    return absl::InvalidArgumentError("checkpoint dtype must be F32, F16 or BF16");
  }
  if (layout.shards < 1) return absl::InvalidArgumentError("shards must be >= 1");
  if (layout.num_labels > 0 && !config.id2label.empty() &&
      static_cast<int64_t>(config.id2label.size()) != layout.num_labels) {
    return absl::InvalidArgumentError("id2label and num_labels disagree");
  }
  if (absl::Status s = util::MakeDirs(dir); !s.ok()) return s;
  TensorShapes shapes;
  const std::string prefix =
      layout.num_labels > 0 ? LayoutFor(config.architecture()).base_prefix + "." : "";
  for (auto& [name, shape] : BaseTensorShapes(config)) shapes.push_back({prefix + name, shape});
  if (layout.num_labels > 0) {
    for (auto& t : HeadTensorShapes(config, layout.num_labels)) shapes.push_back(t);
  }
  std::vector<std::vector<uint8_t>> data;
  data.reserve(shapes.size());
  for (const auto& [name, shape] : shapes) {
    size_t n = 1;
    for (int64_t d : shape) n *= static_cast<size_t>(d);
    std::vector<float> values;
    if (EndsWith(name, "LayerNorm.weight") || EndsWith(name, "layer_norm.weight")) {
      values.assign(n, 1.0f);
      if (layout.bias_std > 0) {
        values = DeterministicNormal(SeedFor(seed, name), n, layout.bias_std);
        for (float& v : values) v += 1.0f;
      }
    } else if (EndsWith(name, ".bias")) {
      values.assign(n, 0.0f);
      if (layout.bias_std > 0)
        values = DeterministicNormal(SeedFor(seed, name), n, layout.bias_std);
    } else {
      values = DeterministicNormal(SeedFor(seed, name), n, layout.weight_std);
      if (EndsWith(name, "embeddings.word_embeddings.weight")) {  // padding_idx row is zero
        std::fill_n(values.begin() + config.pad_token_id * config.hidden_size, config.hidden_size,
                    0.0f);
      }
    }
    data.push_back(EncodeFloats(values, layout.dtype));
  }
  std::vector<TensorToWrite> tensors;
  for (size_t k = 0; k < shapes.size(); ++k) {
    tensors.push_back({shapes[k].first, layout.dtype, shapes[k].second,
                       absl::Span<const uint8_t>(data[k].data(), data[k].size())});
  }
  ModelConfig written = config;
  if (layout.num_labels > 0 && written.architectures.empty()) {
    written.architectures = {SpecFor(config.architecture()).classification_class};
  }
  if (layout.num_labels > 0 && written.id2label.empty()) {
    for (int64_t i = 0; i < layout.num_labels; ++i) {
      written.id2label.push_back(absl::StrCat("LABEL_", i));
    }
  }
  if (absl::Status s = util::WriteFileAtomically(dir + "/config.json", ModelConfigToJson(written));
      !s.ok()) {
    return s;
  }
  if (layout.shards == 1) {
    return WriteSafetensors(dir + "/model.safetensors", tensors, {{"format", "pt"}});
  }
  // Contiguous runs of tensors, about equal in bytes, one file each.
  size_t total = 0;
  for (const auto& d : data) total += d.size();
  const size_t per_shard = (total + static_cast<size_t>(layout.shards) - 1) / layout.shards;
  nlohmann::json index = {{"metadata", {{"total_size", total}}},
                          {"weight_map", nlohmann::json::object()}};
  size_t k = 0;
  for (int shard = 1; shard <= layout.shards; ++shard) {
    const std::string file =
        absl::StrFormat("model-%05d-of-%05d.safetensors", shard, layout.shards);
    std::vector<TensorToWrite> part;
    size_t bytes = 0;
    while (k < tensors.size() && (shard == layout.shards || bytes < per_shard || part.empty())) {
      bytes += data[k].size();
      index["weight_map"][tensors[k].name] = file;
      part.push_back(tensors[k++]);
    }
    if (absl::Status s = WriteSafetensors(dir + "/" + file, part, {{"format", "pt"}}); !s.ok()) {
      return s;
    }
  }
  return util::WriteFileAtomically(dir + "/model.safetensors.index.json", index.dump(2) + "\n");
}

absl::Status WriteRandomBertCheckpoint(const std::string& dir, const ModelConfig& config,
                                       absl::string_view vocab_text, uint64_t seed) {
  if (CountLines(vocab_text) != config.vocab_size) {
    return absl::InvalidArgumentError(absl::StrCat("vocabulary has ", CountLines(vocab_text),
                                                   " tokens but vocab_size is ",
                                                   config.vocab_size));
  }
  if (absl::Status s = WriteRandomCheckpoint(dir, config, seed); !s.ok()) return s;
  if (absl::Status s = util::WriteFileAtomically(dir + "/vocab.txt", vocab_text); !s.ok()) return s;
  return util::WriteFileAtomically(
      dir + "/tokenizer_config.json",
      "{\n  \"tokenizer_class\": \"BertTokenizer\",\n  \"do_lower_case\": true,\n"
      "  \"model_max_length\": " +
          std::to_string(config.max_tokens()) + "\n}\n");
}

absl::StatusOr<std::string> EnsureDefaultModel(const std::string& cache_dir) {
  const std::string dir = absl::StrCat(cache_dir, "/", kDefaultModelName);
  if (util::FileExists(dir + "/model.safetensors") && util::FileExists(dir + "/config.json") &&
      util::FileExists(dir + "/vocab.txt")) {
    return dir;
  }
  if (absl::Status s = util::MakeDirs(cache_dir); !s.ok()) return s;
  const std::string tmp = absl::StrCat(cache_dir, "/.tmp-", kDefaultModelName, "-", ::getpid());
  if (absl::Status s = util::RemoveTree(tmp); !s.ok()) return s;
  if (absl::Status s =
          WriteRandomBertCheckpoint(tmp, DefaultModelConfig(), DefaultVocab(), kDefaultSeed);
      !s.ok()) {
    util::RemoveTree(tmp).IgnoreError();
    return s;
  }
  if (util::IsDirectory(dir)) util::RemoveTree(dir).IgnoreError();  // a partial leftover
  if (std::rename(tmp.c_str(), dir.c_str()) != 0) {
    const int err = errno;
    util::RemoveTree(tmp).IgnoreError();
    // Another process won the race: its complete copy is as good as ours.
    if (util::FileExists(dir + "/model.safetensors")) return dir;
    return absl::InternalError(absl::StrCat("rename ", tmp, " -> ", dir, ": ", std::strerror(err)));
  }
  util::FsyncDir(cache_dir).IgnoreError();
  return dir;
}

}  // namespace loracle::model
