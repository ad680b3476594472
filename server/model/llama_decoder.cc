#include "server/model/llama_decoder.h"

#include <algorithm>
#include <cmath>
#include <set>
#include <tuple>

#include "absl/strings/str_cat.h"
#include "server/model/architecture.h"
#include "server/model/hidden_key.h"

namespace loracle::model {
namespace {

constexpr double kPi = 3.14159265358979323846;

// Per row: the number of leading attended positions (right padding); rows whose mask is not 1s
// then 0s count every position up to the last attended one.
std::vector<int64_t> RowLengths(const torch::Tensor& host_mask) {
  const torch::Tensor m = host_mask.to(torch::kInt64).contiguous();
  const int64_t rows = m.size(0), seq = m.size(1);
  const int64_t* data = m.data_ptr<int64_t>();
  std::vector<int64_t> out(static_cast<size_t>(rows), 1);
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t j = seq - 1; j >= 0; --j) {
      if (data[r * seq + j] != 0) {
        out[static_cast<size_t>(r)] = j + 1;
        break;
      }
    }
  }
  return out;
}

// x * cos + rotate_half(x) * sin over the last dimension; cos/sin [seq, d] broadcast over
// x [rows, seq, heads, d].
torch::Tensor Rotate(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin) {
  const int64_t half = x.size(-1) / 2;
  torch::Tensor rotated = torch::cat({-x.narrow(-1, half, half), x.narrow(-1, 0, half)}, -1);
  const int64_t seq = x.size(1), d = x.size(-1);
  return x * cos.view({1, seq, 1, d}) + rotated * sin.view({1, seq, 1, d});
}

}  // namespace

std::vector<double> RopeInverseFrequencies(const ModelConfig& c) {
  const int64_t d = c.head_dim;
  std::vector<double> inv(static_cast<size_t>(d / 2));
  for (int64_t i = 0; i < d / 2; ++i) {
    inv[static_cast<size_t>(i)] =
        1.0 / std::pow(c.rope_theta, static_cast<double>(2 * i) / static_cast<double>(d));
  }
  const RopeScaling& s = c.rope_scaling;
  if (s.type == "linear") {
    for (double& f : inv) f /= s.factor;
  } else if (s.type == "llama3") {
    // transformers' _compute_llama3_parameters: long wavelengths slowed by `factor`, short ones
    // kept, the band between interpolated.
    const double old_len = static_cast<double>(s.original_max_position_embeddings);
    const double low_wavelen = old_len / s.low_freq_factor;
    const double high_wavelen = old_len / s.high_freq_factor;
    for (double& f : inv) {
      const double wavelen = 2 * kPi / f;
      if (wavelen > low_wavelen) {
        f /= s.factor;
      } else if (wavelen >= high_wavelen) {
        const double smooth =
            (old_len / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
        f = (1 - smooth) * f / s.factor + smooth * f;
      }
    }
  }
  return inv;
}

std::shared_ptr<torch::nn::Module> LlamaDecoderImpl::Submodule(const std::string& path) {
  if (auto it = submodules_.find(path); it != submodules_.end()) return it->second;
  const size_t dot = path.rfind('.');
  torch::nn::Module& parent = dot == std::string::npos ? static_cast<torch::nn::Module&>(*this)
                                                       : *Submodule(path.substr(0, dot));
  auto m = parent.register_module(dot == std::string::npos ? path : path.substr(dot + 1),
                                  std::make_shared<torch::nn::Module>());
  submodules_[path] = m;
  return m;
}

LoraLinear LlamaDecoderImpl::AddLinear(const LinearSpec& spec, bool bias) {
  const size_t dot = spec.path.rfind('.');
  LoraLinear l(spec.in, spec.out, static_cast<int>(linears_.size()), bias);
  Submodule(spec.path.substr(0, dot))->register_module(spec.path.substr(dot + 1), l);
  linears_.push_back(l);
  linear_names_.push_back(spec.path);
  return l;
}

LoraLinear LlamaDecoderImpl::AddLinearView(const LinearSpec& spec, torch::Tensor weight,
                                           torch::Tensor bias) {
  const size_t dot = spec.path.rfind('.');
  LoraLinear l(std::move(weight), std::move(bias), static_cast<int>(linears_.size()));
  Submodule(spec.path.substr(0, dot))->register_module(spec.path.substr(dot + 1), l);
  linears_.push_back(l);
  linear_names_.push_back(spec.path);
  return l;
}

torch::Tensor LlamaDecoderImpl::AddNorm(const std::string& path, int64_t size) {
  return Submodule(path)->register_parameter("weight", torch::ones({size}));
}

LlamaDecoderImpl::LlamaDecoderImpl(const ModelConfig& c) : config_(c) {
  const EncoderLayout& layout = LayoutFor(c.architecture());
  embed_tokens_ = register_module("embed_tokens", torch::nn::Embedding(torch::nn::EmbeddingOptions(
                                                      c.vocab_size, c.hidden_size)));
  const std::vector<LinearSpec> linears = AdaptableLinears(c);
  const bool qwen3 = c.architecture() == Architecture::kQwen3;
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
    const std::string p = layout.layer_prefix + std::to_string(i) + ".";
    const LinearSpec* s = &linears[static_cast<size_t>(i) * 7];
    Layer l;
    l.input_norm = AddNorm(p + layout.attn_norm, c.hidden_size);
    const int64_t qn = s[0].out, kvn = s[1].out, in = c.intermediate_size;
    l.qkv_weight = torch::zeros({qn + 2 * kvn, c.hidden_size});
    if (c.qkv_bias()) l.qkv_bias = torch::zeros({qn + 2 * kvn});
    auto rows = [](const torch::Tensor& t, int64_t begin, int64_t n) {
      return t.defined() ? t.narrow(0, begin, n) : torch::Tensor();
    };
    l.q = AddLinearView(s[0], rows(l.qkv_weight, 0, qn), rows(l.qkv_bias, 0, qn));
    l.k = AddLinearView(s[1], rows(l.qkv_weight, qn, kvn), rows(l.qkv_bias, qn, kvn));
    l.v = AddLinearView(s[2], rows(l.qkv_weight, qn + kvn, kvn), rows(l.qkv_bias, qn + kvn, kvn));
    l.o = AddLinear(s[3], c.o_bias());
    if (qwen3) {
      l.q_norm = AddNorm(p + "self_attn.q_norm", c.head_dim);
      l.k_norm = AddNorm(p + "self_attn.k_norm", c.head_dim);
    }
    l.post_norm = AddNorm(p + layout.out_norm, c.hidden_size);
    l.gate_up_weight = torch::zeros({2 * in, c.hidden_size});
    if (c.mlp_bias) l.gate_up_bias = torch::zeros({2 * in});
    l.gate = AddLinearView(s[4], rows(l.gate_up_weight, 0, in), rows(l.gate_up_bias, 0, in));
    l.up = AddLinearView(s[5], rows(l.gate_up_weight, in, in), rows(l.gate_up_bias, in, in));
    l.down = AddLinear(s[6], c.mlp_bias);
    layers_.push_back(l);
  }
  norm_ = AddNorm("norm", c.hidden_size);
  const std::vector<double> inv = RopeInverseFrequencies(c);
  inv_freq_ = torch::tensor(inv, torch::kFloat64);
}

void LlamaDecoderImpl::To(const Placement& placement) {
  torch::NoGradGuard no_grad;
  torch::nn::Module::to(placement.device, placement.dtype);
  batched_attention_ = !placement.on_cpu();
  // Module::to moved the registered parameters; the views kept in layers_ follow them.
  auto params = named_parameters(/*recurse=*/true);
  const EncoderLayout& layout = LayoutFor(config_.architecture());
  for (size_t i = 0; i < layers_.size(); ++i) {
    Layer& l = layers_[i];
    const std::string p = layout.layer_prefix + std::to_string(i) + ".";
    l.input_norm = params[p + layout.attn_norm + ".weight"];
    l.post_norm = params[p + layout.out_norm + ".weight"];
    if (l.q_norm.defined()) {
      l.q_norm = params[p + "self_attn.q_norm.weight"];
      l.k_norm = params[p + "self_attn.k_norm.weight"];
    }
  }
  norm_ = params["norm.weight"];
  Fuse();
}

void LlamaDecoderImpl::Fuse() {
  torch::NoGradGuard no_grad;
  auto fuse = [](std::initializer_list<LoraLinearImpl*> parts, torch::Tensor* weight,
                 torch::Tensor* bias) {
    std::vector<torch::Tensor> w, b;
    for (LoraLinearImpl* p : parts) {
      w.push_back(p->weight);
      if (p->bias.defined()) b.push_back(p->bias);
    }
    *weight = torch::cat(w, 0);
    if (!b.empty()) *bias = torch::cat(b, 0);
    int64_t begin = 0;
    for (LoraLinearImpl* p : parts) {
      const int64_t n = p->weight.size(0);
      p->weight.set_data(weight->narrow(0, begin, n));
      if (p->bias.defined()) p->bias.set_data(bias->narrow(0, begin, n));
      begin += n;
    }
  };
  for (Layer& l : layers_) {
    fuse({l.q.get(), l.k.get(), l.v.get()}, &l.qkv_weight, &l.qkv_bias);
    fuse({l.gate.get(), l.up.get()}, &l.gate_up_weight, &l.gate_up_bias);
  }
}

absl::Status LlamaDecoderImpl::QuantizeInt8() {
  for (Layer& l : layers_) {
    for (auto [weight, bias, out] :
         {std::tuple{&l.qkv_weight, &l.qkv_bias, &l.qkv_int8},
          std::tuple{&l.gate_up_weight, &l.gate_up_bias, &l.gate_up_int8},
          std::tuple{&l.o->weight, &l.o->bias, &l.o->int8},
          std::tuple{&l.down->weight, &l.down->bias, &l.down->int8}}) {
      absl::StatusOr<std::shared_ptr<const Int8Linear>> q = PackInt8(*weight, *bias);
      if (!q.ok()) return q.status();
      *out = *std::move(q);
    }
  }
  return absl::OkStatus();
}

int LlamaDecoderImpl::LinearIndex(const std::string& module_path) const {
  for (size_t i = 0; i < linear_names_.size(); ++i) {
    if (linear_names_[i] == module_path) return static_cast<int>(i);
  }
  return -1;
}

torch::Tensor LlamaDecoderImpl::RmsNorm(const torch::Tensor& x, const torch::Tensor& weight) const {
  // In float32 whatever the activations' type, as transformers' LlamaRMSNorm.
  const torch::Tensor f = x.to(torch::kFloat32);
  const torch::Tensor normed =
      f * torch::rsqrt(f.pow(2).mean(-1, /*keepdim=*/true) + config_.rms_norm_eps);
  return weight * normed.to(x.scalar_type());
}

std::pair<torch::Tensor, torch::Tensor> LlamaDecoderImpl::Rotary(
    int64_t seq, const torch::TensorOptions& options) const {
  const torch::Tensor positions = torch::arange(seq, torch::kFloat64).unsqueeze(1);
  const torch::Tensor angles = positions * inv_freq_.unsqueeze(0);  // [seq, d/2], float64
  const torch::Tensor emb = torch::cat({angles, angles}, -1);
  return {emb.cos().to(options), emb.sin().to(options)};
}

torch::Tensor LlamaDecoderImpl::Attention(const torch::Tensor& q, const torch::Tensor& k,
                                          const torch::Tensor& v,
                                          const std::vector<int64_t>& lengths,
                                          const torch::Tensor& dropkey) const {
  const int64_t rows = q.size(0), seq = q.size(1);
  const int64_t heads = config_.num_attention_heads, kv = config_.num_key_value_heads;
  const int64_t group = heads / kv, d = config_.head_dim;
  const double scale = 1.0 / std::sqrt(static_cast<double>(d));
  const double lowest = LowestFinite(q.scalar_type());
  // One causal (and sliding-window) mask for every row: 0 where key j is visible to query i.
  auto visible = [&](int64_t n) {
    torch::Tensor i = torch::arange(n, torch::kInt64).unsqueeze(1);
    torch::Tensor j = torch::arange(n, torch::kInt64).unsqueeze(0);
    torch::Tensor ok = j <= i;
    if (config_.sliding_window > 0) ok = ok & (i - j < config_.sliding_window);
    return torch::zeros({n, n}, q.options()).masked_fill_(ok.logical_not().to(q.device()), lowest);
  };
  // Query head kv * group + g reads K/V head kv: q as [kv, group * n, d] against k [kv, n, d].
  auto attend = [&](const torch::Tensor& qr, const torch::Tensor& kr, const torch::Tensor& vr,
                    const torch::Tensor& mask, const torch::Tensor& drop) {
    const int64_t n = qr.size(-3), b = qr.size(0);
    torch::Tensor qg =
        qr.view({b, n, kv, group, d}).permute({0, 2, 3, 1, 4}).reshape({b, kv, group * n, d});
    torch::Tensor kt = kr.permute({0, 2, 3, 1});  // [b, kv, d, n]
    torch::Tensor scores = torch::matmul(qg, kt).mul_(scale).view({b, kv, group, n, n});
    scores = scores + mask;
    if (drop.defined()) {
      scores = torch::clamp_min(scores + drop.reshape({b, kv, group, 1, n}), lowest);
    }
    torch::Tensor probs = torch::softmax(scores, -1).view({b, kv, group * n, n});
    torch::Tensor ctx = torch::matmul(probs, vr.permute({0, 2, 1, 3}));  // [b, kv, group*n, d]
    return ctx.view({b, kv, group, n, d}).permute({0, 3, 1, 2, 4}).reshape({b, n, heads * d});
  };
  if (batched_attention_) {
    return attend(q, k, v, visible(seq), dropkey);
  }
  std::vector<torch::Tensor> out;
  out.reserve(static_cast<size_t>(rows));
  std::map<int64_t, torch::Tensor> masks;
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t n = lengths[static_cast<size_t>(r)];
    torch::Tensor& mask = masks[n];
    if (!mask.defined()) mask = visible(n);
    torch::Tensor ctx =
        attend(q.narrow(0, r, 1).narrow(1, 0, n), k.narrow(0, r, 1).narrow(1, 0, n),
               v.narrow(0, r, 1).narrow(1, 0, n), mask,
               dropkey.defined() ? dropkey.narrow(0, r, 1).narrow(-1, 0, n) : torch::Tensor());
    if (n < seq) ctx = torch::constant_pad_nd(ctx, {0, 0, 0, seq - n});
    out.push_back(ctx);
  }
  return torch::cat(out, 0);
}

torch::Tensor LlamaDecoderImpl::HiddenStates(const torch::Tensor& input_ids,
                                             const torch::Tensor& attention_mask,
                                             const torch::Tensor& token_type_ids,
                                             const LoraRouting* routing) {
  const torch::Tensor host_mask =
      attention_mask.device().is_cpu() ? attention_mask : attention_mask.to(torch::kCPU);
  const std::vector<int64_t> lengths = RowLengths(host_mask);
  const torch::Tensor ids =
      input_ids.device() == device() ? input_ids : input_ids.to(device(), torch::kInt64);
  torch::Tensor h = embed_tokens_(ids);
  const int64_t rows = h.size(0), seq = h.size(1);
  const int64_t heads = config_.num_attention_heads, kv = config_.num_key_value_heads;
  const int64_t d = config_.head_dim;
  const auto [cos_t, sin_t] = Rotary(seq, h.options());
  bool hiddenkey = false;
  if (routing != nullptr) {
    for (const LoraGroup& g : *routing) {
      hiddenkey |= g.dropout_on() && g.dropout->method == DropoutMethod::kHiddenKey;
    }
  }
  for (int64_t i = 0; i < static_cast<int64_t>(layers_.size()); ++i) {
    Layer& l = layers_[static_cast<size_t>(i)];
    HiddenKeyMasks hk;
    if (hiddenkey) {
      // Key 0 is every query's under the causal mask: never dropped, so no query loses all.
      hk = DrawHiddenKeyMasks(*routing, rows, seq, heads, config_.intermediate_size, i, h.options(),
                              [](int64_t, torch::Tensor& keep) { keep.select(2, 0).fill_(1.0); });
    }
    torch::Tensor x = RmsNorm(h, l.input_norm);
    const int64_t qn = heads * d, kvn = kv * d;
    torch::Tensor qkv = FusedLinear(x, l.qkv_weight, l.qkv_bias, l.qkv_int8.get());
    l.q->AddLora(x, qkv.narrow(2, 0, qn), routing);
    l.k->AddLora(x, qkv.narrow(2, qn, kvn), routing);
    l.v->AddLora(x, qkv.narrow(2, qn + kvn, kvn), routing);
    torch::Tensor q = qkv.narrow(2, 0, qn).view({rows, seq, heads, d});
    torch::Tensor k = qkv.narrow(2, qn, kvn).view({rows, seq, kv, d});
    torch::Tensor v = qkv.narrow(2, qn + kvn, kvn).view({rows, seq, kv, d});
    if (l.q_norm.defined()) {
      q = RmsNorm(q, l.q_norm);
      k = RmsNorm(k, l.k_norm);
    }
    q = Rotate(q, cos_t, sin_t);
    k = Rotate(k, cos_t, sin_t);
    h = h + l.o(Attention(q, k, v, lengths, hk.dropkey), routing);
    x = RmsNorm(h, l.post_norm);
    const int64_t in = config_.intermediate_size;
    torch::Tensor gate_up = FusedLinear(x, l.gate_up_weight, l.gate_up_bias, l.gate_up_int8.get());
    l.gate->AddLora(x, gate_up.narrow(2, 0, in), routing);
    l.up->AddLora(x, gate_up.narrow(2, in, in), routing);
    torch::Tensor inner = torch::silu(gate_up.narrow(2, 0, in)) * gate_up.narrow(2, in, in);
    if (hk.hiddencut.defined()) inner = inner * hk.hiddencut;
    h = h + l.down(inner, routing);
  }
  return RmsNorm(h, norm_);
}

torch::Tensor LlamaDecoderImpl::forward(const torch::Tensor& input_ids,
                                        const torch::Tensor& attention_mask,
                                        const torch::Tensor& token_type_ids,
                                        const LoraRouting* routing) {
  torch::Tensor h = HiddenStates(input_ids, attention_mask, token_type_ids, routing);
  const torch::Tensor host_mask =
      attention_mask.device().is_cpu() ? attention_mask : attention_mask.to(torch::kCPU);
  std::vector<int64_t> last;
  for (int64_t n : RowLengths(host_mask)) last.push_back(n - 1);
  const torch::Tensor index = torch::tensor(last, torch::kInt64).to(h.device());
  return h.index({torch::arange(h.size(0), index.options()), index});
}

std::vector<std::pair<std::string, torch::Tensor>> LlamaDecoderImpl::Unfreeze() {
  // The fused storages stand for their views (as the encoder's QKV): updates to them are what
  // forward reads.
  std::vector<std::pair<std::string, torch::Tensor>> out;
  std::set<const void*> fused;
  const EncoderLayout& layout = LayoutFor(config_.architecture());
  for (size_t i = 0; i < layers_.size(); ++i) {
    Layer& l = layers_[i];
    const std::string p = absl::StrCat(layout.layer_prefix, i, ".");
    out.emplace_back(p + "self_attn.qkv.weight", l.qkv_weight);
    if (l.qkv_bias.defined()) out.emplace_back(p + "self_attn.qkv.bias", l.qkv_bias);
    out.emplace_back(p + "mlp.gate_up.weight", l.gate_up_weight);
    if (l.gate_up_bias.defined()) out.emplace_back(p + "mlp.gate_up.bias", l.gate_up_bias);
    for (const LoraLinear& part : {l.q, l.k, l.v, l.gate, l.up}) {
      fused.insert(part->weight.unsafeGetTensorImpl());
      if (part->bias.defined()) fused.insert(part->bias.unsafeGetTensorImpl());
    }
  }
  for (auto& item : named_parameters(/*recurse=*/true)) {
    if (fused.count(item.value().unsafeGetTensorImpl()) > 0) continue;
    out.emplace_back(item.key(), item.value());
  }
  for (auto& [name, t] : out) t.set_requires_grad(true);
  return out;
}

Backbone MakeLlamaDecoder(const ModelConfig& config) {
  return Backbone(std::shared_ptr<BackboneImpl>(std::make_shared<LlamaDecoderImpl>(config)));
}

}  // namespace loracle::model
