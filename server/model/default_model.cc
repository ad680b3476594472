#include "server/model/default_model.h"

#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
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

std::vector<float> RandomInitValues(const std::string& name, const std::vector<int64_t>& shape,
                                    const ModelConfig& config, uint64_t seed, float weight_std) {
  size_t n = 1;
  for (int64_t d : shape) n *= static_cast<size_t>(d);
  if (EndsWith(name, "LayerNorm.weight") || EndsWith(name, "norm.weight")) {  // every norm's gain
    return std::vector<float>(n, 1.0f);
  }
  if (EndsWith(name, ".bias")) return std::vector<float>(n, 0.0f);
  std::vector<float> values = DeterministicNormal(SeedFor(seed, name), n, weight_std);
  if (EndsWith(name, "embeddings.word_embeddings.weight")) {  // padding_idx row is zero
    std::fill_n(values.begin() + config.pad_token_id * config.hidden_size, config.hidden_size,
                0.0f);
  }
  return values;
}

absl::Status WriteRandomBertCheckpoint(const std::string& dir, const ModelConfig& config,
                                       absl::string_view vocab_text, uint64_t seed) {
  if (CountLines(vocab_text) != config.vocab_size) {
    return absl::InvalidArgumentError(absl::StrCat("vocabulary has ", CountLines(vocab_text),
                                                   " tokens but vocab_size is ",
                                                   config.vocab_size));
  }
  if (absl::Status s = util::MakeDirs(dir); !s.ok()) return s;
  std::vector<std::vector<uint8_t>> data;
  std::vector<TensorToWrite> tensors;
  const TensorShapes shapes = BaseTensorShapes(config);
  data.reserve(shapes.size());
  for (const auto& [name, shape] : shapes) {
    data.push_back(EncodeFloats(RandomInitValues(name, shape, config, seed), DType::kF32));
    tensors.push_back({name, DType::kF32, shape,
                       absl::Span<const uint8_t>(data.back().data(), data.back().size())});
  }
  if (absl::Status s = util::WriteFileAtomically(dir + "/config.json", ModelConfigToJson(config));
      !s.ok()) {
    return s;
  }
  if (absl::Status s = WriteSafetensors(dir + "/model.safetensors", tensors, {{"format", "pt"}});
      !s.ok()) {
    return s;
  }
  if (absl::Status s = util::WriteFileAtomically(dir + "/vocab.txt", vocab_text); !s.ok()) return s;
  return util::WriteFileAtomically(
      dir + "/tokenizer_config.json",
      "{\n  \"tokenizer_class\": \"BertTokenizer\",\n  \"do_lower_case\": true,\n"
      "  \"model_max_length\": " +
          std::to_string(config.max_tokens()) + "\n}\n");
}

absl::StatusOr<std::string> BuiltinModelDir() {
  std::vector<std::string> candidates;
  char exe[4096];
  const ssize_t n = ::readlink("/proc/self/exe", exe, sizeof(exe) - 1);
  if (n > 0) {
    std::string bin(exe, static_cast<size_t>(n));
    bin = bin.substr(0, bin.rfind('/'));
    candidates.push_back(bin + "/../share/loracle/builtin-model");
  }
#ifdef LORACLE_SOURCE_DIR
  candidates.push_back(std::string(LORACLE_SOURCE_DIR) + "/server/model/builtin");
#endif
  for (const std::string& dir : candidates) {
    if (util::FileExists(dir + "/config.json") && util::FileExists(dir + "/model.safetensors")) {
      return dir;
    }
  }
  return absl::NotFoundError(
      absl::StrCat("the built-in model is in neither ", absl::StrJoin(candidates, " nor "),
                   " (install it with the binary: cmake --install; or pass --model_dir)"));
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
