#include "server/model/placement.h"

#include <ATen/Context.h>
#include <torch/cuda.h>

#include <cstdint>
#include <limits>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "server/model/lora.h"

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

CpuBf16Support DetectCpuBf16() {
  CpuBf16Support s;
#if defined(__x86_64__) || defined(__i386__)
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  if (__get_cpuid_max(0, nullptr) < 7) return s;
  __cpuid_count(7, 0, eax, ebx, ecx, edx);
  const unsigned max_subleaf = eax;
  s.amx_bf16 = (edx >> 22) & 1u;
  if (max_subleaf >= 1) {
    __cpuid_count(7, 1, eax, ebx, ecx, edx);
    s.avx512_bf16 = (eax >> 5) & 1u;
  }
  __cpuid(1, eax, ebx, ecx, edx);
  const bool osxsave = (ecx >> 27) & 1u;
  if (osxsave) {
    unsigned lo = 0, hi = 0;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    const uint64_t xcr0 = (static_cast<uint64_t>(hi) << 32) | lo;
    s.os_avx512 = (xcr0 & 0xE6) == 0xE6;     // SSE, AVX, opmask, ZMM_Hi256, Hi16_ZMM
    s.os_amx = (xcr0 & 0x60000) == 0x60000;  // XTILECFG, XTILEDATA
  }
#endif
  return s;
}

Placement AutoCpuPlacement(const CpuBf16Support& cpu) {
  Placement p;
  if (cpu.native()) {
    p.dtype = torch::kBFloat16;
    p.dtype_reason = absl::StrCat("--dtype=auto: bfloat16, the CPU multiplies bfloat16 natively (",
                                  cpu.avx512_bf16 && cpu.os_avx512 ? "AVX512_BF16" : "AMX-BF16",
                                  "); --dtype=float32 to turn it off");
  } else {
    p.dtype = torch::kFloat32;
    p.dtype_reason =
        "--dtype=auto: float32, the CPU has no native bfloat16 products (neither AVX512_BF16 nor "
        "AMX-BF16 enabled), where LibTorch's emulated bfloat16 GEMMs are many times slower";
  }
  return p;
}

absl::StatusOr<Placement> ResolvePlacement(const std::string& device, const std::string& dtype,
                                           const std::string& quantize) {
  if (quantize != "none" && quantize != "int8") {
    return absl::InvalidArgumentError(
        absl::StrCat("--quantize=", quantize, ": expected none or int8"));
  }
  if (quantize == "int8") {
    if (device != "cpu") {
      return absl::InvalidArgumentError(
          absl::StrCat("--quantize=int8 runs on the CPU only (got --device=", device, ")"));
    }
    if (dtype != "auto" && dtype != "float32") {
      return absl::InvalidArgumentError(absl::StrCat(
          "--quantize=int8 takes float32 activations: use --dtype=float32 or auto (got --dtype=",
          dtype, ")"));
    }
    if (Int8Engine().empty()) {
      return absl::FailedPreconditionError(
          "--quantize=int8: this LibTorch has no quantized engine for int8 GEMMs on this CPU "
          "(fbgemm or oneDNN on x86-64); run with --quantize=none");
    }
    Placement p;
    p.int8 = true;
    p.dtype_reason = absl::StrCat("--quantize=int8: int8 base GEMMs (", Int8Engine(),
                                  "), float32 activations, LoRA deltas and heads");
    return p;
  }
  Placement p;
  if (dtype == "auto") {
    if (device == "cpu") return AutoCpuPlacement(DetectCpuBf16());
    p.dtype = torch::kFloat32;
    p.dtype_reason = "--dtype=auto: float32 on cuda (--dtype=bfloat16 to opt in)";
  } else if (dtype == "float32") {
    p.dtype = torch::kFloat32;
  } else if (dtype == "bfloat16") {
    p.dtype = torch::kBFloat16;
  } else if (dtype == "float16") {
    p.dtype = torch::kFloat16;
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("--dtype=", dtype, ": expected auto, float32, bfloat16 or float16"));
  }
  if (p.dtype_reason.empty()) p.dtype_reason = absl::StrCat("--dtype=", dtype);
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
