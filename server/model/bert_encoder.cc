#include "server/model/bert_encoder.h"

#include <algorithm>
#include <cmath>
#include <exception>
#include <limits>
#include <memory>
#include <set>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "server/model/hidden_key.h"

namespace loracle::model {
namespace {

// LayerNorm(x + residual). Under bfloat16 autocast (pretraining's --bf16) the products come out
// in bfloat16 while the residual stream and LayerNorm's weights stay float32: the sum is then
// taken in float32. Otherwise it is formed in place in `x`.
torch::Tensor AddNorm(torch::nn::LayerNorm& norm, torch::Tensor x, const torch::Tensor& residual) {
  if (x.scalar_type() == residual.scalar_type()) return norm->forward(x.add_(residual));
  return norm->forward((x + residual).to(norm->weight.scalar_type()));
}

// Per row: the number of keys it attends when its mask is 1s then 0s (right padding), else -1.
// `attention_mask` is on the host.
std::vector<int64_t> PrefixLengths(const torch::Tensor& attention_mask) {
  const torch::Tensor m = attention_mask.to(torch::kInt64).contiguous();
  const int64_t rows = m.size(0), seq = m.size(1);
  const int64_t* data = m.data_ptr<int64_t>();
  std::vector<int64_t> out(static_cast<size_t>(rows));
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t* row = data + r * seq;
    int64_t len = 0;
    while (len < seq && row[len] != 0) ++len;
    bool prefix = len > 0;
    for (int64_t j = len; j < seq && prefix; ++j) prefix = row[j] == 0;
    out[static_cast<size_t>(r)] = prefix ? len : -1;
  }
  return out;
}

}  // namespace

std::shared_ptr<torch::nn::Module> BertEncoderImpl::Submodule(const std::string& path) {
  if (auto it = submodules_.find(path); it != submodules_.end()) return it->second;
  const size_t dot = path.rfind('.');
  torch::nn::Module& parent = dot == std::string::npos ? static_cast<torch::nn::Module&>(*this)
                                                       : *Submodule(path.substr(0, dot));
  auto m = parent.register_module(dot == std::string::npos ? path : path.substr(dot + 1),
                                  std::make_shared<torch::nn::Module>());
  submodules_[path] = m;
  return m;
}

LoraLinear BertEncoderImpl::AddLinear(const LinearSpec& spec, torch::Tensor weight,
                                      torch::Tensor bias) {
  const size_t dot = spec.path.rfind('.');
  const int index = static_cast<int>(linears_.size());
  LoraLinear l = weight.defined() ? LoraLinear(std::move(weight), std::move(bias), index)
                                  : LoraLinear(spec.in, spec.out, index);
  Submodule(spec.path.substr(0, dot))->register_module(spec.path.substr(dot + 1), l);
  linears_.push_back(l);
  linear_names_.push_back(spec.path);
  return l;
}

torch::nn::LayerNorm BertEncoderImpl::AddLayerNorm(const std::string& path) {
  const size_t dot = path.rfind('.');
  return Submodule(path.substr(0, dot))
      ->register_module(
          path.substr(dot + 1),
          torch::nn::LayerNorm(
              torch::nn::LayerNormOptions({config_.hidden_size}).eps(config_.layer_norm_eps)));
}

BertEncoderImpl::BertEncoderImpl(const ModelConfig& c) : config_(c) {
  using torch::nn::Embedding;
  using torch::nn::EmbeddingOptions;
  const EncoderLayout& layout = LayoutFor(c.architecture());
  const int64_t h = c.hidden_size;
  auto embeddings = Submodule("embeddings");
  word_embeddings_ =
      embeddings->register_module("word_embeddings", Embedding(EmbeddingOptions(c.vocab_size, h)));
  position_embeddings_ = embeddings->register_module(
      "position_embeddings", Embedding(EmbeddingOptions(c.max_position_embeddings, h)));
  if (c.type_vocab_size > 0) {
    token_type_embeddings_ = embeddings->register_module(
        "token_type_embeddings", Embedding(EmbeddingOptions(c.type_vocab_size, h)));
  }
  embeddings_norm_ = AddLayerNorm("embeddings.LayerNorm");

  const std::vector<LinearSpec> linears = AdaptableLinears(c);
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
    const std::string p = layout.layer_prefix + std::to_string(i) + ".";
    const LinearSpec* s = &linears[static_cast<size_t>(i) * 6];
    Layer l;
    // query, key and value are row blocks of one [3h, h] weight (one GEMM per layer); each is
    // still its own module and parameter under its checkpoint name.
    l.qkv_weight = torch::zeros({3 * h, h});
    l.qkv_bias = torch::zeros({3 * h});
    l.query = AddLinear(s[0], l.qkv_weight.narrow(0, 0, h), l.qkv_bias.narrow(0, 0, h));
    l.key = AddLinear(s[1], l.qkv_weight.narrow(0, h, h), l.qkv_bias.narrow(0, h, h));
    l.value = AddLinear(s[2], l.qkv_weight.narrow(0, 2 * h, h), l.qkv_bias.narrow(0, 2 * h, h));
    l.attn_out = AddLinear(s[3]);
    l.attn_norm = AddLayerNorm(p + layout.attn_norm);
    l.intermediate = AddLinear(s[4]);
    l.output = AddLinear(s[5]);
    l.out_norm = AddLayerNorm(p + layout.out_norm);
    layers_.push_back(l);
  }
  if (layout.has_pooler) pooler_ = AddLinear(linears.back());
}

void BertEncoderImpl::To(const Placement& placement) {
  torch::NoGradGuard no_grad;
  torch::nn::Module::to(placement.device, placement.dtype);
  batched_attention_ = !placement.on_cpu();
  // Module::to gave query, key and value separate storage: fuse them again.
  const int64_t h = config_.hidden_size;
  for (Layer& l : layers_) {
    l.qkv_weight = torch::cat({l.query->weight, l.key->weight, l.value->weight}, 0);
    l.qkv_bias = torch::cat({l.query->bias, l.key->bias, l.value->bias}, 0);
    LoraLinearImpl* parts[] = {l.query.get(), l.key.get(), l.value.get()};
    for (int64_t i = 0; i < 3; ++i) {
      parts[i]->weight.set_data(l.qkv_weight.narrow(0, i * h, h));
      parts[i]->bias.set_data(l.qkv_bias.narrow(0, i * h, h));
    }
  }
}

absl::Status BertEncoderImpl::QuantizeInt8() {
  for (Layer& l : layers_) {
    absl::StatusOr<std::shared_ptr<const Int8Linear>> qkv = PackInt8(l.qkv_weight, l.qkv_bias);
    if (!qkv.ok()) return qkv.status();
    l.qkv_int8 = *std::move(qkv);
    for (LoraLinear* part : {&l.attn_out, &l.intermediate, &l.output}) {
      absl::StatusOr<std::shared_ptr<const Int8Linear>> q =
          PackInt8((*part)->weight, (*part)->bias);
      if (!q.ok()) return q.status();
      (*part)->int8 = *std::move(q);
    }
  }
  // The pooler reads one token per row: too little work to pay for its rounding.
  return absl::OkStatus();
}

int BertEncoderImpl::LinearIndex(const std::string& module_path) const {
  for (size_t i = 0; i < linear_names_.size(); ++i) {
    if (linear_names_[i] == module_path) return static_cast<int>(i);
  }
  return -1;
}

torch::Tensor BertEncoderImpl::Activation(const torch::Tensor& x) const {
  if (config_.hidden_act == "relu") return torch::relu(x);
  if (config_.hidden_act == "gelu_new") return torch::gelu(x, "tanh");
  return torch::gelu(x);  // exact (erf) GELU, transformers' "gelu"
}

torch::Tensor BertEncoderImpl::Embed(const torch::Tensor& input_ids,
                                     const torch::Tensor& token_type_ids) {
  torch::Tensor positions;
  if (config_.position_offset() > 0) {
    // RoBERTa: real tokens count up from pad_token_id + 1, padding keeps pad_token_id.
    torch::Tensor real = input_ids.ne(config_.pad_token_id).to(torch::kInt64);
    positions = torch::cumsum(real, 1) * real + config_.pad_token_id;
  } else {
    positions = torch::arange(input_ids.size(1), input_ids.options()).unsqueeze(0);
  }
  torch::Tensor h = word_embeddings_(input_ids) + position_embeddings_(positions);
  if (!token_type_embeddings_.is_empty()) {
    // RoBERTa's inputs carry no token types (not in its model_input_names): type 0 throughout.
    h = h + (config_.architecture() == Architecture::kRoberta
                 ? token_type_embeddings_->weight[0]
                 : token_type_embeddings_(token_type_ids));
  }
  return embeddings_norm_(h);
}

BertEncoderImpl::AttentionMask BertEncoderImpl::MakeAttentionMask(
    const torch::Tensor& attention_mask, const torch::Tensor& host_mask,
    torch::ScalarType dtype) const {
  AttentionMask m;
  m.mask = attention_mask;
  m.host_mask = host_mask;
  m.key_lengths = PrefixLengths(host_mask);
  if (std::any_of(m.key_lengths.begin(), m.key_lengths.end(), [](int64_t l) { return l <= 0; })) {
    const int64_t rows = attention_mask.size(0), seq = attention_mask.size(1);
    m.additive = ((1.0 - attention_mask.to(dtype)) * LowestFinite(dtype)).view({rows, 1, 1, seq});
  }
  return m;
}

torch::Tensor BertEncoderImpl::SelfAttention(const torch::Tensor& qkv, const AttentionMask& mask,
                                             const torch::Tensor& dropkey) const {
  const int64_t rows = qkv.size(0), seq = qkv.size(1);
  const int64_t hidden = config_.hidden_size, heads = config_.num_attention_heads;
  const int64_t head_dim = hidden / heads;
  const double scale = 1.0 / std::sqrt(static_cast<double>(head_dim));
  if (batched_attention_) {
    // [rows, heads, seq, head_dim] views of the fused output; padding masked additively.
    torch::Tensor x = qkv.view({rows, seq, 3, heads, head_dim});
    torch::Tensor q = x.select(2, 0).transpose(1, 2);
    torch::Tensor k = x.select(2, 1).transpose(1, 2);
    torch::Tensor v = x.select(2, 2).transpose(1, 2);
    torch::Tensor scores = torch::matmul(q, k.transpose(-1, -2)).mul_(scale);
    const double lowest = LowestFinite(scores.scalar_type());
    torch::Tensor additive =
        mask.additive.defined()
            ? mask.additive
            : ((1.0 - mask.mask.to(scores.scalar_type())) * lowest).view({rows, 1, 1, seq});
    scores = scores + additive;
    if (dropkey.defined()) scores = torch::clamp_min(scores + dropkey, lowest);
    return torch::matmul(torch::softmax(scores, -1), v)
        .transpose(1, 2)
        .reshape({rows, seq, hidden});
  }
  // Under autograd (training) contexts are stacked; inference writes them in place.
  const bool grad = torch::GradMode::is_enabled();
  torch::Tensor context = grad ? torch::Tensor() : torch::empty({rows, seq, hidden}, qkv.options());
  std::vector<torch::Tensor> contexts;
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t prefix = mask.key_lengths[static_cast<size_t>(r)];
    const int64_t keys = prefix > 0 ? prefix : seq;
    // [heads, seq or keys, head_dim] views with row stride 3 * hidden.
    torch::Tensor x = qkv[r].view({seq, 3, heads, head_dim});
    torch::Tensor q = x.select(1, 0).transpose(0, 1);
    torch::Tensor k = x.select(1, 1).narrow(0, 0, keys).transpose(0, 1);
    torch::Tensor v = x.select(1, 2).narrow(0, 0, keys).transpose(0, 1);
    torch::Tensor scores = torch::bmm(q, k.transpose(1, 2)).mul_(scale);  // [heads, seq, keys]
    if (prefix <= 0) scores.add_(mask.additive[r]);
    if (dropkey.defined()) {
      // Padding and DropKey may both add `lowest`; clamp so the sum stays finite.
      scores = torch::clamp_min(scores + dropkey[r].narrow(-1, 0, keys),
                                LowestFinite(scores.scalar_type()));
    }
    torch::Tensor probs = torch::softmax(scores, -1);
    if (grad) {
      contexts.push_back(torch::bmm(probs, v));
    } else {
      torch::Tensor out = context[r].view({seq, heads, head_dim}).transpose(0, 1);
      torch::bmm_out(out, probs, v);
    }
  }
  if (grad) context = torch::stack(contexts).transpose(1, 2).reshape({rows, seq, hidden});
  return context;
}

torch::Tensor BertEncoderImpl::LayerForward(int64_t index, const torch::Tensor& h,
                                            const AttentionMask& mask, const LoraRouting* routing,
                                            bool hiddenkey) {
  Layer& l = layers_[static_cast<size_t>(index)];
  const int64_t hidden = config_.hidden_size;
  // [rows, seq, 3 * hidden]
  torch::Tensor qkv = FusedLinear(h, l.qkv_weight, l.qkv_bias, l.qkv_int8.get());
  l.query->AddLora(h, qkv.narrow(2, 0, hidden), routing);
  l.key->AddLora(h, qkv.narrow(2, hidden, hidden), routing);
  l.value->AddLora(h, qkv.narrow(2, 2 * hidden, hidden), routing);
  HiddenKeyMasks hk;
  if (hiddenkey) {
    // Never drop every attended key of a row: [CLS] (position 0) stays when all would go.
    auto protect = [&mask](int64_t r, torch::Tensor& keep) {
      const int64_t seq = keep.size(-1);
      torch::Tensor valid = mask.host_mask[r].to(keep.scalar_type()).view({1, 1, seq});
      torch::Tensor none_left = (keep * valid).sum(-1, /*keepdim=*/true) == 0;
      keep.select(2, 0).masked_fill_(none_left.squeeze(-1), 1.0);
    };
    hk = DrawHiddenKeyMasks(*routing, mask.mask.size(0), mask.mask.size(1),
                            config_.num_attention_heads, config_.intermediate_size, index,
                            h.options(), protect);
  }
  torch::Tensor a = l.attn_out(SelfAttention(qkv, mask, hk.dropkey), routing);
  a = AddNorm(l.attn_norm, a, h);
  torch::Tensor inter = Activation(l.intermediate(a, routing));
  if (hk.hiddencut.defined()) inter = inter * hk.hiddencut;
  return AddNorm(l.out_norm, l.output(inter, routing), a);
}

torch::Tensor BertEncoderImpl::HiddenStates(const torch::Tensor& input_ids,
                                            const torch::Tensor& attention_mask,
                                            const torch::Tensor& token_type_ids,
                                            const LoraRouting* routing) {
  const torch::Device device = this->device();
  const torch::Tensor host_mask =
      attention_mask.device().is_cpu() ? attention_mask : attention_mask.to(torch::kCPU);
  torch::Tensor ids = input_ids, mask_on_device = attention_mask, types = token_type_ids;
  if (input_ids.device() != device) {
    // The batch's one host-to-device copy: ids, mask and token types stacked.
    const std::vector<torch::Tensor> parts =
        torch::stack({input_ids.to(torch::kInt64), attention_mask.to(torch::kInt64),
                      token_type_ids.to(torch::kInt64)})
            .to(device, /*non_blocking=*/false)
            .unbind(0);
    ids = parts[0];
    mask_on_device = parts[1];
    types = parts[2];
  }
  torch::Tensor h = Embed(ids, types);
  // Attention runs row by row on strided views of the fused QKV output, so heads are never
  // split or merged by copies. A right-padded row attends only its first `len` keys, which equals
  // transformers' additive mask (exp(lowest - max) is 0) without masking work; other masks are
  // added as transformers does: 0 where attended, the dtype's lowest value where not.
  const AttentionMask mask = MakeAttentionMask(mask_on_device, host_mask, h.scalar_type());
  bool hiddenkey = false;
  if (routing != nullptr) {
    for (const LoraGroup& g : *routing) {
      hiddenkey |= g.dropout_on() && g.dropout->method == DropoutMethod::kHiddenKey;
    }
  }
  for (int64_t i = 0; i < static_cast<int64_t>(layers_.size()); ++i) {
    h = LayerForward(i, h, mask, routing, hiddenkey);
  }
  return h;
}

torch::Tensor BertEncoderImpl::forward(const torch::Tensor& input_ids,
                                       const torch::Tensor& attention_mask,
                                       const torch::Tensor& token_type_ids,
                                       const LoraRouting* routing) {
  torch::Tensor cls = HiddenStates(input_ids, attention_mask, token_type_ids, routing).select(1, 0);
  if (pooler_.is_empty()) return cls;
  return torch::tanh(pooler_(cls, routing));
}

std::vector<std::pair<std::string, torch::Tensor>> BertEncoderImpl::Unfreeze() {
  std::vector<std::pair<std::string, torch::Tensor>> out;
  std::set<const void*> fused;  // the query/key/value views' storage, listed once per layer
  const EncoderLayout& layout = LayoutFor(config_.architecture());
  for (size_t i = 0; i < layers_.size(); ++i) {
    Layer& l = layers_[i];
    const std::string p = absl::StrCat(layout.layer_prefix, i, ".attention.self.qkv.");
    out.emplace_back(p + "weight", l.qkv_weight);
    out.emplace_back(p + "bias", l.qkv_bias);
    for (const LoraLinear& part : {l.query, l.key, l.value}) {
      fused.insert(part->weight.unsafeGetTensorImpl());
      fused.insert(part->bias.unsafeGetTensorImpl());
    }
  }
  const std::string pooler = pooler_.is_empty() ? "" : linear_names_.back() + ".";
  for (auto& item : named_parameters(/*recurse=*/true)) {
    if (fused.count(item.value().unsafeGetTensorImpl()) > 0) continue;
    if (!pooler.empty() && absl::StartsWith(item.key(), pooler)) continue;
    out.emplace_back(item.key(), item.value());
  }
  for (auto& [name, t] : out) t.set_requires_grad(true);
  return out;
}

Backbone MakeBertEncoder(const ModelConfig& config) {
  return Backbone(std::shared_ptr<BackboneImpl>(std::make_shared<BertEncoderImpl>(config)));
}

}  // namespace loracle::model
