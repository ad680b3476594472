#ifndef LORACLE_SERVER_MODEL_PLACEMENT_H_
#define LORACLE_SERVER_MODEL_PLACEMENT_H_

// Where the model's tensors live and in which floating-point type (--device, --dtype). Base
// weights, adapter weights, dropout masks and every forward live there; tokenisation, batching
// and the uncertainty math stay on the host in float64. A batch's token ids cross to the device
// in one copy and its logits come back in one.

#include <torch/torch.h>

#include <string>

#include "absl/status/statusor.h"

namespace loracle::model {

struct Placement {
  torch::Device device = torch::kCPU;
  torch::ScalarType dtype = torch::kFloat32;

  torch::TensorOptions options() const {
    return torch::TensorOptions().device(device).dtype(dtype);
  }
  bool on_cpu() const { return device.is_cpu(); }
  // "cpu", "cuda:0": the device as --device names it.
  std::string DeviceName() const;
  // "float32", "bfloat16", "float16".
  std::string DTypeName() const;
};

// Parses --device (cpu | cuda | cuda:N) and --dtype (float32 | bfloat16 | float16).
// INVALID_ARGUMENT: a malformed value, a GPU index past the last GPU, or float16 on the CPU (its
// CPU kernels are missing in LibTorch; bfloat16 works there). FAILED_PRECONDITION: cuda asked of a
// LibTorch built without CUDA, or of a machine where CUDA finds no GPU; the message says which.
absl::StatusOr<Placement> ResolvePlacement(const std::string& device, const std::string& dtype);

// The most negative finite value of `dtype`: what an additive attention mask adds where a key is
// masked (transformers' torch.finfo(dtype).min), so that 0 * mask never makes a NaN.
double LowestFinite(torch::ScalarType dtype);

}  // namespace loracle::model

#endif  // LORACLE_SERVER_MODEL_PLACEMENT_H_
