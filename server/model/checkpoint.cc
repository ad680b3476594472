#include "server/model/checkpoint.h"

#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "nlohmann/json.hpp"
#include "server/model/architecture.h"
#include "server/model/fingerprint.h"
#include "server/text/tokenizer_files.h"
#include "server/util/file_util.h"

namespace loracle::model {
namespace {

std::string ShapeString(c10::IntArrayRef shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

absl::StatusOr<c10::ScalarType> FloatType(const TensorView& view, const std::string& name) {
  switch (view.dtype) {
    case DType::kF32:
      return torch::kFloat32;
    case DType::kF16:
      return torch::kFloat16;
    case DType::kBF16:
      return torch::kBFloat16;
    case DType::kF64:
      return torch::kFloat64;
    default:
      return absl::InvalidArgumentError(absl::StrCat("tensor \"", name, "\" has dtype ",
                                                     DTypeName(view.dtype),
                                                     "; expected F32, F16, BF16 or F64"));
  }
}

}  // namespace

absl::StatusOr<torch::Tensor> ToFloatTensor(const TensorView& view, const std::string& name) {
  torch::Tensor t = torch::empty(view.shape, torch::kFloat32);
  if (absl::Status s = CopyInto(view, name, t); !s.ok()) return s;
  return t;
}

absl::Status CopyInto(const TensorView& view, const std::string& name, torch::Tensor& dst) {
  absl::StatusOr<c10::ScalarType> type = FloatType(view, name);
  if (!type.ok()) return type.status();
  if (view.nbytes == 0) return absl::OkStatus();
  if (*type == dst.scalar_type()) {
    std::memcpy(dst.data_ptr(), view.data, view.nbytes);  // mapped data may be unaligned
    return absl::OkStatus();
  }
  const size_t elem = c10::elementSize(*type);
  void* data = const_cast<uint8_t*>(view.data);  // read only: from_blob never writes here
  torch::Tensor src;
  if (reinterpret_cast<uintptr_t>(data) % elem == 0) {
    src = torch::from_blob(data, view.shape, torch::TensorOptions().dtype(*type));
  } else {
    src = torch::empty(view.shape, torch::TensorOptions().dtype(*type));
    std::memcpy(src.data_ptr(), view.data, view.nbytes);
  }
  dst.view(src.sizes()).copy_(src);
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<CheckpointWeights>> CheckpointWeights::Open(const std::string& dir) {
  auto w = std::make_unique<CheckpointWeights>();
  const std::string single = dir + "/model.safetensors";
  const std::string index_path = dir + "/model.safetensors.index.json";
  if (util::FileExists(single)) {
    absl::StatusOr<std::unique_ptr<SafetensorsFile>> f = SafetensorsFile::Open(single);
    if (!f.ok()) return f.status();
    for (const std::string& name : (*f)->names()) w->index_[name] = 0;
    w->files_.push_back(*std::move(f));
    w->description_ = single;
    return w;
  }
  if (!util::FileExists(index_path)) {
    if (util::FileExists(dir + "/pytorch_model.bin")) {
      return absl::InvalidArgumentError(absl::StrCat(
          dir,
          " has only pytorch_model.bin (a pickle); convert it to model.safetensors, e.g. "
          "with transformers' save_pretrained(safe_serialization=True)"));
    }
    return absl::NotFoundError(
        absl::StrCat(dir, ": no model.safetensors or ", "model.safetensors.index.json"));
  }
  absl::StatusOr<std::string> text = util::ReadFileToString(index_path);
  if (!text.ok()) return text.status();
  nlohmann::json j = nlohmann::json::parse(*text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object() || !j.contains("weight_map") ||
      !j["weight_map"].is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat(index_path, ": expected a JSON object with a \"weight_map\" object"));
  }
  std::map<std::string, size_t> slot_of_file;
  for (auto& [name, file] : j["weight_map"].items()) {
    if (!file.is_string()) {
      return absl::InvalidArgumentError(
          absl::StrCat(index_path, ": weight_map[\"", name, "\"] is not a file name"));
    }
    const std::string f = file.get<std::string>();
    if (f.empty() || f.find('/') != std::string::npos || f[0] == '.') {
      return absl::InvalidArgumentError(
          absl::StrCat(index_path, ": shard name \"", f, "\" must be a plain file name"));
    }
    auto [it, inserted] = slot_of_file.emplace(f, w->files_.size());
    if (inserted) {
      absl::StatusOr<std::unique_ptr<SafetensorsFile>> shard = SafetensorsFile::Open(dir + "/" + f);
      if (!shard.ok()) return shard.status();
      w->files_.push_back(*std::move(shard));
    }
    if (!w->files_[it->second]->Contains(name)) {
      return absl::InvalidArgumentError(absl::StrCat(index_path, " puts tensor \"", name, "\" in ",
                                                     f, ", which does not have it"));
    }
    w->index_[name] = it->second;
  }
  w->description_ = absl::StrCat(index_path, " (", w->files_.size(), " shards)");
  return w;
}

const SafetensorsFile* CheckpointWeights::FileOf(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : files_[it->second].get();
}

bool CheckpointWeights::Contains(const std::string& name) const { return FileOf(name) != nullptr; }

absl::StatusOr<TensorView> CheckpointWeights::Get(const std::string& name) const {
  const SafetensorsFile* f = FileOf(name);
  if (f == nullptr) {
    return absl::NotFoundError(absl::StrCat(description_, ": no tensor \"", name, "\""));
  }
  return f->Get(name);
}

std::string CheckpointWeights::SourceOf(const std::string& name) const {
  const SafetensorsFile* f = FileOf(name);
  return f == nullptr ? description_ : f->source();
}

std::vector<std::string> CheckpointWeights::names() const {
  std::vector<std::string> out;
  for (const auto& [name, slot] : index_) out.push_back(name);
  return out;
}

absl::StatusOr<std::unique_ptr<BaseModel>> LoadBaseModel(const std::string& dir,
                                                         const Placement& placement) {
  if (!util::IsDirectory(dir))
    return absl::NotFoundError(absl::StrCat("model directory ", dir, " does not exist"));
  auto model = std::make_unique<BaseModel>();
  model->dir = dir;
  absl::StatusOr<ModelConfig> config = ReadModelConfig(dir + "/config.json");
  if (!config.ok()) return config.status();
  model->config = *config;
  model->max_length = static_cast<int>(config->max_tokens());

  absl::StatusOr<std::unique_ptr<CheckpointWeights>> weights = CheckpointWeights::Open(dir);
  if (!weights.ok()) return weights.status();
  const CheckpointWeights& w = **weights;
  const std::string prefix = LayoutFor(config->architecture()).base_prefix + ".";

  // Copies tensor `key` (shape `expected`) into `dst`.
  auto load = [&](const std::string& key, torch::Tensor& dst) -> absl::Status {
    absl::StatusOr<TensorView> view = w.Get(key);
    if (!view.ok()) return view.status();
    if (c10::IntArrayRef(view->shape) != dst.sizes()) {
      return absl::InvalidArgumentError(absl::StrCat(
          w.SourceOf(key), ": tensor \"", key, "\" has shape ", ShapeString(view->shape),
          " but config.json implies ", ShapeString(dst.sizes())));
    }
    if (absl::Status s = CopyInto(*view, key, dst); !s.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(w.SourceOf(key), ": ", s.message()));
    }
    return absl::OkStatus();
  };

  try {
    torch::NoGradGuard no_grad;
    // A 16-bit placement gets its parameters in that type from the start (created under it as
    // the default type), and the weights are converted into them as they are read: a BF16
    // checkpoint served in bfloat16 never has a float32 copy. Loading runs before serving and
    // training start, so the process-wide default is not raced.
    const caffe2::TypeMeta default_dtype = torch::get_default_dtype();
    if (placement.dtype != torch::kFloat32) {
      torch::set_default_dtype(c10::scalarTypeToTypeMeta(placement.dtype));
    }
    absl::StatusOr<Backbone> backbone = CreateBackbone(*config);
    torch::set_default_dtype(default_dtype);
    if (!backbone.ok()) return backbone.status();
    model->backbone = *std::move(backbone);
    if (placement.dtype != torch::kFloat32) {  // the few tensors built outside the default type
      Placement host = placement;
      host.device = torch::kCPU;
      model->backbone->To(host);
    }
    std::vector<std::pair<std::string, TensorView>> base_tensors;
    for (auto& item : model->backbone->named_parameters(/*recurse=*/true)) {
      const std::string& name = item.key();
      std::string key = name;
      if (!w.Contains(key)) key = prefix + name;  // *ForSequenceClassification layout
      if (!w.Contains(key)) {
        return absl::InvalidArgumentError(
            absl::StrCat(w.description(), ": missing tensor \"", name, "\" (or \"", prefix, name,
                         "\"), expected shape ", ShapeString(item.value().sizes())));
      }
      if (absl::Status s = load(key, item.value()); !s.ok()) return s;
      base_tensors.emplace_back(name, *w.Get(key));
      item.value().set_requires_grad(false);
      model->num_parameters += item.value().numel();
    }
    model->fingerprint = FingerprintBase(*config, base_tensors);
    model->backbone->eval();
    model->placement = placement;
    if (!placement.on_cpu()) model->backbone->To(placement);
    if (placement.int8) {
      if (absl::Status s = model->backbone->QuantizeInt8(); !s.ok()) return s;
    }

    // The checkpoint's own classification head, when it has one.
    const HeadLayout& head = HeadFor(config->architecture());
    if (w.Contains(head.out + ".weight")) {
      absl::StatusOr<TensorView> out = w.Get(head.out + ".weight");
      if (!out.ok()) return out.status();
      const int64_t labels = out->shape.empty() ? 0 : out->shape[0];
      auto member = std::make_shared<LoraMember>();
      member->layers.resize(model->backbone->linear_names().size());
      for (const auto& [name, shape] : HeadTensorShapes(*config, labels)) {
        torch::Tensor t = torch::empty(shape);
        if (absl::Status s = load(name, t); !s.ok()) return s;
        t = t.to(placement.options());
        if (name == head.dense + ".weight") member->head_dense_weight = t;
        if (name == head.dense + ".bias") member->head_dense_bias = t;
        if (name == head.out + ".weight") member->classifier_weight = t;
        if (name == head.out + ".bias") member->classifier_bias = t;
      }
      member->head_activation = head.activation;
      model->head = std::move(member);
      model->head_labels = config->id2label;
      if (static_cast<int64_t>(model->head_labels.size()) != labels) {
        model->head_labels.clear();
        for (int64_t i = 0; i < labels; ++i)
          model->head_labels.push_back(absl::StrCat("LABEL_", i));
      }
    }
  } catch (const c10::Error& e) {
    return absl::InternalError(
        absl::StrCat("building the encoder from ", dir, ": ", e.what_without_backtrace()));
  }

  absl::StatusOr<std::unique_ptr<text::Tokenizer>> tokenizer =
      text::LoadTokenizer(dir, &model->max_length);
  if (!tokenizer.ok()) return tokenizer.status();
  if ((*tokenizer)->vocab_size() > config->vocab_size) {
    return absl::InvalidArgumentError(
        absl::StrCat(dir, ": the tokenizer has ", (*tokenizer)->vocab_size(),
                     " tokens but config.json vocab_size is ", config->vocab_size));
  }
  model->tokenizer = std::move(*tokenizer);
  return model;
}

}  // namespace loracle::model
