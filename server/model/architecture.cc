#include "server/model/architecture.h"

#include "absl/strings/str_cat.h"

namespace loracle::model {

const EncoderLayout& LayoutFor(Architecture arch) {
  static const EncoderLayout kBert = {"bert",
                                      "encoder.layer.",
                                      "attention.self.query",
                                      "attention.self.key",
                                      "attention.self.value",
                                      "attention.output.dense",
                                      "attention.output.LayerNorm",
                                      "intermediate.dense",
                                      "output.dense",
                                      "output.LayerNorm",
                                      /*has_pooler=*/true};
  static const EncoderLayout kRoberta = [] {
    EncoderLayout l = kBert;
    l.base_prefix = "roberta";
    l.has_pooler = false;  // *ForSequenceClassification builds RobertaModel without its pooler
    return l;
  }();
  static const EncoderLayout kDistilBert = {
      "distilbert",      "transformer.layer.", "attention.q_lin",   "attention.k_lin",
      "attention.v_lin", "attention.out_lin",  "sa_layer_norm",     "ffn.lin1",
      "ffn.lin2",        "output_layer_norm",  /*has_pooler=*/false};
  switch (arch) {
    case Architecture::kRoberta:
      return kRoberta;
    case Architecture::kDistilBert:
      return kDistilBert;
    case Architecture::kBert:
      break;
  }
  return kBert;
}

std::vector<LinearSpec> AdaptableLinears(const ModelConfig& c) {
  const EncoderLayout& l = LayoutFor(c.architecture());
  const int64_t h = c.hidden_size, i = c.intermediate_size;
  std::vector<LinearSpec> out;
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

const HeadLayout& HeadFor(Architecture arch) {
  static const HeadLayout kBert = {"", HeadActivation::kNone, "classifier"};
  static const HeadLayout kRoberta = {"classifier.dense", HeadActivation::kTanh,
                                      "classifier.out_proj"};
  static const HeadLayout kDistilBert = {"pre_classifier", HeadActivation::kRelu, "classifier"};
  switch (arch) {
    case Architecture::kRoberta:
      return kRoberta;
    case Architecture::kDistilBert:
      return kDistilBert;
    case Architecture::kBert:
      break;
  }
  return kBert;
}

TensorShapes HeadTensorShapes(const ModelConfig& c, int64_t num_labels) {
  const HeadLayout& head = HeadFor(c.architecture());
  const int64_t h = c.hidden_size;
  TensorShapes t;
  if (!head.dense.empty()) {
    t.push_back({head.dense + ".weight", {h, h}});
    t.push_back({head.dense + ".bias", {h}});
  }
  t.push_back({head.out + ".weight", {num_labels, h}});
  t.push_back({head.out + ".bias", {num_labels}});
  return t;
}

std::vector<std::string> DefaultTargetModules(Architecture arch) {
  if (arch == Architecture::kDistilBert) return {"q_lin", "v_lin"};
  return {"query", "value"};
}

std::vector<std::string> HeadModules(Architecture arch) {
  if (arch == Architecture::kDistilBert) return {"pre_classifier", "classifier"};
  return {"classifier"};
}

}  // namespace loracle::model
