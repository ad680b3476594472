#include "server/adapters/adapter_weights.h"

#include <set>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "server/model/architecture.h"
#include "server/model/checkpoint.h"
#include "server/model/safetensors.h"
#include "server/util/file_util.h"
#include "server/util/log.h"

namespace loracle::adapters {
namespace {

std::string Shape(c10::IntArrayRef s) { return absl::StrCat("[", absl::StrJoin(s, ", "), "]"); }

absl::StatusOr<torch::Tensor> Tensor(const model::SafetensorsFile& file, const std::string& key,
                                     std::vector<int64_t> expected) {
  absl::StatusOr<model::TensorView> view = file.Get(key);
  if (!view.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(file.source(), ": missing tensor \"", key,
                                                   "\" (expected shape ", Shape(expected), ")"));
  }
  absl::StatusOr<torch::Tensor> t = model::ToFloatTensor(*view, key);
  if (!t.ok())
    return absl::InvalidArgumentError(absl::StrCat(file.source(), ": ", t.status().message()));
  if (t->sizes() != c10::IntArrayRef(expected)) {
    return absl::InvalidArgumentError(absl::StrCat(file.source(), ": tensor \"", key,
                                                   "\" has shape ", Shape(t->sizes()),
                                                   ", expected ", Shape(expected)));
  }
  if (!torch::isfinite(*t).all().item<bool>()) {
    return absl::InvalidArgumentError(
        absl::StrCat(file.source(), ": tensor \"", key, "\" holds NaN or infinite values"));
  }
  return *std::move(t);
}

absl::StatusOr<model::LoraMember> LoadMember(const std::string& dir, const ServingConfig& serving,
                                             const model::BaseModel& base,
                                             const torch::Tensor& label_head,
                                             PeftLoraConfig* lora_out) {
  const model::BackboneImpl& encoder = *base.backbone;
  absl::StatusOr<std::string> text = util::ReadFileToString(dir + "/" + kPeftConfigFile);
  if (!text.ok()) return text.status();
  absl::StatusOr<PeftLoraConfig> lora = ParsePeftConfig(*text, dir + "/" + kPeftConfigFile);
  if (!lora.ok()) return lora.status();
  *lora_out = *lora;
  absl::StatusOr<std::unique_ptr<model::SafetensorsFile>> file =
      model::SafetensorsFile::Open(dir + "/" + kPeftWeightsFile);
  if (!file.ok()) return file.status();
  const model::SafetensorsFile& f = **file;

  const model::Architecture arch = encoder.config().architecture();
  const std::string base_prefix = model::LayoutFor(arch).base_prefix;
  // PEFT prefixes every key with "base_model.model." and the *For* model's attribute path.
  const std::string prefixes[] = {"base_model.model." + base_prefix + ".", "base_model.model."};
  model::LoraMember member;
  member.layers.resize(encoder.linear_names().size());
  std::set<std::string> used;
  for (size_t i = 0; i < encoder.linear_names().size(); ++i) {
    const std::string& path = encoder.linear_names()[i];
    if (!lora->Targets(path, base_prefix)) continue;
    std::string prefix = prefixes[0];
    if (!f.Contains(prefix + path + ".lora_A.weight")) prefix = prefixes[1];
    const auto& linear = encoder.linear(static_cast<int>(i));
    const int rank = lora->RankFor(path);
    const std::string a_key = prefix + path + ".lora_A.weight";
    const std::string b_key = prefix + path + ".lora_B.weight";
    absl::StatusOr<torch::Tensor> a = Tensor(f, a_key, {rank, linear->in_features()});
    if (!a.ok()) return a.status();
    absl::StatusOr<torch::Tensor> b = Tensor(f, b_key, {linear->out_features(), rank});
    if (!b.ok()) return b.status();
    member.layers[i] = {*std::move(a), *std::move(b), lora->ScalingFor(path)};
    used.insert(a_key);
    used.insert(b_key);
  }
  // A LoRA tensor for a module this encoder does not have means the adapter was trained for a
  // different base: refuse it rather than silently ignore weights.
  for (const std::string& key : f.names()) {
    if ((absl::StrContains(key, ".lora_A.") || absl::StrContains(key, ".lora_B.")) &&
        used.count(key) == 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(f.source(), ": tensor \"", key,
                       "\" matches no targeted linear layer of the base model (wrong base model or "
                       "target_modules?)"));
    }
  }
  if (label_head.defined()) {  // label words: the LM head's rows, not a classification head
    member.classifier_weight = label_head;
    member.To(base.placement.options());
    return member;
  }
  // The head: from the adapter (modules_to_save), else the base checkpoint's own, as PEFT does
  // for modules it did not save.
  const int64_t labels = static_cast<int64_t>(serving.labels.size());
  const model::HeadLayout& head = model::HeadFor(arch);
  absl::StatusOr<model::TensorView> out_view = f.Get("base_model.model." + head.out + ".weight");
  if (out_view.ok() && !out_view->shape.empty() && out_view->shape[0] != labels) {
    return absl::InvalidArgumentError(
        absl::StrCat(f.source(), ": ", head.out, " has ", out_view->shape[0], " outputs but ",
                     kServingConfigFile, " names ", labels, " labels"));
  }
  for (const auto& [name, shape] : model::HeadTensorShapes(encoder.config(), labels)) {
    const std::string key = "base_model.model." + name;
    torch::Tensor t;
    if (f.Contains(key) || base.head == nullptr) {
      absl::StatusOr<torch::Tensor> loaded = Tensor(f, key, shape);
      if (!loaded.ok()) return loaded.status();
      t = *std::move(loaded);
    } else {
      const model::LoraMember& h = *base.head;
      t = name == head.dense + ".weight" ? h.head_dense_weight
          : name == head.dense + ".bias" ? h.head_dense_bias
          : name == head.out + ".weight" ? h.classifier_weight
                                         : h.classifier_bias;
      if (!t.defined() || t.sizes() != c10::IntArrayRef(shape)) {
        return absl::InvalidArgumentError(
            absl::StrCat(f.source(), ": missing tensor \"", key, "\" (expected shape ",
                         Shape(shape), "), and the base checkpoint's ", name, " does not fit"));
      }
    }
    member.SetHeadTensor(head, name, std::move(t));
  }
  member.head_activation = head.activation;
  member.To(base.placement.options());
  return member;
}

}  // namespace

const std::vector<model::LoraMember>& MembersOf(const Adapter& adapter) {
  return adapter.weights->members;
}

std::shared_ptr<Adapter> MakeAdapter(Adapter identity, std::vector<model::LoraMember> members,
                                     std::shared_ptr<const model::OodDetector> ood) {
  auto weights = std::make_shared<AdapterWeights>();
  weights->members = std::move(members);
  weights->ood = std::move(ood);
  identity.members = static_cast<int>(weights->members.size());
  identity.memory_bytes = 0;
  for (const model::LoraMember& m : weights->members) {
    for (const model::LoraPair& p : m.layers) {
      if (p.a.defined()) identity.memory_bytes += static_cast<int64_t>(p.a.nbytes() + p.b.nbytes());
    }
    for (const torch::Tensor* t :
         {&m.head_dense_weight, &m.head_dense_bias, &m.classifier_weight, &m.classifier_bias}) {
      if (t->defined()) identity.memory_bytes += static_cast<int64_t>(t->nbytes());
    }
  }
  if (weights->ood != nullptr) {
    identity.memory_bytes +=
        4 * weights->ood->hidden() * (weights->ood->hidden() + weights->ood->classes());
  }
  identity.weights = std::move(weights);
  return std::make_shared<Adapter>(std::move(identity));
}

const model::OodDetector* OodOf(const Adapter& adapter) {
  return adapter.weights == nullptr ? nullptr : adapter.weights->ood.get();
}

absl::StatusOr<torch::Tensor> LabelWordsHead(const ServingConfig& serving,
                                             const model::BaseModel& base, const std::string& dir) {
  const std::string source = dir + "/" + kServingConfigFile;
  if (!base.config.is_decoder()) {
    return absl::InvalidArgumentError(absl::StrCat(
        source,
        ": \"label_words\" need a decoder base (llama, mistral, qwen2, qwen3); this base "
        "is ",
        base.config.model_type));
  }
  std::vector<int64_t> ids;
  for (const std::string& word : serving.label_words) {
    absl::StatusOr<std::vector<int64_t>> t = base.tokenizer->TokenizeToIds(word);
    if (!t.ok()) return t.status();
    if (t->size() != 1) {
      return absl::InvalidArgumentError(absl::StrCat(
          source, ": label word \"", word, "\" is ", t->size(),
          " tokens of this base's tokenizer; label words of one token are supported (a leading "
          "space often makes a word one token)"));
    }
    ids.push_back(t->front());
  }
  torch::NoGradGuard no_grad;
  // The LM head's rows of the label words: lm_head.weight of a *ForCausalLM checkpoint, else the
  // tied input embeddings. Only these rows are read, never the whole [vocab, hidden] matrix.
  absl::StatusOr<std::unique_ptr<model::CheckpointWeights>> weights =
      model::CheckpointWeights::Open(base.dir);
  if (!weights.ok()) return weights.status();
  const int64_t hidden = base.config.hidden_size;
  torch::Tensor head = torch::empty({static_cast<int64_t>(ids.size()), hidden});
  if ((*weights)->Contains("lm_head.weight")) {
    absl::StatusOr<model::TensorView> lm = (*weights)->Get("lm_head.weight");
    if (!lm.ok()) return lm.status();
    if (lm->shape.size() != 2 || lm->shape[1] != hidden || lm->shape[0] < base.config.vocab_size) {
      return absl::InvalidArgumentError(
          absl::StrCat((*weights)->SourceOf("lm_head.weight"),
                       ": lm_head.weight must be [vocab_size, hidden_size]"));
    }
    const size_t row_bytes = lm->nbytes / static_cast<size_t>(lm->shape[0]);
    for (size_t i = 0; i < ids.size(); ++i) {
      model::TensorView row = *lm;
      row.shape = {hidden};
      row.data = lm->data + static_cast<size_t>(ids[i]) * row_bytes;
      row.nbytes = row_bytes;
      torch::Tensor dst = head[static_cast<int64_t>(i)];
      if (absl::Status s = model::CopyInto(row, "lm_head.weight", dst); !s.ok()) return s;
    }
  } else if (base.config.tie_word_embeddings) {
    head.copy_(base.backbone->word_embeddings_weight()
                   .index_select(0, torch::tensor(ids, torch::kInt64)
                                        .to(base.backbone->word_embeddings_weight().device()))
                   .to(torch::kCPU, torch::kFloat32));
  } else {
    return absl::FailedPreconditionError(
        absl::StrCat(base.dir, " has no lm_head.weight and does not tie its word embeddings, so ",
                     source, "'s \"label_words\" have no LM head to read"));
  }
  return head;
}

absl::Status CheckBase(const ServingConfig& serving, const model::BaseModel& base,
                       const std::string& dir) {
  const std::string& recorded = serving.base.fingerprint;
  if (recorded.empty()) {
    LORACLE_LOG(WARNING,
                "adapter %s records no base fingerprint (an external PEFT adapter, or written "
                "before fingerprints): serving it unchecked on %s (%s)",
                dir.c_str(), base.dir.c_str(), base.fingerprint.id.c_str());
    return absl::OkStatus();
  }
  if (recorded == base.fingerprint.id) return absl::OkStatus();
  return absl::FailedPreconditionError(absl::StrCat(
      "adapter ", dir, " was trained on another base (fingerprint ", recorded,
      serving.base.path.empty() ? "" : absl::StrCat(", ", serving.base.path),
      ") than the one serving (", base.fingerprint.id, ", ", base.dir,
      "); its answers on this base would be wrong. Retrain it on this base (Training.Submit with "
      "the same data), or serve it with the base it was trained on"));
}

absl::StatusOr<std::shared_ptr<Adapter>> LoadAdapter(const std::string& dir,
                                                     const std::string& name, int64_t version,
                                                     const model::BaseModel& base) {
  if (!util::IsDirectory(dir)) {
    return absl::NotFoundError(absl::StrCat("adapter directory ", dir, " does not exist"));
  }
  Adapter adapter;
  adapter.name = name;
  adapter.version = version;
  adapter.path = dir;
  absl::StatusOr<std::string> text = util::ReadFileToString(dir + "/" + kServingConfigFile);
  if (!text.ok()) return text.status();
  absl::StatusOr<ServingConfig> serving = ParseServingConfig(*text, dir + "/" + kServingConfigFile);
  if (!serving.ok()) return serving.status();
  if (absl::Status s = CheckBase(*serving, base, dir); !s.ok()) return s;
  adapter.serving = *serving;
  std::vector<model::LoraMember> members;
  try {
    torch::NoGradGuard no_grad;
    torch::Tensor label_head;
    if (!serving->label_words.empty()) {
      absl::StatusOr<torch::Tensor> head = LabelWordsHead(*serving, base, dir);
      if (!head.ok()) return head.status();
      label_head = *std::move(head);
    }
    // Label words with no PEFT files: the base itself, zero-shot.
    if (label_head.defined() && !util::FileExists(dir + "/" + kPeftConfigFile) &&
        !util::IsDirectory(dir + "/member-0")) {
      if (serving->members != 1) {
        return absl::InvalidArgumentError(absl::StrCat(dir, "/", kServingConfigFile,
                                                       ": a zero-shot adapter (label words, no "
                                                       "PEFT files) has 1 member, not ",
                                                       serving->members));
      }
      model::LoraMember member;
      member.layers.resize(base.backbone->linear_names().size());
      member.classifier_weight = label_head;
      member.To(base.placement.options());
      members.push_back(std::move(member));
      adapter.lora.rank = 0;
      adapter.lora.target_modules.clear();
      adapter.lora.modules_to_save.clear();
    }
    const bool zero_shot = !members.empty();
    for (int m = 0; !zero_shot && m < serving->members; ++m) {
      const std::string member_dir = serving->members == 1 ? dir : absl::StrCat(dir, "/member-", m);
      PeftLoraConfig lora;
      absl::StatusOr<model::LoraMember> member =
          LoadMember(member_dir, *serving, base, label_head, &lora);
      if (!member.ok()) return member.status();
      if (m == 0) adapter.lora = lora;
      members.push_back(*std::move(member));
    }
  } catch (const c10::Error& e) {
    return absl::InternalError(
        absl::StrCat("loading adapter ", dir, ": ", e.what_without_backtrace()));
  }
  std::shared_ptr<const model::OodDetector> ood;
  if (!serving->ood.method.empty()) {
    absl::StatusOr<model::OodDetector> d = model::OodDetector::Load(
        dir + "/" + serving->ood.file, base.backbone->config().hidden_size);
    if (!d.ok()) return d.status();
    ood = std::make_shared<const model::OodDetector>(*std::move(d));
  }
  return MakeAdapter(std::move(adapter), std::move(members), std::move(ood));
}

absl::StatusOr<std::shared_ptr<Adapter>> BaseHeadAdapter(const model::BaseModel& base,
                                                         const std::string& name) {
  if (base.head == nullptr) {
    return absl::NotFoundError(absl::StrCat(base.dir, " has no sequence-classification head"));
  }
  Adapter adapter;
  adapter.name = name;
  adapter.version = 0;
  adapter.path = base.dir;
  adapter.serving.labels = base.head_labels;
  adapter.serving.description = "the base checkpoint's own classification head";
  adapter.serving.base = {base.fingerprint.id, base.config.model_type, base.dir};
  adapter.lora.rank = 0;
  adapter.lora.target_modules.clear();
  adapter.lora.modules_to_save = model::HeadModules(base.config.architecture());
  return MakeAdapter(std::move(adapter), {*base.head});
}

absl::Status SaveAdapter(const std::string& dir, const Adapter& adapter,
                         const model::BaseModel& base) {
  const model::BackboneImpl& encoder = *base.backbone;
  const model::Architecture arch = encoder.config().architecture();
  const std::string base_prefix = model::LayoutFor(arch).base_prefix;
  const model::HeadLayout& head = model::HeadFor(arch);
  if (absl::Status s = util::MakeDirs(dir); !s.ok()) return s;
  if (!adapter.serving.ood.method.empty()) {
    const model::OodDetector* ood = OodOf(adapter);
    if (ood == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat("adapter ", adapter.name, ": loracle.json names an OOD detector it lacks"));
    }
    if (absl::Status s = ood->Save(dir + "/" + adapter.serving.ood.file); !s.ok()) return s;
  }
  ServingConfig serving = adapter.serving;
  serving.base = {base.fingerprint.id, base.config.model_type, base.dir};
  if (absl::Status s =
          util::WriteFileAtomically(dir + "/" + kServingConfigFile, ServingConfigToJson(serving));
      !s.ok()) {
    return s;
  }
  PeftLoraConfig lora = adapter.lora;
  lora.modules_to_save = model::HeadModules(arch);
  try {
    const std::vector<model::LoraMember>& members = MembersOf(adapter);
    for (size_t m = 0; m < members.size(); ++m) {
      const model::LoraMember& member = members[m];
      const std::string member_dir = members.size() == 1 ? dir : absl::StrCat(dir, "/member-", m);
      if (absl::Status s = util::MakeDirs(member_dir); !s.ok()) return s;
      std::vector<std::pair<std::string, torch::Tensor>> named;
      for (size_t i = 0; i < member.layers.size(); ++i) {
        const model::LoraPair& p = member.layers[i];
        if (!p.a.defined()) continue;
        const std::string key =
            absl::StrCat("base_model.model.", base_prefix, ".", encoder.linear_names()[i]);
        named.emplace_back(key + ".lora_A.weight", p.a);
        named.emplace_back(key + ".lora_B.weight", p.b);
      }
      if (!head.dense.empty()) {
        named.emplace_back("base_model.model." + head.dense + ".weight", member.head_dense_weight);
        named.emplace_back("base_model.model." + head.dense + ".bias", member.head_dense_bias);
      }
      named.emplace_back("base_model.model." + head.out + ".weight", member.classifier_weight);
      if (member.classifier_bias.defined()) {
        named.emplace_back("base_model.model." + head.out + ".bias", member.classifier_bias);
      }
      std::vector<torch::Tensor> keep;
      std::vector<model::TensorToWrite> tensors;
      for (auto& [name, t] : named) {
        keep.push_back(t.detach().to(torch::kCPU, torch::kFloat32).contiguous());
        const torch::Tensor& c = keep.back();
        tensors.push_back({name, model::DType::kF32, c.sizes().vec(),
                           absl::Span<const uint8_t>(static_cast<const uint8_t*>(c.data_ptr()),
                                                     static_cast<size_t>(c.nbytes()))});
      }
      if (absl::Status s = model::WriteSafetensors(member_dir + "/" + kPeftWeightsFile, tensors,
                                                   {{"format", "pt"}});
          !s.ok()) {
        return s;
      }
      if (absl::Status s =
              util::WriteFileAtomically(member_dir + "/" + kPeftConfigFile, PeftConfigToJson(lora));
          !s.ok()) {
        return s;
      }
    }
  } catch (const c10::Error& e) {
    return absl::InternalError(
        absl::StrCat("saving adapter to ", dir, ": ", e.what_without_backtrace()));
  }
  return absl::OkStatus();
}

}  // namespace loracle::adapters
