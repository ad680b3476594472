#include "server/model/lora.h"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Context.h>
#include <ATen/native/quantized/PackedParams.h>

#include <algorithm>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "server/model/cpu_runtime.h"

namespace loracle::model {

class Int8Linear {
 public:
  explicit Int8Linear(c10::intrusive_ptr<LinearPackedParamsBase> packed)
      : packed_(std::move(packed)) {}
  // x [tokens, in] float32 -> [tokens, out] float32. Activations are quantized to 7 bits
  // (reduce_range), as PyTorch's x86 default: without VNNI the u8 x s8 products are summed in
  // pairs into saturating int16 (vpmaddubsw), and full 8-bit activations overflow them (a
  // [20, 32] x [32, 24] product of unit-scale values was off by up to 1.0 with 8 bits here).
  torch::Tensor Apply(const torch::Tensor& x) const {
    return packed_->apply_dynamic(x, /*reduce_range=*/true);
  }

 private:
  c10::intrusive_ptr<LinearPackedParamsBase> packed_;
};

namespace {

// `mask` [n, k] viewed to broadcast against x [n, ..., k].
torch::Tensor Broadcastable(const torch::Tensor& mask, int64_t dims) {
  std::vector<int64_t> shape(static_cast<size_t>(dims), 1);
  shape.front() = mask.size(0);
  shape.back() = mask.size(1);
  return mask.view(shape);
}

}  // namespace

std::string Int8Engine() {
  static const std::string engine = [] {
    const std::vector<at::QEngine>& have = at::globalContext().supportedQEngines();
    // fbgemm and oneDNN run x86 int8 GEMMs (VNNI where the CPU has it); QNNPACK is for ARM.
    for (at::QEngine e : {at::QEngine::FBGEMM, at::QEngine::ONEDNN}) {
      if (std::find(have.begin(), have.end(), e) != have.end()) {
        at::globalContext().setQEngine(e);
        return std::string(e == at::QEngine::FBGEMM ? "fbgemm" : "onednn");
      }
    }
    return std::string();
  }();
  return engine;
}

absl::StatusOr<std::shared_ptr<const Int8Linear>> PackInt8(const torch::Tensor& weight,
                                                           const torch::Tensor& bias) {
  if (Int8Engine().empty()) {
    return absl::FailedPreconditionError(
        "--quantize=int8: this LibTorch has no quantized engine for int8 GEMMs on this CPU "
        "(needs fbgemm or oneDNN on x86-64)");
  }
  if (!weight.device().is_cpu() || weight.scalar_type() != torch::kFloat32) {
    return absl::FailedPreconditionError(
        "--quantize=int8 quantizes float32 weights on the CPU (--device=cpu --dtype=float32)");
  }
  c10::InferenceMode guard;
  const torch::Tensor w = weight.detach().contiguous();
  // Symmetric per-row scales: the largest |w| of a row maps to 127.
  const torch::Tensor scales =
      (w.abs().amax(1).clamp_min(1e-12) / 127.0).to(torch::kFloat64).contiguous();
  const torch::Tensor zero_points = torch::zeros({w.size(0)}, torch::kInt64);
  const torch::Tensor q = torch::quantize_per_channel(w, scales, zero_points, 0, torch::kQInt8);
  static auto prepack = c10::Dispatcher::singleton()
                            .findSchemaOrThrow("quantized::linear_prepack", "")
                            .typed<c10::intrusive_ptr<LinearPackedParamsBase>(
                                at::Tensor, c10::optional<at::Tensor>)>();
  try {
    return std::make_shared<const Int8Linear>(prepack.call(
        q, bias.defined() ? c10::optional<at::Tensor>(bias.detach().contiguous()) : c10::nullopt));
  } catch (const std::exception& e) {
    return absl::FailedPreconditionError(
        absl::StrCat("--quantize=int8: packing a [", w.size(0), ", ", w.size(1),
                     "] weight failed in LibTorch's ", Int8Engine(), " engine: ", e.what()));
  }
}

torch::Tensor FusedLinear(const torch::Tensor& x, const torch::Tensor& weight,
                          const torch::Tensor& bias, const Int8Linear* int8) {
  std::vector<int64_t> shape = x.sizes().vec();
  shape.back() = weight.size(0);
  const torch::Tensor x2 = x.reshape({-1, x.size(-1)});
  const int64_t tokens = x2.size(0);
  const bool inference = c10::InferenceMode::is_enabled() && x.device().is_cpu();
  const bool quantized = int8 != nullptr && inference && x.scalar_type() == torch::kFloat32;
  // Below this many tokens per chunk a split costs more in hand-offs than it gains.
  constexpr int64_t kMinTokensPerPart = 16;
  const int parts =
      static_cast<int>(std::min<int64_t>(TokenParallelParts(), tokens / kMinTokensPerPart));
  if (parts <= 1 || !inference) {
    if (quantized) return int8->Apply(x2.contiguous()).view(shape);
    if (!bias.defined()) return torch::mm(x2, weight.t()).view(shape);
    return torch::addmm(bias, x2, weight.t()).view(shape);
  }
  // Each chunk of tokens writes its own rows of the output: one GEMM per helper thread.
  torch::Tensor out = torch::empty({tokens, weight.size(0)}, x2.options());
  const torch::Tensor wt = weight.t();
  RunInParallel(parts, [&](int p) {
    c10::InferenceMode guard;
    const int64_t begin = tokens * p / parts, end = tokens * (p + 1) / parts;
    torch::Tensor rows = out.narrow(0, begin, end - begin);
    if (quantized) {
      rows.copy_(int8->Apply(x2.narrow(0, begin, end - begin).contiguous()));
    } else if (bias.defined()) {
      torch::addmm_out(rows, bias, x2.narrow(0, begin, end - begin), wt);
    } else {
      torch::mm_out(rows, x2.narrow(0, begin, end - begin), wt);
    }
  });
  return out.view(shape);
}

torch::Tensor KeepMask(c10::IntArrayRef shape, double p, uint64_t seed) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  return torch::empty(shape).bernoulli_(1.0 - p, gen).div_(1.0 - p);
}

std::pair<torch::Tensor, torch::Tensor> LoraDropoutMasks(uint64_t row_seed, int linear_index,
                                                         int64_t in, int64_t out, double p) {
  return {KeepMask({in}, p, MixSeed(row_seed, static_cast<uint64_t>(linear_index), kMaskA)),
          KeepMask({out}, p, MixSeed(row_seed, static_cast<uint64_t>(linear_index), kMaskB))};
}

LoraLinearImpl::LoraLinearImpl(int64_t in_features, int64_t out_features, int index, bool has_bias)
    : LoraLinearImpl(torch::zeros({out_features, in_features}),
                     has_bias ? torch::zeros({out_features}) : torch::Tensor(), index) {}

LoraLinearImpl::LoraLinearImpl(torch::Tensor weight_storage, torch::Tensor bias_storage, int index)
    : index_(index) {
  weight = register_parameter("weight", std::move(weight_storage));
  if (bias_storage.defined()) bias = register_parameter("bias", std::move(bias_storage));
}

torch::Tensor LoraLinearImpl::forward(const torch::Tensor& x, const LoraRouting* routing) {
  torch::Tensor y = FusedLinear(x, weight, bias, int8.get());
  AddLora(x, y, routing);
  return y;
}

void LoraLinearImpl::AddLora(const torch::Tensor& x, torch::Tensor y,
                             const LoraRouting* routing) const {
  if (routing == nullptr) return;
  for (const LoraGroup& g : *routing) {
    if (g.member == nullptr || g.end <= g.begin) continue;
    const LoraPair& p = g.member->layers[static_cast<size_t>(index_)];
    if (!p.a.defined()) continue;
    torch::Tensor xs = x.slice(0, g.begin, g.end);
    torch::Tensor mask_b;
    if (g.dropout_on() && g.dropout->method == DropoutMethod::kInput && g.dropout->rate > 0) {
      std::vector<torch::Tensor> masks;  // element-wise, per token
      for (uint64_t seed : g.row_seeds) {
        masks.push_back(KeepMask(xs.sizes().slice(1), g.dropout->rate,
                                 MixSeed(seed, static_cast<uint64_t>(index_), kMaskInput)));
      }
      xs = xs * torch::stack(masks).to(xs.options());
    } else if (g.dropout_on() && g.dropout->method == DropoutMethod::kLoraDropout &&
               g.dropout->rate > 0) {
      std::vector<torch::Tensor> a_masks, b_masks;  // one mask set per row (sample), not per token
      for (uint64_t seed : g.row_seeds) {
        auto [ma, mb] =
            LoraDropoutMasks(seed, index_, in_features(), out_features(), g.dropout->rate);
        a_masks.push_back(ma);
        b_masks.push_back(mb);
      }
      // Drawn on the host (the same masks on every device), one copy each to the device.
      xs = xs * Broadcastable(torch::stack(a_masks).to(xs.options()), xs.dim());
      mask_b = Broadcastable(torch::stack(b_masks).to(xs.options()), xs.dim());
    }
    // Plain 2-D GEMMs on contiguous operands: OpenBLAS is far slower on the skinny shapes that
    // matmul's 3-D folding and transposed views produce (measured: 4-5x per call here).
    // Trained members keep float32 weights while the base may run in a 16-bit type: the delta
    // runs in the activations' type (a no-op cast when they agree, as for loaded adapters).
    const int64_t in = xs.size(-1);
    const torch::ScalarType type = xs.scalar_type();
    torch::Tensor h = torch::mm(xs.reshape({-1, in}), p.a.to(type).t().contiguous());
    torch::Tensor delta = torch::mm(h, p.b.to(type).t().contiguous());
    std::vector<int64_t> shape = xs.sizes().vec();
    shape.back() = delta.size(1);
    delta = delta.view(shape);
    if (mask_b.defined()) delta = delta * mask_b;
    y.slice(0, g.begin, g.end).add_(delta, p.scaling);
  }
}

void LoraMember::SetHeadTensor(const HeadLayout& head, const std::string& name, torch::Tensor t) {
  if (name == head.dense + ".weight") head_dense_weight = std::move(t);
  if (name == head.dense + ".bias") head_dense_bias = std::move(t);
  if (name == head.out + ".weight") classifier_weight = std::move(t);
  if (name == head.out + ".bias") classifier_bias = std::move(t);
}

void LoraMember::To(const torch::TensorOptions& options) {
  auto move = [&options](torch::Tensor& t) {
    if (t.defined()) t = t.to(options);
  };
  for (LoraPair& p : layers) {
    move(p.a);
    move(p.b);
  }
  move(head_dense_weight);
  move(head_dense_bias);
  move(classifier_weight);
  move(classifier_bias);
}

torch::Tensor LoraMember::Head(const torch::Tensor& features) const {
  torch::Tensor x = features.to(classifier_weight.scalar_type());
  if (head_dense_weight.defined()) {
    x = torch::nn::functional::linear(x, head_dense_weight, head_dense_bias);
    if (head_activation == HeadActivation::kTanh) x = torch::tanh(x);
    if (head_activation == HeadActivation::kRelu) x = torch::relu(x);
  }
  return torch::nn::functional::linear(x, classifier_weight, classifier_bias);
}

LoraRouting SliceRouting(const LoraRouting& routing, int64_t begin, int64_t end) {
  LoraRouting out;
  for (const LoraGroup& g : routing) {
    const int64_t b = std::max(g.begin, begin), e = std::min(g.end, end);
    if (b >= e) continue;
    LoraGroup part = g;
    part.begin = b - begin;
    part.end = e - begin;
    if (!g.row_seeds.empty()) {
      part.row_seeds.assign(g.row_seeds.begin() + (b - g.begin),
                            g.row_seeds.begin() + (e - g.begin));
    }
    out.push_back(std::move(part));
  }
  return out;
}

}  // namespace loracle::model
