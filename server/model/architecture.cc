#include "server/model/architecture.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace loracle::model {

namespace {

EncoderLayout BertLayout(const std::string& base_prefix, bool has_pooler) {
  return {base_prefix,
          "encoder.layer.",
          "attention.self.query",
          "attention.self.key",
          "attention.self.value",
          "attention.output.dense",
          "attention.output.LayerNorm",
          "intermediate.dense",
          "output.dense",
          "output.LayerNorm",
          has_pooler};
}

EncoderLayout DecoderLayout() {
  return {"model",
          "layers.",
          "self_attn.q_proj",
          "self_attn.k_proj",
          "self_attn.v_proj",
          "self_attn.o_proj",
          "input_layernorm",
          "mlp.up_proj",
          "mlp.down_proj",
          "post_attention_layernorm",
          /*has_pooler=*/false,
          "mlp.gate_proj"};
}

ArchitectureSpec DecoderSpec(Architecture arch, const char* model_type, const char* cls) {
  return {arch,
          model_type,
          cls,
          DecoderLayout(),
          {"", HeadActivation::kNone, "score", false},
          {"q_proj", "v_proj"},
          {"score"}};
}

// Indexed by Architecture.
const std::vector<ArchitectureSpec>& Specs() {
  static const std::vector<ArchitectureSpec>* const specs = new std::vector<ArchitectureSpec>{
      {Architecture::kBert,
       "bert",
       "BertForSequenceClassification",
       BertLayout("bert", /*has_pooler=*/true),
       {"", HeadActivation::kNone, "classifier"},
       {"query", "value"},
       {"classifier"}},
      // *ForSequenceClassification builds RobertaModel without its pooler.
      {Architecture::kRoberta,
       "roberta",
       "RobertaForSequenceClassification",
       BertLayout("roberta", /*has_pooler=*/false),
       {"classifier.dense", HeadActivation::kTanh, "classifier.out_proj"},
       {"query", "value"},
       {"classifier"}},
      {Architecture::kDistilBert,
       "distilbert",
       "DistilBertForSequenceClassification",
       {"distilbert", "transformer.layer.", "attention.q_lin", "attention.k_lin", "attention.v_lin",
        "attention.out_lin", "sa_layer_norm", "ffn.lin1", "ffn.lin2", "output_layer_norm",
        /*has_pooler=*/false},
       {"pre_classifier", HeadActivation::kRelu, "classifier"},
       {"q_lin", "v_lin"},
       {"pre_classifier", "classifier"}},
      DecoderSpec(Architecture::kLlama, "llama", "LlamaForSequenceClassification"),
      DecoderSpec(Architecture::kMistral, "mistral", "MistralForSequenceClassification"),
      DecoderSpec(Architecture::kQwen2, "qwen2", "Qwen2ForSequenceClassification"),
      DecoderSpec(Architecture::kQwen3, "qwen3", "Qwen3ForSequenceClassification"),
  };
  return *specs;
}

}  // namespace

const ArchitectureSpec& SpecFor(Architecture arch) { return Specs()[static_cast<size_t>(arch)]; }

const ArchitectureSpec* SpecForModelType(const std::string& model_type) {
  for (const ArchitectureSpec& s : Specs()) {
    if (s.model_type == model_type) return &s;
  }
  return nullptr;
}

std::string SupportedModelTypes() {
  std::string out;
  for (const ArchitectureSpec& s : Specs())
    absl::StrAppend(&out, out.empty() ? "" : ", ", s.model_type);
  return out;
}

const EncoderLayout& LayoutFor(Architecture arch) { return SpecFor(arch).encoder; }

std::vector<LinearSpec> AdaptableLinears(const ModelConfig& c) {
  const EncoderLayout& l = LayoutFor(c.architecture());
  const int64_t h = c.hidden_size, i = c.intermediate_size;
  std::vector<LinearSpec> out;
  if (c.is_decoder()) {
    const int64_t q = c.num_attention_heads * c.head_dim, kv = c.num_key_value_heads * c.head_dim;
    for (int64_t n = 0; n < c.num_hidden_layers; ++n) {
      const std::string p = absl::StrCat(l.layer_prefix, n, ".");
      out.push_back({p + l.query, h, q});
      out.push_back({p + l.key, h, kv});
      out.push_back({p + l.value, h, kv});
      out.push_back({p + l.attn_out, q, h});
      out.push_back({p + l.gate, h, i});
      out.push_back({p + l.intermediate, h, i});
      out.push_back({p + l.output, i, h});
    }
    return out;
  }
  for (int64_t n = 0; n < c.num_hidden_layers; ++n) {
    const std::string p = absl::StrCat(l.layer_prefix, n, ".");
    out.push_back({p + l.query, h, h});
    out.push_back({p + l.key, h, h});
    out.push_back({p + l.value, h, h});
    out.push_back({p + l.attn_out, h, h});
    out.push_back({p + l.intermediate, h, i});
    out.push_back({p + l.output, i, h});
  }
  if (l.has_pooler) out.push_back({"pooler.dense", h, h});
  return out;
}

TensorShapes BaseTensorShapes(const ModelConfig& c) {
  const EncoderLayout& l = LayoutFor(c.architecture());
  const int64_t h = c.hidden_size;
  if (c.is_decoder()) {
    TensorShapes t = {{"embed_tokens.weight", {c.vocab_size, h}}};
    const std::vector<LinearSpec> linears = AdaptableLinears(c);
    for (int64_t n = 0; n < c.num_hidden_layers; ++n) {
      const std::string p = absl::StrCat(l.layer_prefix, n, ".");
      t.push_back({p + l.attn_norm + ".weight", {h}});
      for (size_t k = 0; k < 7; ++k) {
        const LinearSpec& s = linears[static_cast<size_t>(n) * 7 + k];
        t.push_back({s.path + ".weight", {s.out, s.in}});
        const bool bias = k < 3 ? c.qkv_bias() : k == 3 ? c.o_bias() : c.mlp_bias;
        if (bias) t.push_back({s.path + ".bias", {s.out}});
        if (k == 3) {
          if (c.architecture() == Architecture::kQwen3) {
            t.push_back({p + "self_attn.q_norm.weight", {c.head_dim}});
            t.push_back({p + "self_attn.k_norm.weight", {c.head_dim}});
          }
          t.push_back({p + l.out_norm + ".weight", {h}});
        }
      }
    }
    t.push_back({"norm.weight", {h}});
    return t;
  }
  TensorShapes t = {
      {"embeddings.word_embeddings.weight", {c.vocab_size, h}},
      {"embeddings.position_embeddings.weight", {c.max_position_embeddings, h}},
  };
  if (c.type_vocab_size > 0) {
    t.push_back({"embeddings.token_type_embeddings.weight", {c.type_vocab_size, h}});
  }
  t.push_back({"embeddings.LayerNorm.weight", {h}});
  t.push_back({"embeddings.LayerNorm.bias", {h}});
  const std::vector<LinearSpec> linears = AdaptableLinears(c);
  for (int64_t n = 0; n < c.num_hidden_layers; ++n) {
    const std::string p = absl::StrCat(l.layer_prefix, n, ".");
    for (size_t k = 0; k < 6; ++k) {
      const LinearSpec& s = linears[static_cast<size_t>(n) * 6 + k];
      t.push_back({s.path + ".weight", {s.out, s.in}});
      t.push_back({s.path + ".bias", {s.out}});
      if (k == 3 || k == 5) {  // the LayerNorm after attention output / after the FFN
        const std::string& norm = k == 3 ? l.attn_norm : l.out_norm;
        t.push_back({p + norm + ".weight", {h}});
        t.push_back({p + norm + ".bias", {h}});
      }
    }
  }
  if (l.has_pooler) {
    t.push_back({"pooler.dense.weight", {h, h}});
    t.push_back({"pooler.dense.bias", {h}});
  }
  return t;
}

const HeadLayout& HeadFor(Architecture arch) { return SpecFor(arch).head; }

TensorShapes HeadTensorShapes(const ModelConfig& c, int64_t num_labels) {
  const HeadLayout& head = HeadFor(c.architecture());
  const int64_t h = c.hidden_size;
  TensorShapes t;
  if (!head.dense.empty()) {
    t.push_back({head.dense + ".weight", {h, h}});
    t.push_back({head.dense + ".bias", {h}});
  }
  t.push_back({head.out + ".weight", {num_labels, h}});
  if (head.out_bias) t.push_back({head.out + ".bias", {num_labels}});
  return t;
}

std::vector<std::string> DefaultTargetModules(Architecture arch) {
  return SpecFor(arch).default_targets;
}

std::vector<std::string> AllLinearTargetModules(Architecture arch) {
  const EncoderLayout& l = LayoutFor(arch);
  std::vector<std::string> out;
  for (const std::string* path :
       {&l.query, &l.key, &l.value, &l.attn_out, &l.gate, &l.intermediate, &l.output}) {
    if (path->empty()) continue;
    const size_t dot = path->rfind('.');
    std::string name = dot == std::string::npos ? *path : path->substr(dot + 1);
    if (std::find(out.begin(), out.end(), name) == out.end()) out.push_back(std::move(name));
  }
  return out;
}

std::vector<std::string> HeadModules(Architecture arch) { return SpecFor(arch).head_modules; }

}  // namespace loracle::model
