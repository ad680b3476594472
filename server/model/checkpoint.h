#ifndef LORACLE_SERVER_MODEL_CHECKPOINT_H_
#define LORACLE_SERVER_MODEL_CHECKPOINT_H_

// Loads a Hugging Face checkpoint directory of a BERT, RoBERTa or DistilBERT model: config.json,
// model.safetensors (or model.safetensors.index.json and its shards), and the tokenizer files
// (tokenizer.h). Bare models (BertModel) and *For* models (BertForSequenceClassification, whose
// tensors carry a "bert." / "roberta." / "distilbert." prefix) both load; a sequence-
// classification head, when present, is kept as `head`.

#include <torch/torch.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "server/model/backbone.h"
#include "server/model/fingerprint.h"
#include "server/model/model_config.h"
#include "server/model/placement.h"
#include "server/model/safetensors.h"
#include "server/text/tokenizer.h"

namespace loracle::model {

struct BaseModel {
  std::string dir;
  ModelConfig config;
  Backbone backbone{nullptr};  // eval mode, parameters frozen (requires_grad = false)
  Placement placement;         // where the backbone's and every adapter's tensors live
  std::unique_ptr<text::Tokenizer> tokenizer;
  int max_length = 512;  // tokens per input, special tokens included
  int64_t num_parameters = 0;
  // The base's identity (fingerprint.h), stamped into every adapter written on it and checked
  // when one loads.
  BaseFingerprint fingerprint;
  // The checkpoint's own classification head (*ForSequenceClassification), with no LoRA layers;
  // null when the checkpoint has none. Labels from config.id2label.
  std::shared_ptr<const LoraMember> head;
  std::vector<std::string> head_labels;
};

// Errors name the file and, for weights, the tensor: NOT_FOUND (missing file), INVALID_ARGUMENT
// (bad config, unsupported architecture, missing or mis-shaped tensor), DATA_LOSS (corrupt
// safetensors).
// The weights are read on the host in `placement`'s floating type (converted from the
// checkpoint's where they differ; no float32 copy of a 16-bit checkpoint served in 16 bits) and
// then moved to `placement`'s device.
absl::StatusOr<std::unique_ptr<BaseModel>> LoadBaseModel(const std::string& dir,
                                                         const Placement& placement = {});

// Copies a safetensors view into a new float32 tensor (F16/BF16/F64 are converted).
// INVALID_ARGUMENT for non-float dtypes.
absl::StatusOr<torch::Tensor> ToFloatTensor(const TensorView& view, const std::string& name);

// Copies a safetensors view into `dst` (a floating type, contiguous, same number of elements),
// converting on the way: one pass over the mapped bytes, a plain copy when the types agree.
// INVALID_ARGUMENT for non-float dtypes.
absl::Status CopyInto(const TensorView& view, const std::string& name, torch::Tensor& dst);

// A checkpoint's weights: one model.safetensors or the shards an index names, all mapped.
class CheckpointWeights {
 public:
  static absl::StatusOr<std::unique_ptr<CheckpointWeights>> Open(const std::string& dir);
  bool Contains(const std::string& name) const;
  absl::StatusOr<TensorView> Get(const std::string& name) const;
  std::string SourceOf(const std::string& name) const;  // the file holding `name`
  const std::string& description() const { return description_; }
  std::vector<std::string> names() const;

 private:
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::map<std::string, size_t> index_;  // tensor name -> files_ slot
  std::string description_;
  const SafetensorsFile* FileOf(const std::string& name) const;
};

}  // namespace loracle::model

#endif  // LORACLE_SERVER_MODEL_CHECKPOINT_H_
