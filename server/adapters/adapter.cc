#include "server/adapters/adapter.h"

#include <set>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "server/model/checkpoint.h"
#include "server/model/file_util.h"
#include "server/model/safetensors.h"

namespace loracle::adapters {
namespace {

constexpr absl::string_view kPrefixes[] = {"base_model.model.bert.", "base_model.model."};

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
  return *std::move(t);
}

absl::StatusOr<model::LoraMember> LoadMember(const std::string& dir, const ServingConfig& serving,
                                             const model::EncoderImpl& encoder,
                                             PeftLoraConfig* lora_out) {
  absl::StatusOr<std::string> text = model::ReadFileToString(dir + "/" + kPeftConfigFile);
  if (!text.ok()) return text.status();
  absl::StatusOr<PeftLoraConfig> lora = ParsePeftConfig(*text, dir + "/" + kPeftConfigFile);
  if (!lora.ok()) return lora.status();
  *lora_out = *lora;
  absl::StatusOr<std::unique_ptr<model::SafetensorsFile>> file =
      model::SafetensorsFile::Open(dir + "/" + kPeftWeightsFile);
  if (!file.ok()) return file.status();
  const model::SafetensorsFile& f = **file;

  model::LoraMember member;
  member.layers.resize(encoder.linear_names().size());
  std::set<std::string> used;
  const double scaling = lora->scaling();
  for (size_t i = 0; i < encoder.linear_names().size(); ++i) {
    const std::string& path = encoder.linear_names()[i];
    if (!MatchesTarget(path, lora->target_modules)) continue;
    std::string prefix(kPrefixes[0]);
    if (!f.Contains(prefix + path + ".lora_A.weight")) prefix = std::string(kPrefixes[1]);
    const auto& linear = encoder.linear(static_cast<int>(i));
    const std::string a_key = prefix + path + ".lora_A.weight";
    const std::string b_key = prefix + path + ".lora_B.weight";
    absl::StatusOr<torch::Tensor> a = Tensor(f, a_key, {lora->rank, linear->in_features()});
    if (!a.ok()) return a.status();
    absl::StatusOr<torch::Tensor> b = Tensor(f, b_key, {linear->out_features(), lora->rank});
    if (!b.ok()) return b.status();
    member.layers[i] = {*std::move(a), *std::move(b), scaling};
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
  const int64_t labels = static_cast<int64_t>(serving.labels.size());
  const int64_t hidden = encoder.config().hidden_size;
  std::string head_key = "base_model.model.classifier.weight";
  absl::StatusOr<model::TensorView> head_view = f.Get(head_key);
  if (head_view.ok() && !head_view->shape.empty() && head_view->shape[0] != labels) {
    return absl::InvalidArgumentError(
        absl::StrCat(f.source(), ": classifier has ", head_view->shape[0], " outputs but ",
                     kServingConfigFile, " names ", labels, " labels"));
  }
  absl::StatusOr<torch::Tensor> w = Tensor(f, head_key, {labels, hidden});
  if (!w.ok()) return w.status();
  absl::StatusOr<torch::Tensor> b = Tensor(f, "base_model.model.classifier.bias", {labels});
  if (!b.ok()) return b.status();
  member.classifier_weight = *std::move(w);
  member.classifier_bias = *std::move(b);
  return member;
}

}  // namespace

absl::StatusOr<std::shared_ptr<const Adapter>> LoadAdapter(const std::string& dir,
                                                           const std::string& name, int64_t version,
                                                           const model::EncoderImpl& encoder) {
  if (!model::IsDirectory(dir)) {
    return absl::NotFoundError(absl::StrCat("adapter directory ", dir, " does not exist"));
  }
  auto adapter = std::make_shared<Adapter>();
  adapter->name = name;
  adapter->version = version;
  adapter->path = dir;
  absl::StatusOr<std::string> text = model::ReadFileToString(dir + "/" + kServingConfigFile);
  if (!text.ok()) return text.status();
  absl::StatusOr<ServingConfig> serving = ParseServingConfig(*text, dir + "/" + kServingConfigFile);
  if (!serving.ok()) return serving.status();
  adapter->serving = *serving;
  try {
    torch::NoGradGuard no_grad;
    for (int m = 0; m < serving->members; ++m) {
      const std::string member_dir = serving->members == 1 ? dir : absl::StrCat(dir, "/member-", m);
      PeftLoraConfig lora;
      absl::StatusOr<model::LoraMember> member = LoadMember(member_dir, *serving, encoder, &lora);
      if (!member.ok()) return member.status();
      if (m == 0) adapter->lora = lora;
      adapter->members.push_back(*std::move(member));
    }
  } catch (const c10::Error& e) {
    return absl::InternalError(
        absl::StrCat("loading adapter ", dir, ": ", e.what_without_backtrace()));
  }
  return std::shared_ptr<const Adapter>(std::move(adapter));
}

}  // namespace loracle::adapters
