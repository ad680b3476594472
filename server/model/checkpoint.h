#ifndef LORACLE_SERVER_MODEL_CHECKPOINT_H_
#define LORACLE_SERVER_MODEL_CHECKPOINT_H_

// Loads a Hugging Face BERT checkpoint directory (config.json, model.safetensors, vocab.txt,
// optional tokenizer_config.json) into a frozen Encoder plus its tokenizer.

#include <torch/torch.h>

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "server/model/encoder.h"
#include "server/model/model_config.h"
#include "server/model/safetensors.h"
#include "server/model/wordpiece_tokenizer.h"

namespace loracle::model {

struct BaseModel {
  std::string dir;
  ModelConfig config;
  Encoder encoder{nullptr};  // eval mode, parameters frozen (requires_grad = false)
  std::unique_ptr<WordPieceTokenizer> tokenizer;
  int max_length = 512;  // tokens per input including [CLS]/[SEP]
  int64_t num_parameters = 0;
};

// Errors name the file and, for weights, the tensor: NOT_FOUND (missing file), INVALID_ARGUMENT
// (bad config, missing or mis-shaped tensor), DATA_LOSS (corrupt safetensors).
absl::StatusOr<std::unique_ptr<BaseModel>> LoadBaseModel(const std::string& dir);

// Copies a safetensors view into a new float32 tensor (F16/BF16/F64 are converted).
// INVALID_ARGUMENT for non-float dtypes.
absl::StatusOr<torch::Tensor> ToFloatTensor(const TensorView& view, const std::string& name);

}  // namespace loracle::model

#endif  // LORACLE_SERVER_MODEL_CHECKPOINT_H_
