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
  // Why this dtype: "--dtype=float32", or for --dtype=auto what was detected.
  std::string dtype_reason;
  // --quantize=int8: the frozen base's per-token linear layers run as int8 GEMMs in inference
  // (BackboneImpl::QuantizeInt8); dtype stays float32 for everything else.
  bool int8 = false;
  // "int8" or "none": the mode as --quantize names it.
  std::string QuantizeName() const { return int8 ? "int8" : "none"; }
};

// What the CPU and OS offer for bfloat16 matrix products (x86 CPUID and XGETBV; all false
// elsewhere).
struct CpuBf16Support {
  bool avx512_bf16 = false;  // CPUID.(7,1):EAX[5], VDPBF16PS
  bool amx_bf16 = false;     // CPUID.(7,0):EDX[22]
  bool os_avx512 = false;    // XCR0: opmask and ZMM state enabled
  bool os_amx = false;       // XCR0: tile config and data state enabled
  // Native bfloat16 products: AVX512_BF16 or AMX-BF16 with the OS saving their registers.
  bool native() const { return (avx512_bf16 && os_avx512) || (amx_bf16 && os_amx); }
};
CpuBf16Support DetectCpuBf16();

// --dtype=auto on the CPU: bfloat16 where the CPU multiplies bfloat16 natively (about twice
// float32's GEMM rate there, and the accuracy guard in tests/bench/README.md holds), float32
// elsewhere: without native support LibTorch emulates bfloat16 products, ~20-40x slower than
// float32 (measured on an AVX2 EPYC). Sets dtype and dtype_reason.
Placement AutoCpuPlacement(const CpuBf16Support& cpu);

// Parses --device (cpu | cuda | cuda:N), --dtype (auto | float32 | bfloat16 | float16) and
// --quantize (none | int8). auto: on the CPU AutoCpuPlacement(DetectCpuBf16()), float32 with int8;
// on cuda float32 (bfloat16 there is opt-in).
// INVALID_ARGUMENT: a malformed value, a GPU index past the last GPU, float16 on the CPU (its
// CPU kernels are missing in LibTorch; bfloat16 works there), int8 off the CPU or with a dtype
// other than float32/auto. FAILED_PRECONDITION: cuda asked of a LibTorch built without CUDA, or of
// a machine where CUDA finds no GPU; int8 where LibTorch has no int8 engine (lora.h Int8Engine).
absl::StatusOr<Placement> ResolvePlacement(const std::string& device, const std::string& dtype,
                                           const std::string& quantize = "none");

// The most negative finite value of `dtype`: what an additive attention mask adds where a key is
// masked (transformers' torch.finfo(dtype).min), so that 0 * mask never makes a NaN.
double LowestFinite(torch::ScalarType dtype);

}  // namespace loracle::model

#endif  // LORACLE_SERVER_MODEL_PLACEMENT_H_
