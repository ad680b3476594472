#ifndef LORACLE_SERVER_MODEL_HIDDEN_KEY_H_
#define LORACLE_SERVER_MODEL_HIDDEN_KEY_H_

// HIDDENKEY's per-row masks for one layer (dropout.h), shared by the backbones: drawn on the host
// from each row's seed (the same masks on every device), then copied to the device once.

#include <torch/torch.h>

#include <cstdint>
#include <functional>

#include "server/model/lora.h"

namespace loracle::model {

struct HiddenKeyMasks {
  torch::Tensor dropkey;    // [rows, heads, 1, seq]: 0 where a key is kept, lowest where dropped
  torch::Tensor hiddencut;  // [rows, seq, intermediate]: 0 or 1/(1-p)
};

// Rows of groups without HIDDENKEY keep everything. `protect(row, keep)` adjusts a row's DropKey
// keep-mask [heads, 1, seq] (1 = kept) before it applies, so a query is never left without keys.
HiddenKeyMasks DrawHiddenKeyMasks(const LoraRouting& routing, int64_t rows, int64_t seq,
                                  int64_t heads, int64_t intermediate, int64_t layer,
                                  const torch::TensorOptions& options,
                                  const std::function<void(int64_t, torch::Tensor&)>& protect);

}  // namespace loracle::model

#endif  // LORACLE_SERVER_MODEL_HIDDEN_KEY_H_
