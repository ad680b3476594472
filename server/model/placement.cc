#include "server/model/placement.h"

#include <ATen/Context.h>
#include <torch/cuda.h>

#include <limits>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace loracle::model {

std::string Placement::DeviceName() const {
  if (device.is_cpu()) return "cpu";
  return device.str();
}

std::string Placement::DTypeName() const {
  switch (dtype) {
    case torch::kBFloat16:
      return "bfloat16";
    case torch::kFloat16:
      return "float16";
    default:
      return "float32";
  }
}

absl::StatusOr<Placement> ResolvePlacement(const std::string& device, const std::string& dtype) {
  Placement p;
  if (dtype == "float32") {
    p.dtype = torch::kFloat32;
  } else if (dtype == "bfloat16") {
    p.dtype = torch::kBFloat16;
  } else if (dtype == "float16") {
    p.dtype = torch::kFloat16;
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("--dtype=", dtype, ": expected float32, bfloat16 or float16"));
  }
  if (device == "cpu") {
    if (p.dtype == torch::kFloat16) {
      return absl::InvalidArgumentError(
          "--dtype=float16 needs --device=cuda: LibTorch has no float16 matrix kernels on the CPU "
          "(use --dtype=bfloat16 there)");
    }
    return p;
  }
  int index = 0;
  if (device == "cuda") {
    index = 0;
  } else if (!absl::StartsWith(device, "cuda:") ||
             !absl::SimpleAtoi(absl::string_view(device).substr(5), &index) || index < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("--device=", device, ": expected cpu, cuda or cuda:N"));
  }
  if (!torch::cuda::is_available()) {
    if (!at::Context::hasCUDART()) {  // no CUDA runtime compiled in
      return absl::FailedPreconditionError(absl::StrCat(
          "--device=", device,
          ": this loracle-server is built against a CPU-only LibTorch; build it against a CUDA "
          "LibTorch (cmake -DCMAKE_PREFIX_PATH=<libtorch> or -DTorch_DIR=..., README \"GPU\") or "
          "run with --device=cpu"));
    }
    return absl::FailedPreconditionError(absl::StrCat(
        "--device=", device,
        ": LibTorch has CUDA but finds no usable GPU (driver missing, or CUDA_VISIBLE_DEVICES "
        "empty?); run with --device=cpu"));
  }
  const int64_t count = static_cast<int64_t>(torch::cuda::device_count());
  if (index >= count) {
    return absl::InvalidArgumentError(absl::StrCat("--device=", device, ": this machine has ",
                                                   count, " GPU(s), cuda:0 to cuda:", count - 1));
  }
  p.device = torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(index));
  return p;
}

double LowestFinite(torch::ScalarType dtype) {
  switch (dtype) {
    case torch::kBFloat16:
      return static_cast<double>(std::numeric_limits<c10::BFloat16>::lowest());
    case torch::kFloat16:
      return static_cast<double>(std::numeric_limits<c10::Half>::lowest());
    case torch::kFloat64:
      return std::numeric_limits<double>::lowest();
    default:
      return static_cast<double>(std::numeric_limits<float>::lowest());
  }
}

}  // namespace loracle::model
