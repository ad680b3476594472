#include "server/model/checkpoint.h"

#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "nlohmann/json.hpp"
#include "server/model/file_util.h"

namespace loracle::model {
namespace {

std::string ShapeString(c10::IntArrayRef shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

absl::StatusOr<WordPieceTokenizer::Options> ReadTokenizerOptions(const std::string& dir,
                                                                 int* max_length) {
  WordPieceTokenizer::Options options;
  const std::string path = dir + "/tokenizer_config.json";
  if (!FileExists(path)) return options;
  absl::StatusOr<std::string> text = ReadFileToString(path);
  if (!text.ok()) return text.status();
  nlohmann::json j = nlohmann::json::parse(*text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": not a JSON object"));
  }
  if (auto it = j.find("do_lower_case"); it != j.end() && it->is_boolean()) {
    options.lowercase = it->get<bool>();
  }
  options.strip_accents = options.lowercase;
  if (auto it = j.find("strip_accents"); it != j.end() && it->is_boolean()) {
    options.strip_accents = it->get<bool>();
  }
  if (auto it = j.find("tokenize_chinese_chars"); it != j.end() && it->is_boolean()) {
    options.tokenize_chinese_chars = it->get<bool>();
  }
  if (auto it = j.find("model_max_length"); it != j.end() && it->is_number_integer()) {
    const int64_t v = it->get<int64_t>();
    if (v > 0 && v < *max_length) *max_length = static_cast<int>(v);
  }
  for (auto [key, field] :
       {std::pair{"unk_token", &options.unk_token}, std::pair{"cls_token", &options.cls_token},
        std::pair{"sep_token", &options.sep_token}, std::pair{"pad_token", &options.pad_token}}) {
    if (auto it = j.find(key); it != j.end() && it->is_string()) *field = it->get<std::string>();
  }
  return options;
}

}  // namespace

absl::StatusOr<torch::Tensor> ToFloatTensor(const TensorView& view, const std::string& name) {
  c10::ScalarType type;
  switch (view.dtype) {
    case DType::kF32:
      type = torch::kFloat32;
      break;
    case DType::kF16:
      type = torch::kFloat16;
      break;
    case DType::kBF16:
      type = torch::kBFloat16;
      break;
    case DType::kF64:
      type = torch::kFloat64;
      break;
    default:
      return absl::InvalidArgumentError(absl::StrCat("tensor \"", name, "\" has dtype ",
                                                     DTypeName(view.dtype),
                                                     "; expected F32, F16, BF16 or F64"));
  }
  torch::Tensor t = torch::empty(view.shape, torch::TensorOptions().dtype(type));
  if (view.nbytes > 0) std::memcpy(t.data_ptr(), view.data, view.nbytes);  // data may be unaligned
  return type == torch::kFloat32 ? t : t.to(torch::kFloat32);
}

absl::StatusOr<std::unique_ptr<BaseModel>> LoadBaseModel(const std::string& dir) {
  if (!IsDirectory(dir))
    return absl::NotFoundError(absl::StrCat("model directory ", dir, " does not exist"));
  auto model = std::make_unique<BaseModel>();
  model->dir = dir;
  absl::StatusOr<ModelConfig> config = ReadModelConfig(dir + "/config.json");
  if (!config.ok()) return config.status();
  model->config = *config;
  model->max_length = static_cast<int>(config->max_position_embeddings);

  const std::string weights_path = dir + "/model.safetensors";
  absl::StatusOr<std::unique_ptr<SafetensorsFile>> weights = SafetensorsFile::Open(weights_path);
  if (!weights.ok()) return weights.status();

  try {
    torch::NoGradGuard no_grad;
    model->encoder = Encoder(*config);
    for (auto& item : model->encoder->named_parameters(/*recurse=*/true)) {
      const std::string& name = item.key();
      std::string key = name;
      if (!(*weights)->Contains(key)) key = "bert." + name;  // *ForSequenceClassification layout
      if (!(*weights)->Contains(key)) {
        return absl::InvalidArgumentError(absl::StrCat(weights_path, ": missing tensor \"", name,
                                                       "\" (expected shape ",
                                                       ShapeString(item.value().sizes()), ")"));
      }
      absl::StatusOr<TensorView> view = (*weights)->Get(key);
      if (!view.ok()) return view.status();
      absl::StatusOr<torch::Tensor> t = ToFloatTensor(*view, key);
      if (!t.ok())
        return absl::InvalidArgumentError(absl::StrCat(weights_path, ": ", t.status().message()));
      if (t->sizes() != item.value().sizes()) {
        return absl::InvalidArgumentError(
            absl::StrCat(weights_path, ": tensor \"", key, "\" has shape ", ShapeString(t->sizes()),
                         " but config.json implies ", ShapeString(item.value().sizes())));
      }
      item.value().copy_(*t);
      item.value().set_requires_grad(false);
      model->num_parameters += item.value().numel();
    }
    model->encoder->eval();
  } catch (const c10::Error& e) {
    return absl::InternalError(
        absl::StrCat("building the encoder from ", dir, ": ", e.what_without_backtrace()));
  }

  absl::StatusOr<WordPieceTokenizer::Options> options =
      ReadTokenizerOptions(dir, &model->max_length);
  if (!options.ok()) return options.status();
  const std::string vocab_path = dir + "/vocab.txt";
  if (!FileExists(vocab_path)) {
    return absl::NotFoundError(absl::StrCat(dir, ": no vocab.txt (WordPiece vocabulary)"));
  }
  absl::StatusOr<std::unique_ptr<WordPieceTokenizer>> tokenizer =
      WordPieceTokenizer::FromFile(*options, vocab_path);
  if (!tokenizer.ok()) return tokenizer.status();
  if ((*tokenizer)->vocab_size() > config->vocab_size) {
    return absl::InvalidArgumentError(absl::StrCat(vocab_path, " has ", (*tokenizer)->vocab_size(),
                                                   " tokens but config.json vocab_size is ",
                                                   config->vocab_size));
  }
  model->tokenizer = std::move(*tokenizer);
  return model;
}

}  // namespace loracle::model
