// Decoder bases (llama, mistral, qwen2, qwen3) over real gRPC against a float64 reference written
// here from the published equations (not from the server's code): RMSNorm, rotary embeddings
// (with Llama 3's frequency scaling), grouped-query attention, causal masking and Mistral's
// sliding window, Qwen2's q/k/v biases and Qwen3's per-head q/k norms, SwiGLU, and the `score`
// head on the last real token. Each case serves the checkpoint's own head and a LoRA adapter on
// every linear layer, in one mixed-length batch whose longest row is longer than the window.

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <map>
#include <string>
#include <vector>

#include "loracle/v1/adapters.grpc.pb.h"
#include "loracle/v1/inference.grpc.pb.h"
#include "loracle/v1/training.grpc.pb.h"
#include "server/adapters/adapter_config.h"
#include "server/adapters/adapter_files.h"
#include "server/model/checkpoint.h"
#include "server/model/lora.h"
#include "server/model/model_config.h"
#include "server/model/safetensors.h"
#include "server/text/tokenizer_files.h"
#include "server/util/file_util.h"
#include "tests/support/fixture_checkpoint.h"
#include "tests/support/test_server.h"
#include "tests/support/test_util.h"

namespace loracle {
namespace {

using torch::Tensor;

struct Case {
  std::string name;
  model::ModelConfig config;
};
void PrintTo(const Case& c, std::ostream* os) { *os << c.name; }

// Every tensor of a safetensors file as float64.
std::map<std::string, Tensor> ReadAll(const std::string& path) {
  std::map<std::string, Tensor> out;
  auto f = model::SafetensorsFile::Open(path);
  EXPECT_TRUE(f.ok()) << f.status();
  if (!f.ok()) return out;
  for (const std::string& name : (*f)->names()) {
    const model::TensorView v = *(*f)->Get(name);
    EXPECT_EQ(v.dtype, model::DType::kF32) << name;
    Tensor t = torch::empty(v.shape, torch::kFloat32);
    std::memcpy(t.data_ptr(), v.data, v.nbytes);
    out[name] = t.to(torch::kFloat64);
  }
  return out;
}

// The reference: logits of `score` at the last token of `ids` (one unpadded sequence).
class Reference {
 public:
  Reference(const model::ModelConfig& c, std::map<std::string, Tensor> w)
      : c_(c), w_(std::move(w)) {}
  // LoRA deltas by module path ("model.layers.0.self_attn.q_proj"): W += scaling * B A.
  void AddLora(const std::string& module, const Tensor& a, const Tensor& b, double scaling) {
    Tensor& weight = w_.at(module + ".weight");
    weight = weight + scaling * torch::matmul(b, a);
  }
  void SetHead(const Tensor& score) { w_["score.weight"] = score; }
  // Every LoRA pair of a PEFT adapter_model.safetensors at `scaling`; returns the pairs added.
  int AddPeftFile(const std::map<std::string, Tensor>& peft, double scaling) {
    const std::string prefix = "base_model.model.", suffix = ".lora_A.weight";
    int pairs = 0;
    for (const auto& [key, a] : peft) {
      if (key.size() <= prefix.size() + suffix.size() ||
          key.compare(key.size() - suffix.size(), suffix.size(), suffix) != 0) {
        continue;
      }
      const std::string stem = key.substr(0, key.size() - suffix.size());
      AddLora(stem.substr(prefix.size()), a, peft.at(stem + ".lora_B.weight"), scaling);
      ++pairs;
    }
    return pairs;
  }

  Tensor Logits(const std::vector<int64_t>& ids) const {
    const int64_t n = static_cast<int64_t>(ids.size());
    const int64_t H = c_.num_attention_heads, KV = c_.num_key_value_heads, d = c_.head_dim;
    Tensor h = W("model.embed_tokens.weight").index_select(0, torch::tensor(ids));
    for (int64_t l = 0; l < c_.num_hidden_layers; ++l) {
      const std::string p = "model.layers." + std::to_string(l) + ".";
      Tensor x = Rms(h, W(p + "input_layernorm.weight"));
      Tensor q = Linear(x, p + "self_attn.q_proj").view({n, H, d});
      Tensor k = Linear(x, p + "self_attn.k_proj").view({n, KV, d});
      Tensor v = Linear(x, p + "self_attn.v_proj").view({n, KV, d});
      if (c_.model_type == "qwen3") {
        q = Rms(q, W(p + "self_attn.q_norm.weight"));
        k = Rms(k, W(p + "self_attn.k_norm.weight"));
      }
      q = Rope(q);
      k = Rope(k);
      Tensor ctx = torch::zeros({n, H, d}, torch::kFloat64);
      for (int64_t head = 0; head < H; ++head) {
        const int64_t g = head / (H / KV);  // the K/V head this query head shares
        for (int64_t i = 0; i < n; ++i) {
          std::vector<double> s;
          std::vector<int64_t> keys;
          for (int64_t j = 0; j <= i; ++j) {
            if (c_.sliding_window > 0 && i - j >= c_.sliding_window) continue;
            s.push_back((q[i][head] * k[j][g]).sum().item<double>() / std::sqrt(double(d)));
            keys.push_back(j);
          }
          const double m = *std::max_element(s.begin(), s.end());
          double z = 0;
          for (double& e : s) z += (e = std::exp(e - m));
          for (size_t t = 0; t < keys.size(); ++t) ctx[i][head] += s[t] / z * v[keys[t]][g];
        }
      }
      h = h + Linear(ctx.view({n, H * d}), p + "self_attn.o_proj");
      x = Rms(h, W(p + "post_attention_layernorm.weight"));
      Tensor gate = Linear(x, p + "mlp.gate_proj");
      h = h +
          Linear(gate * torch::sigmoid(gate) * Linear(x, p + "mlp.up_proj"), p + "mlp.down_proj");
    }
    h = Rms(h, W("model.norm.weight"));
    return torch::matmul(W("score.weight"), h[n - 1]);
  }

 private:
  const Tensor& W(const std::string& name) const {
    auto it = w_.find(name);
    if (it == w_.end()) ADD_FAILURE() << "no tensor " << name;
    return it->second;
  }
  Tensor Linear(const Tensor& x, const std::string& module) const {
    Tensor y = torch::matmul(x, W(module + ".weight").t());
    if (auto it = w_.find(module + ".bias"); it != w_.end()) y = y + it->second;
    return y;
  }
  Tensor Rms(const Tensor& x, const Tensor& g) const {
    return x / torch::sqrt(x.pow(2).mean(-1, true) + c_.rms_norm_eps) * g;
  }
  // Rotates pair (i, i + d/2) of every head at position p by p * f_i.
  Tensor Rope(const Tensor& x) const {
    const int64_t n = x.size(0), d = x.size(-1);
    Tensor out = x.clone();
    for (int64_t i = 0; i < d / 2; ++i) {
      double f = std::pow(c_.rope_theta, -2.0 * i / d);
      const model::RopeScaling& r = c_.rope_scaling;
      if (r.type == "linear") f /= r.factor;
      if (r.type == "llama3") {  // Llama 3.1's published scaling
        const double wavelen = 2 * M_PI / f, old = double(r.original_max_position_embeddings);
        if (wavelen > old / r.low_freq_factor) {
          f = f / r.factor;
        } else if (wavelen >= old / r.high_freq_factor) {
          const double s =
              (old / wavelen - r.low_freq_factor) / (r.high_freq_factor - r.low_freq_factor);
          f = (1 - s) * f / r.factor + s * f;
        }
      }
      for (int64_t p = 0; p < n; ++p) {
        const double cs = std::cos(p * f), sn = std::sin(p * f);
        Tensor a = x[p].select(-1, i), b = x[p].select(-1, i + d / 2);
        out[p].select(-1, i).copy_(a * cs - b * sn);
        out[p].select(-1, i + d / 2).copy_(b * cs + a * sn);
      }
    }
    return out;
  }
  model::ModelConfig c_;
  std::map<std::string, Tensor> w_;
};

// Predicts `texts` (token ids `ids`) with `adapter` over gRPC and expects every served probability
// within 1e-4 of the reference's, and each input's token count; the reference probabilities must
// differ across classes (else the comparison would be weak).
void ExpectServedMatchesReference(loracle::v1::Inference::Stub& inference,
                                  const std::string& adapter, const std::vector<std::string>& texts,
                                  const std::vector<std::vector<int64_t>>& ids,
                                  const Reference& ref) {
  loracle::v1::PredictRequest req;
  req.set_adapter(adapter);
  for (const std::string& t : texts) req.add_inputs(t);
  loracle::v1::PredictResponse resp;
  grpc::ClientContext ctx;
  const grpc::Status s = inference.Predict(&ctx, req, &resp);
  ASSERT_TRUE(s.ok()) << adapter << ": " << s.error_message();
  ASSERT_EQ(resp.predictions_size(), static_cast<int>(texts.size()));
  double spread = 0;
  for (size_t i = 0; i < texts.size(); ++i) {
    const Tensor p = torch::softmax(ref.Logits(ids[i]), 0);
    spread = std::max(spread, (p.max() - p.min()).item<double>());
    const loracle::v1::Prediction& got = resp.predictions(static_cast<int>(i));
    EXPECT_EQ(got.num_tokens(), ids[i].size());
    ASSERT_EQ(got.probs_size(), p.size(0));
    for (int c = 0; c < got.probs_size(); ++c) {
      EXPECT_NEAR(got.probs(c), p[c].item<double>(), 1e-4)
          << adapter << " text " << i << " class " << c;
    }
  }
  EXPECT_GT(spread, 0.05) << "the probabilities are not all alike (the check would be weak)";
}

class DecoderParityTest : public ::testing::TestWithParam<Case> {};

TEST_P(DecoderParityTest, MatchesTheFloat64ReferenceThroughGrpc) {
  const Case& k = GetParam();
  testing::TempDir dir;
  const std::string model_dir = dir / "model";
  testing::CheckpointLayout layout;
  layout.num_labels = 3;
  layout.weight_std = 0.3f;
  layout.bias_std = 0.2f;
  const model::ModelConfig config =
      testing::WriteFixtureModel(model_dir, k.config, "roberta", 64, layout, 11);

  adapters::RandomAdapterSpec spec;
  spec.serving.labels = {"a", "b", "c"};
  spec.lora.rank = 3;
  spec.lora.lora_alpha = 6;
  spec.lora.target_modules = {"q_proj",    "k_proj",  "v_proj",   "o_proj",
                              "gate_proj", "up_proj", "down_proj"};
  spec.lora_std = 0.3f;
  spec.seed = 4;

  auto server =
      testing::TestServer::Start({}, [&](adapters::Store& store, app::LoracleServer::Options& o) {
        o.model_dir = model_dir;
        o.base_head_adapter = "base";
        ASSERT_TRUE(store
                        .Publish("lora",
                                 [&](const std::string& d) {
                                   return adapters::WriteRandomAdapter(d, config, spec);
                                 })
                        .ok());
      });
  ASSERT_NE(server, nullptr);

  int max_length = 1 << 20;
  auto tokenizer = text::LoadTokenizer(model_dir, &max_length);
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  const std::vector<std::string> texts = {
      "Hi!", "The quick brown fox jumps over the lazy dog, twice: once at dawn and once at dusk.",
      "Short one."};
  std::vector<std::vector<int64_t>> ids;
  for (const std::string& t : texts) {
    auto e = (*tokenizer)->Encode(t, std::nullopt, max_length);
    ASSERT_TRUE(e.ok());
    ids.push_back(e->input_ids);
  }
  ASSERT_GT(ids[1].size(), 12u) << "longer than the sliding window";
  ASSERT_LT(ids[0].size(), 6u) << "a short row pads";

  std::map<std::string, Tensor> weights = ReadAll(model_dir + "/model.safetensors");
  Reference base_ref(config, weights);
  Reference lora_ref(config, weights);
  {
    std::map<std::string, Tensor> a =
        ReadAll(server->store().VersionDir("lora", 1) + "/adapter_model.safetensors");
    const int pairs = lora_ref.AddPeftFile(a, spec.lora.lora_alpha / spec.lora.rank);
    EXPECT_EQ(pairs, 7 * config.num_hidden_layers);
    lora_ref.SetHead(a.at("base_model.model.score.weight"));
    EXPECT_EQ(a.count("base_model.model.score.bias"), 0u) << "the score head has no bias";
  }

  auto inference = loracle::v1::Inference::NewStub(server->NewChannel());
  ExpectServedMatchesReference(*inference, "base", texts, ids, base_ref);
  ExpectServedMatchesReference(*inference, "lora", texts, ids, lora_ref);
}

model::ModelConfig Decoder(const std::string& type, int64_t heads, int64_t kv, int64_t head_dim) {
  model::ModelConfig c = testing::ConfigOfShape(type, 24, 2, heads, 40);
  c.num_key_value_heads = kv;
  c.head_dim = head_dim;
  c.rms_norm_eps = 1e-5;
  c.rope_theta = 500.0;
  return c;
}

std::vector<Case> Cases() {
  std::vector<Case> out;
  model::ModelConfig llama = Decoder("llama", 4, 2, 6);  // GQA: 2 query heads per K/V head
  llama.rope_scaling.type = "llama3";
  llama.rope_scaling.factor = 8;
  llama.rope_scaling.low_freq_factor = 1;
  llama.rope_scaling.high_freq_factor = 4;
  llama.rope_scaling.original_max_position_embeddings = 16;
  out.push_back({"llama", llama});
  model::ModelConfig linear = Decoder("llama", 2, 2, 12);
  linear.rope_scaling.type = "linear";
  linear.rope_scaling.factor = 2;
  linear.attention_bias = true;
  linear.mlp_bias = true;
  out.push_back({"llama_linear_rope_biases", linear});
  model::ModelConfig mistral = Decoder("mistral", 4, 1, 6);
  mistral.sliding_window = 5;
  out.push_back({"mistral_window", mistral});
  out.push_back({"qwen2", Decoder("qwen2", 4, 2, 6)});
  out.push_back({"qwen3", Decoder("qwen3", 4, 2, 8)});  // head_dim * heads != hidden
  return out;
}

// Fine-tuning through Training.Submit on a small random Llama: PEFT's default decoder targets
// (q_proj, v_proj; the server's own default is every linear layer) and the bias-less `score` head,
// learned to validation accuracy >= 0.95, published in PEFT's layout and served.
TEST(DecoderTrainingTest, FineTunesAndServesOnALlamaBase) {
  testing::TempDir dir;
  const std::string model_dir = dir / "model";
  testing::CheckpointLayout layout;
  layout.weight_std = 0.1f;
  model::ModelConfig c = Decoder("llama", 4, 2, 6);
  testing::WriteFixtureModel(model_dir, c, "roberta", 64, layout, 5);
  auto server = testing::TestServer::Start(
      {}, [&](adapters::Store&, app::LoracleServer::Options& o) { o.model_dir = model_dir; });
  ASSERT_NE(server, nullptr);
  auto channel = server->NewChannel();
  auto training = loracle::v1::Training::NewStub(channel);
  loracle::v1::SubmitRequest r;
  r.set_adapter("mail");
  for (const auto& [text, label] : testing::SpamHamTexts(120, 3)) {
    auto* e = r.add_examples();
    e->set_text(text);
    e->set_label(label == 1 ? "spam" : "ham");
  }
  r.mutable_lora()->add_target_modules("q_proj");  // PEFT's default for decoders
  r.mutable_lora()->add_target_modules("v_proj");
  r.set_ensemble_members(1);
  r.set_epochs(6);
  r.set_batch_size(8);
  r.set_learning_rate(1e-2f);
  r.set_seed(3);
  loracle::v1::Job job;
  {
    grpc::ClientContext ctx;
    ASSERT_TRUE(training->Submit(&ctx, r, &job).ok());
  }
  loracle::v1::Job done;
  {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(300));
    loracle::v1::GetJobRequest req;
    req.set_id(job.id());
    auto reader = training->Watch(&ctx, req);
    while (reader->Read(&done)) {
    }
    ASSERT_TRUE(reader->Finish().ok());
  }
  ASSERT_EQ(done.state(), loracle::v1::JOB_STATE_SUCCEEDED) << done.error();
  EXPECT_GE(done.report().ensemble().accuracy(), 0.95f);

  const std::string version = server->store().VersionDir("mail", done.published_version());
  const std::string member =
      testing::ReadFile(version + "/adapter_config.json").empty() ? version + "/member-0" : version;
  auto weights = model::SafetensorsFile::Open(member + "/adapter_model.safetensors");
  ASSERT_TRUE(weights.ok()) << weights.status();
  EXPECT_TRUE(
      (*weights)->Contains("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"));
  EXPECT_TRUE(
      (*weights)->Contains("base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight"));
  EXPECT_FALSE(
      (*weights)->Contains("base_model.model.model.layers.0.self_attn.k_proj.lora_A.weight"));
  EXPECT_TRUE((*weights)->Contains("base_model.model.score.weight"));
  EXPECT_FALSE((*weights)->Contains("base_model.model.score.bias"));
  auto peft = adapters::ParsePeftConfig(testing::ReadFile(member + "/adapter_config.json"), "x");
  ASSERT_TRUE(peft.ok()) << peft.status();
  EXPECT_EQ(peft->modules_to_save, std::vector<std::string>{"score"});

  auto inference = loracle::v1::Inference::NewStub(channel);
  loracle::v1::PredictRequest req;
  req.set_adapter("mail");
  req.add_inputs("the mail free money win now");
  req.add_inputs("the mail meeting please review invoice");
  loracle::v1::PredictResponse resp;
  grpc::ClientContext ctx;
  ASSERT_TRUE(inference->Predict(&ctx, req, &resp).ok());
  EXPECT_EQ(resp.predictions(0).label(), "spam");
  EXPECT_EQ(resp.predictions(1).label(), "ham");
}

// The fused q/k/v and gate/up storages survive a move to another placement (Module::to gives
// every parameter its own storage; the decoder fuses them again) and int8 packing: bfloat16 and
// int8 forwards track float32's features, with and without LoRA routing.
TEST(DecoderPlacementTest, Bfloat16AndInt8TrackFloat32) {
  testing::TempDir dir;
  const std::string model_dir = dir / "model";
  testing::CheckpointLayout layout;
  layout.num_labels = 2;
  layout.weight_std = 0.2f;
  layout.bias_std = 0.1f;
  model::ModelConfig c = Decoder("qwen2", 4, 2, 6);
  testing::WriteFixtureModel(model_dir, c, "roberta", 64, layout, 8);
  auto load = [&](torch::ScalarType dtype, bool int8) {
    model::Placement p;
    p.dtype = dtype;
    p.int8 = int8;
    auto m = model::LoadBaseModel(model_dir, p);
    EXPECT_TRUE(m.ok()) << m.status();
    return *std::move(m);
  };
  auto f32 = load(torch::kFloat32, false);
  auto bf16 = load(torch::kBFloat16, false);
  EXPECT_EQ(bf16->backbone->dtype(), torch::kBFloat16);
  std::unique_ptr<model::BaseModel> int8;
  if (!model::Int8Engine().empty()) int8 = load(torch::kFloat32, true);
  c10::InferenceMode guard;
  torch::Tensor ids = torch::randint(3, 200, {3, 12}, torch::kInt64);
  torch::Tensor mask = torch::ones({3, 12}, torch::kInt64);
  mask[1].narrow(0, 7, 5).zero_();  // a shorter row
  torch::Tensor types = torch::zeros({3, 12}, torch::kInt64);
  const torch::Tensor ref = f32->backbone->forward(ids, mask, types, nullptr);
  const double scale = ref.abs().max().item<double>();
  const torch::Tensor b = bf16->backbone->forward(ids, mask, types, nullptr).to(torch::kFloat32);
  EXPECT_LT((b - ref).abs().max().item<double>(), 0.05 * scale);
  EXPECT_GT((b - ref).abs().max().item<double>(), 0.0) << "bfloat16 really ran";
  if (int8 != nullptr) {
    const torch::Tensor q = int8->backbone->forward(ids, mask, types, nullptr);
    // Two random layers amplify int8's rounding; Int8LinearTest bounds one product tightly. A
    // broken fused storage is off by the scale itself.
    EXPECT_LT((q - ref).abs().max().item<double>(), 0.25 * scale);
    EXPECT_GT((q - ref).abs().max().item<double>(), 0.0) << "int8 really ran";
  }
}

// --quantize=int8's products stay within int8's rounding of float32's: activations quantized to 7
// bits. With 8 (reduce_range off) the pairwise int16 sums of AVX2 CPUs without VNNI saturate,
// and a product of unit-scale values was off by up to 1.8 (measured here) instead of 0.05.
TEST(Int8LinearTest, ProductsDoNotSaturate) {
  if (model::Int8Engine().empty()) GTEST_SKIP() << "no int8 engine in this LibTorch";
  c10::InferenceMode guard;
  torch::manual_seed(3);
  for (int64_t in : {16, 24, 32, 64, 256}) {
    for (bool with_bias : {false, true}) {
      const torch::Tensor w = torch::randn({24, in}) * 0.2;
      const torch::Tensor bias = with_bias ? torch::randn({24}) * 0.1 : torch::Tensor();
      auto packed = model::PackInt8(w, bias);
      ASSERT_TRUE(packed.ok()) << packed.status();
      const torch::Tensor x = torch::randn({20, in});
      const torch::Tensor exact = model::FusedLinear(x, w, bias, nullptr);
      const torch::Tensor q = model::FusedLinear(x, w, bias, packed->get());
      // Per-element error bound: in terms of 1/2 step of |x|max / 127 and of |w|max / 127.
      const double step = x.abs().max().item<double>() / 127.0 * w.abs().max().item<double>();
      EXPECT_LT((q - exact).abs().max().item<double>(), 2.0 * step * std::sqrt(double(in)))
          << "in " << in << " bias " << with_bias;
    }
  }
}

// The batched attention a GPU takes (all rows over the padded length, one causal and window mask)
// equals the CPU's row-by-row attention over each row's own length, on real rows, with LoRA and
// HIDDENKEY's masks routed per row.
TEST(DecoderPlacementTest, BatchedAttentionEqualsRowByRow) {
  testing::TempDir dir;
  const std::string model_dir = dir / "model";
  testing::CheckpointLayout layout;
  layout.weight_std = 0.2f;
  model::ModelConfig c = Decoder("mistral", 4, 2, 6);
  c.sliding_window = 4;
  testing::WriteFixtureModel(model_dir, c, "roberta", 64, layout, 9);
  auto base = model::LoadBaseModel(model_dir);
  ASSERT_TRUE(base.ok()) << base.status();
  model::BackboneImpl& backbone = *(*base)->backbone;
  // One member with a rank-2 delta on every q_proj and down_proj, and HIDDENKEY's dropout.
  model::LoraMember member;
  member.layers.resize(backbone.linear_names().size());
  torch::manual_seed(1);
  for (size_t i = 0; i < member.layers.size(); ++i) {
    const auto& l = backbone.linear(static_cast<int>(i));
    member.layers[i] = {torch::randn({2, l->in_features()}) * 0.3,
                        torch::randn({l->out_features(), 2}) * 0.3, 1.0};
  }
  member.classifier_weight = torch::randn({2, c.hidden_size});
  model::DropoutSpec hiddenkey;
  hiddenkey.method = model::DropoutMethod::kHiddenKey;
  hiddenkey.dropkey_rate = 0.2;
  hiddenkey.hiddencut_rate = 0.1;
  model::LoraRouting routing = {{0, 3, &member, &hiddenkey, {11, 12, 13}}};
  c10::InferenceMode guard;
  torch::Tensor ids = torch::randint(3, 200, {3, 10}, torch::kInt64);
  torch::Tensor mask = torch::ones({3, 10}, torch::kInt64);
  mask[0].narrow(0, 3, 7).zero_();
  mask[2].narrow(0, 8, 2).zero_();
  torch::Tensor types = torch::zeros({3, 10}, torch::kInt64);
  backbone.set_batched_attention(false);
  const torch::Tensor rows = backbone.forward(ids, mask, types, &routing);
  backbone.set_batched_attention(true);
  const torch::Tensor batched = backbone.forward(ids, mask, types, &routing);
  EXPECT_LT((rows - batched).abs().max().item<double>(),
            1e-4 * (1 + rows.abs().max().item<double>()));
  EXPECT_GT(rows.abs().max().item<double>(), 0.0);
}

// Label words (no score head): label i's logit is the LM head's logit of label_words[i] as the
// next token. Zero-shot (loracle.json alone) and with a LoRA adapter, for a checkpoint with its
// own lm_head.weight and for one tying it to the embeddings, against the float64 reference over
// gRPC; a label word of several tokens fails the load with its name.
TEST(DecoderLabelWordsTest, ZeroShotAndWithLoraMatchTheFloat64Reference) {
  for (const bool tied : {true, false}) {
    SCOPED_TRACE(tied ? "tied embeddings" : "lm_head.weight");
    testing::TempDir dir;
    const std::string model_dir = dir / "model";
    testing::CheckpointLayout layout;
    layout.weight_std = 0.3f;
    model::ModelConfig c = Decoder("llama", 4, 2, 6);
    c.tie_word_embeddings = tied;
    const model::ModelConfig config =
        testing::WriteFixtureModel(model_dir, c, "roberta", 64, layout, 21);
    std::map<std::string, Tensor> weights;
    for (auto& [name, t] : ReadAll(model_dir + "/model.safetensors")) weights["model." + name] = t;
    Tensor lm_head = weights.at("model.embed_tokens.weight");
    if (!tied) {  // a *ForCausalLM save: the base tensors under "model." and its own lm_head
      torch::manual_seed(5);
      lm_head = torch::randn({config.vocab_size, config.hidden_size}, torch::kFloat64);
      const Tensor lm32 = lm_head.to(torch::kFloat32).contiguous();
      std::vector<Tensor> keep;
      std::vector<model::TensorToWrite> tensors;
      for (const auto& [name, t] : weights) {
        keep.push_back(t.to(torch::kFloat32).contiguous());
        tensors.push_back(
            {name, model::DType::kF32, keep.back().sizes().vec(),
             absl::Span<const uint8_t>(static_cast<const uint8_t*>(keep.back().data_ptr()),
                                       keep.back().nbytes())});
      }
      tensors.push_back(
          {"lm_head.weight", model::DType::kF32, lm32.sizes().vec(),
           absl::Span<const uint8_t>(static_cast<const uint8_t*>(lm32.data_ptr()), lm32.nbytes())});
      ASSERT_TRUE(model::WriteSafetensors(model_dir + "/model.safetensors", tensors).ok());
    }
    int max_length = 1 << 20;
    auto tokenizer = text::LoadTokenizer(model_dir, &max_length);
    ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
    const std::vector<std::string> words = {" the", " and", " of"};
    std::vector<int64_t> word_ids;
    for (const std::string& w : words) {
      auto ids = (*tokenizer)->TokenizeToIds(w);
      ASSERT_TRUE(ids.ok() && ids->size() == 1u) << "\"" << w << "\" is one token of the fixture";
      word_ids.push_back(ids->front());
    }
    const Tensor head = lm_head.index_select(0, torch::tensor(word_ids));

    adapters::ServingConfig zero_shot;
    zero_shot.labels = {"a", "b", "c"};
    zero_shot.label_words = words;
    adapters::RandomAdapterSpec spec;
    spec.serving = zero_shot;
    spec.lora.rank = 2;
    spec.lora.lora_alpha = 4;
    spec.lora.target_modules = {"q_proj", "v_proj", "down_proj"};
    spec.lora_std = 0.3f;
    adapters::ServingConfig long_word = zero_shot;
    long_word.label_words = {" the", " and", " antidisestablishmentarianism"};
    // A prompt template around each input; in a window of 12 ids, the input is cut and the text
    // after {text} kept.
    adapters::ServingConfig prompt = zero_shot;
    prompt.prompt_template = "Review: {text}\nAnswer:";
    adapters::ServingConfig short_prompt = prompt;
    short_prompt.window_length = 12;
    auto server = testing::TestServer::Start({}, [&](adapters::Store& store,
                                                     app::LoracleServer::Options& o) {
      o.model_dir = model_dir;
      auto write = [](const adapters::ServingConfig& s) {
        return [s](const std::string& d) {
          return util::WriteFileAtomically(d + "/loracle.json", adapters::ServingConfigToJson(s));
        };
      };
      ASSERT_TRUE(store.Publish("zero", write(zero_shot)).ok());
      ASSERT_TRUE(store.Publish("long", write(long_word)).ok());
      ASSERT_TRUE(store.Publish("prompt", write(prompt)).ok());
      ASSERT_TRUE(store.Publish("short-prompt", write(short_prompt)).ok());
      ASSERT_TRUE(store
                      .Publish("lora",
                               [&](const std::string& d) {
                                 return adapters::WriteRandomAdapter(d, config, spec);
                               })
                      .ok());
    });
    ASSERT_NE(server, nullptr);

    Reference zero_ref(config, weights);
    zero_ref.SetHead(head);
    Reference lora_ref(config, weights);
    lora_ref.SetHead(head);
    EXPECT_EQ(lora_ref.AddPeftFile(
                  ReadAll(server->store().VersionDir("lora", 1) + "/adapter_model.safetensors"),
                  spec.lora.lora_alpha / spec.lora.rank),
              3 * config.num_hidden_layers);

    auto channel = server->NewChannel();
    auto inference = loracle::v1::Inference::NewStub(channel);
    const std::vector<std::string> texts = {"Hello there, my friend",
                                            "A much longer input, with commas, and words"};
    std::vector<std::vector<int64_t>> ids;
    for (const std::string& t : texts) {
      auto e = (*tokenizer)->Encode(t, std::nullopt, max_length);
      ASSERT_TRUE(e.ok()) << e.status();
      ids.push_back(e->input_ids);
    }
    ExpectServedMatchesReference(*inference, "zero", texts, ids, zero_ref);
    ExpectServedMatchesReference(*inference, "lora", texts, ids, lora_ref);
    // The prompt as one string through the tokenizer (the suffix starts at a pre-token
    // boundary, so the ids are the whole prompt's).
    std::vector<std::vector<int64_t>> prompt_ids, short_ids;
    for (const std::string& t : texts) {
      auto e = (*tokenizer)->Encode("Review: " + t + "\nAnswer:", std::nullopt, max_length);
      ASSERT_TRUE(e.ok()) << e.status();
      prompt_ids.push_back(e->input_ids);
      auto head = (*tokenizer)->TokenizeToIds("Review: " + t);
      auto tail = (*tokenizer)->TokenizeToIds("\nAnswer:");
      ASSERT_TRUE(head.ok() && tail.ok());
      const size_t specials = e->input_ids.size() - head->size() - tail->size();
      ASSERT_LT(specials + tail->size() + 1, 12u);
      head->resize(std::min(head->size(), 12 - specials - tail->size()));
      head->insert(head->end(), tail->begin(), tail->end());
      auto w = (*tokenizer)->Windows(*head, 12, 1);
      ASSERT_TRUE(w.ok() && w->size() == 1u);
      EXPECT_EQ(w->front().input_ids.size(), 12u) << "the input was cut to fit";
      short_ids.push_back(w->front().input_ids);
    }
    ExpectServedMatchesReference(*inference, "prompt", texts, prompt_ids, zero_ref);
    ExpectServedMatchesReference(*inference, "short-prompt", texts, short_ids, zero_ref);
    {
      loracle::v1::PredictRequest req;
      req.set_adapter("prompt");
      req.add_inputs("one");
      req.add_text_pairs("two");
      loracle::v1::PredictResponse resp;
      grpc::ClientContext ctx;
      const grpc::Status st = inference->Predict(&ctx, req, &resp);
      EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
      EXPECT_NE(st.error_message().find("prompt template"), std::string::npos)
          << st.error_message();
    }
    auto admin = loracle::v1::Adapters::NewStub(channel);
    grpc::ClientContext ctx;
    loracle::v1::GetAdapterRequest get;
    get.set_name("long");
    loracle::v1::AdapterInfo info;
    ASSERT_TRUE(admin->Get(&ctx, get, &info).ok());
    EXPECT_EQ(info.state(), loracle::v1::ADAPTER_STATE_FAILED);
    EXPECT_NE(info.error().find("antidisestablishmentarianism"), std::string::npos) << info.error();
  }
}

INSTANTIATE_TEST_SUITE_P(Families, DecoderParityTest, ::testing::ValuesIn(Cases()),
                         [](const ::testing::TestParamInfo<Case>& i) { return i.param.name; });

}  // namespace
}  // namespace loracle
