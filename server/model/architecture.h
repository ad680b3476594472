#ifndef LORACLE_SERVER_MODEL_ARCHITECTURE_H_
#define LORACLE_SERVER_MODEL_ARCHITECTURE_H_

// Where each supported architecture keeps its tensors, in transformers' own names (torch-free).
// The encoder, the checkpoint loader, the PEFT adapter reader/writer and the test fixtures all
// take names from here, so they cannot disagree.

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "server/model/model_config.h"

namespace loracle::model {

using TensorShapes = std::vector<std::pair<std::string, std::vector<int64_t>>>;

// Module paths inside one transformer layer, relative to "<layer_prefix><i>.". Decoders: attn_norm
// is input_layernorm (before attention), out_norm post_attention_layernorm (before the MLP),
// intermediate the MLP's up_proj, `gate` its gate_proj and output its down_proj.
struct EncoderLayout {
  std::string base_prefix;   // the base model's attribute in *For* classes: "bert", "model", ...
  std::string layer_prefix;  // "encoder.layer." | "transformer.layer." | "layers."
  std::string query, key, value, attn_out, attn_norm, intermediate, output, out_norm;
  bool has_pooler = false;  // BERT: the [CLS] features pass BertPooler (dense + tanh)
  std::string gate;         // decoders' SwiGLU gate ("mlp.gate_proj"); empty for encoders
};
const EncoderLayout& LayoutFor(Architecture arch);

// A linear layer LoRA may adapt: full module path and its [out, in] shape.
struct LinearSpec {
  std::string path;  // "encoder.layer.0.attention.self.query"
  int64_t in = 0;
  int64_t out = 0;
};
// In the backbone's order (LoraLinear::index()): encoders per layer query, key, value, attention
// output, FFN in, FFN out, then BERT's pooler; decoders per layer q, k, v, o, gate, up, down.
std::vector<LinearSpec> AdaptableLinears(const ModelConfig& config);

// Every tensor of the bare base model (BertModel, RobertaModel without pooler, DistilBertModel).
TensorShapes BaseTensorShapes(const ModelConfig& config);

// The sequence-classification head on the [CLS] features, as in *ForSequenceClassification:
//   BERT        classifier(pooled)
//   RoBERTa     classifier.out_proj(tanh(classifier.dense(h_cls)))
//   DistilBERT  classifier(relu(pre_classifier(h_cls)))
enum class HeadActivation { kNone, kTanh, kRelu };
//   decoders    score(h_last), no bias (the last non-padding token's final hidden state)
struct HeadLayout {
  std::string dense;  // "" when the head is one linear layer
  HeadActivation activation = HeadActivation::kNone;
  std::string out;
  bool out_bias = true;  // whether `out` has a bias (decoders' score has none)
};
const HeadLayout& HeadFor(Architecture arch);
TensorShapes HeadTensorShapes(const ModelConfig& config, int64_t num_labels);

// Everything loracle knows about one architecture, in one table (architecture.cc).
struct ArchitectureSpec {
  Architecture arch;
  std::string model_type;            // config.json's "model_type"
  std::string classification_class;  // "BertForSequenceClassification", ...
  EncoderLayout encoder;
  HeadLayout head;
  // PEFT's default LoRA targets (TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING) and the head
  // modules a sequence-classification adapter must save.
  std::vector<std::string> default_targets;
  std::vector<std::string> head_modules;
};
const ArchitectureSpec& SpecFor(Architecture arch);
// The architecture whose model_type is `model_type`; null when unsupported.
const ArchitectureSpec* SpecForModelType(const std::string& model_type);
// "bert, roberta, distilbert".
std::string SupportedModelTypes();

std::vector<std::string> DefaultTargetModules(Architecture arch);
// Every linear layer of the encoder layers as PEFT target names (the last component of each
// module path: BERT and RoBERTa "query", "key", "value", "dense"; DistilBERT "q_lin", "k_lin",
// "v_lin", "out_lin", "lin1", "lin2"), like PEFT's "all-linear" without the head. BERT's pooler
// is a "dense" too and is adapted with them.
std::vector<std::string> AllLinearTargetModules(Architecture arch);
std::vector<std::string> HeadModules(Architecture arch);

}  // namespace loracle::model

#endif  // LORACLE_SERVER_MODEL_ARCHITECTURE_H_
