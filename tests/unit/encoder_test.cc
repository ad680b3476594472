// The encoder against an independent reference: a plain-C++ (double precision, no torch) BERT
// layer written from the equations, fed the very same weights.

#include <gtest/gtest.h>

#include <cmath>
#include <map>

#include "server/model/bert_encoder.h"
#include "server/model/checkpoint.h"
#include "server/model/default_model.h"
#include "server/model/safetensors.h"
#include "server/util/file_util.h"
#include "tests/support/test_util.h"

namespace loracle::model {
namespace {

using Mat = std::vector<std::vector<double>>;

ModelConfig OneLayer() {
  ModelConfig c = testing::ConfigOfShape("bert", 4, 1, 2, 8);
  c.vocab_size = 10;
  c.max_position_embeddings = 8;
  c.layer_norm_eps = 1e-12;
  return c;
}

// Fills every parameter (biases and LayerNorm too) with seeded random values.
BertEncoder RandomEncoder(const ModelConfig& c, uint64_t seed) {
  torch::manual_seed(seed);
  BertEncoder e(c);
  torch::NoGradGuard g;
  for (auto& p : e->named_parameters()) p.value().copy_(torch::randn(p.value().sizes()) * 0.5);
  e->eval();
  return e;
}

Mat ToMat(const torch::Tensor& t) {
  auto a = t.to(torch::kFloat64).contiguous();
  Mat m(static_cast<size_t>(a.size(0)), std::vector<double>(static_cast<size_t>(a.size(1))));
  for (int64_t i = 0; i < a.size(0); ++i)
    for (int64_t j = 0; j < a.size(1); ++j) m[i][j] = a[i][j].item<double>();
  return m;
}
std::vector<double> ToVec(const torch::Tensor& t) {
  std::vector<double> v;
  for (int64_t i = 0; i < t.size(0); ++i) v.push_back(t[i].item<double>());
  return v;
}

Mat Linear(const Mat& x, const Mat& w, const std::vector<double>& b) {
  Mat y(x.size(), std::vector<double>(w.size()));
  for (size_t n = 0; n < x.size(); ++n)
    for (size_t o = 0; o < w.size(); ++o) {
      double s = b[o];
      for (size_t i = 0; i < x[n].size(); ++i) s += x[n][i] * w[o][i];
      y[n][o] = s;
    }
  return y;
}
Mat LayerNorm(const Mat& x, const std::vector<double>& g, const std::vector<double>& b,
              double eps) {
  Mat y = x;
  for (size_t n = 0; n < x.size(); ++n) {
    double mean = 0, var = 0;
    for (double v : x[n]) mean += v;
    mean /= x[n].size();
    for (double v : x[n]) var += (v - mean) * (v - mean);
    var /= x[n].size();
    for (size_t i = 0; i < x[n].size(); ++i)
      y[n][i] = (x[n][i] - mean) / std::sqrt(var + eps) * g[i] + b[i];
  }
  return y;
}
Mat Add(Mat a, const Mat& b) {
  for (size_t n = 0; n < a.size(); ++n)
    for (size_t i = 0; i < a[n].size(); ++i) a[n][i] += b[n][i];
  return a;
}

// pooled = tanh(W_p h_cls + b_p) of a one-layer BERT, from the equations.
std::vector<double> Reference(BertEncoder& e, const std::vector<int64_t>& ids,
                              const std::vector<int64_t>& types) {
  std::map<std::string, torch::Tensor> p;
  for (auto& kv : e->named_parameters()) p[kv.key()] = kv.value().detach();
  const ModelConfig& c = e->config();
  const Mat word = ToMat(p["embeddings.word_embeddings.weight"]);
  const Mat pos = ToMat(p["embeddings.position_embeddings.weight"]);
  const Mat type = ToMat(p["embeddings.token_type_embeddings.weight"]);
  const size_t L = ids.size(), H = static_cast<size_t>(c.hidden_size);
  Mat h(L, std::vector<double>(H));
  for (size_t t = 0; t < L; ++t)
    for (size_t i = 0; i < H; ++i) h[t][i] = word[ids[t]][i] + pos[t][i] + type[types[t]][i];
  h = LayerNorm(h, ToVec(p["embeddings.LayerNorm.weight"]), ToVec(p["embeddings.LayerNorm.bias"]),
                c.layer_norm_eps);
  const std::string l = "encoder.layer.0.";
  auto lin = [&](const Mat& x, const std::string& name) {
    return Linear(x, ToMat(p[name + ".weight"]), ToVec(p[name + ".bias"]));
  };
  const Mat q = lin(h, l + "attention.self.query"), k = lin(h, l + "attention.self.key"),
            v = lin(h, l + "attention.self.value");
  const size_t heads = static_cast<size_t>(c.num_attention_heads), d = H / heads;
  Mat ctx(L, std::vector<double>(H, 0.0));
  for (size_t hd = 0; hd < heads; ++hd) {
    for (size_t i = 0; i < L; ++i) {
      std::vector<double> s(L);
      double max = -1e300, sum = 0;
      for (size_t j = 0; j < L; ++j) {
        double dot = 0;
        for (size_t x = 0; x < d; ++x) dot += q[i][hd * d + x] * k[j][hd * d + x];
        s[j] = dot / std::sqrt(static_cast<double>(d));
        max = std::max(max, s[j]);
      }
      for (double& sj : s) sum += (sj = std::exp(sj - max));
      for (size_t j = 0; j < L; ++j)
        for (size_t x = 0; x < d; ++x) ctx[i][hd * d + x] += s[j] / sum * v[j][hd * d + x];
    }
  }
  Mat a = LayerNorm(Add(lin(ctx, l + "attention.output.dense"), h),
                    ToVec(p[l + "attention.output.LayerNorm.weight"]),
                    ToVec(p[l + "attention.output.LayerNorm.bias"]), c.layer_norm_eps);
  Mat inter = lin(a, l + "intermediate.dense");
  for (auto& row : inter)
    for (double& x : row) x = 0.5 * x * (1.0 + std::erf(x / std::sqrt(2.0)));
  Mat out =
      LayerNorm(Add(lin(inter, l + "output.dense"), a), ToVec(p[l + "output.LayerNorm.weight"]),
                ToVec(p[l + "output.LayerNorm.bias"]), c.layer_norm_eps);
  Mat pooled = lin(Mat{out[0]}, "pooler.dense");
  for (double& x : pooled[0]) x = std::tanh(x);
  return pooled[0];
}

torch::Tensor Row(const std::vector<int64_t>& v) {
  return torch::tensor(v, torch::kInt64).unsqueeze(0);
}

TEST(EncoderTest, NamesMatchTransformersBertModel) {
  BertEncoder e(OneLayer());
  std::vector<std::string> names;
  for (auto& kv : e->named_parameters()) names.push_back(kv.key());
  std::vector<std::string> expected;
  for (const auto& [name, shape] : BaseTensorShapes(OneLayer())) expected.push_back(name);
  std::sort(names.begin(), names.end());
  std::sort(expected.begin(), expected.end());
  EXPECT_EQ(names, expected);
}

TEST(EncoderTest, MatchesHandDerivedOneLayerReference) {
  BertEncoder e = RandomEncoder(OneLayer(), 11);
  const std::vector<int64_t> ids = {2, 5, 7, 3}, types = {0, 0, 1, 1};
  torch::Tensor pooled;
  {
    c10::InferenceMode guard;
    pooled = e->forward(Row(ids), torch::ones({1, 4}, torch::kInt64), Row(types), nullptr);
  }
  const std::vector<double> ref = Reference(e, ids, types);
  ASSERT_EQ(pooled.size(1), 4);
  for (size_t i = 0; i < ref.size(); ++i)
    EXPECT_NEAR(pooled[0][i].item<double>(), ref[i], 1e-5) << i;
}

TEST(EncoderTest, PaddingDoesNotChangeTheResult) {
  BertEncoder e = RandomEncoder(OneLayer(), 12);
  c10::InferenceMode guard;
  torch::Tensor ids = torch::tensor({2, 5, 7, 3, 2, 6, 0, 0}, torch::kInt64).view({2, 4});
  torch::Tensor mask = torch::tensor({1, 1, 1, 1, 1, 1, 0, 0}, torch::kInt64).view({2, 4});
  torch::Tensor batched = e->forward(ids, mask, torch::zeros({2, 4}, torch::kInt64), nullptr);
  torch::Tensor alone = e->forward(Row({2, 6}), torch::ones({1, 2}, torch::kInt64),
                                   torch::zeros({1, 2}, torch::kInt64), nullptr);
  EXPECT_TRUE(torch::allclose(batched[1], alone[0], 1e-5, 1e-6));
}

LoraMember RandomMember(BertEncoder& e, const std::vector<std::string>& targets, int rank,
                        double scaling, uint64_t seed) {
  torch::manual_seed(seed);
  LoraMember m;
  m.layers.resize(e->linear_names().size());
  for (const std::string& t : targets) {
    const int i = e->LinearIndex(t);
    EXPECT_GE(i, 0) << t;
    const auto& lin = e->linear(i);
    m.layers[i] = {torch::randn({rank, lin->in_features()}) * 0.3,
                   torch::randn({lin->out_features(), rank}) * 0.3, scaling};
  }
  m.classifier_weight = torch::randn({3, e->config().hidden_size});
  m.classifier_bias = torch::randn({3});
  return m;
}

TEST(EncoderTest, LoraDeltaEqualsMergedWeights) {
  BertEncoder e = RandomEncoder(OneLayer(), 13);
  const std::vector<std::string> targets = {"encoder.layer.0.attention.self.query",
                                            "encoder.layer.0.attention.self.value",
                                            "encoder.layer.0.intermediate.dense"};
  LoraMember m = RandomMember(e, targets, 2, 1.5, 5);
  torch::Tensor ids = Row({2, 5, 7, 3}), mask = torch::ones({1, 4}, torch::kInt64),
                types = torch::zeros({1, 4}, torch::kInt64);
  LoraRouting routing = {{0, 1, &m}};
  torch::Tensor with_lora, base;
  {
    c10::InferenceMode guard;
    with_lora = e->forward(ids, mask, types, &routing);
    base = e->forward(ids, mask, types, nullptr);
  }
  EXPECT_FALSE(torch::allclose(with_lora, base, 1e-4, 1e-4)) << "the delta must matter";
  {
    torch::NoGradGuard g;  // W' = W + s * B A: what merging the adapter into the base does
    for (const std::string& t : targets) {
      const LoraPair& p = m.layers[e->LinearIndex(t)];
      e->linear(e->LinearIndex(t))->weight.add_(torch::matmul(p.b, p.a), p.scaling);
    }
  }
  c10::InferenceMode guard;
  torch::Tensor merged = e->forward(ids, mask, types, nullptr);
  EXPECT_TRUE(torch::allclose(with_lora, merged, 1e-5, 1e-5));
}

TEST(EncoderTest, MixedAdapterBatchEqualsEachRowAlone) {
  ModelConfig c = OneLayer();
  c.num_hidden_layers = 2;
  BertEncoder e = RandomEncoder(c, 14);
  LoraMember a =
      RandomMember(e, {"encoder.layer.0.attention.self.query", "pooler.dense"}, 2, 2.0, 1);
  LoraMember b = RandomMember(e, {"encoder.layer.1.output.dense"}, 3, 0.5, 2);
  torch::Tensor ids = torch::tensor({2, 5, 7, 2, 6, 1, 3, 3, 4}, torch::kInt64).view({3, 3});
  torch::Tensor mask = torch::ones({3, 3}, torch::kInt64),
                types = torch::zeros({3, 3}, torch::kInt64);
  c10::InferenceMode guard;
  LoraRouting mixed = {{0, 1, &a}, {1, 2, &b}, {2, 3, nullptr}};
  torch::Tensor together = e->forward(ids, mask, types, &mixed);
  const LoraMember* members[] = {&a, &b, nullptr};
  for (int64_t r = 0; r < 3; ++r) {
    LoraRouting one = {{0, 1, members[r]}};
    torch::Tensor alone =
        e->forward(ids.slice(0, r, r + 1), mask.slice(0, r, r + 1), types.slice(0, r, r + 1), &one);
    EXPECT_TRUE(torch::allclose(together[r], alone[0], 1e-5, 1e-5)) << "row " << r;
  }
  LoraRouting heads = {{0, 1, &a}, {1, 2, &b}};
  auto logits = BackboneImpl::Classify(together.slice(0, 0, 2), heads);
  ASSERT_EQ(logits.size(), 2u);
  EXPECT_TRUE(torch::allclose(logits[1][0],
                              torch::matmul(b.classifier_weight, together[1]) + b.classifier_bias,
                              1e-5, 1e-5));
}

// Rewrites `dir`/model.safetensors through `edit`, which may drop or replace tensors.
void EditWeights(const std::string& dir,
                 const std::function<void(std::vector<TensorToWrite>&,
                                          std::vector<std::vector<float>>&)>& edit) {
  auto file = SafetensorsFile::Open(dir + "/model.safetensors");
  ASSERT_TRUE(file.ok());
  std::vector<TensorToWrite> tensors;
  std::vector<std::vector<float>> keep;
  for (const std::string& n : (*file)->names()) {
    auto v = (*file)->Get(n);
    tensors.push_back({n, v->dtype, v->shape, {v->data, v->nbytes}});
  }
  edit(tensors, keep);
  auto bytes = SerializeSafetensors(tensors, {});
  ASSERT_TRUE(bytes.ok()) << bytes.status();
  file->reset();
  testing::WriteFile(dir + "/model.safetensors", *bytes);
}

TEST(CheckpointTest, LoadsTheFileExactly) {
  testing::TempDir tmp;
  testing::WriteTinyModel(tmp.path());
  auto model = LoadBaseModel(tmp.path());
  ASSERT_TRUE(model.ok()) << model.status();
  auto file = SafetensorsFile::Open(tmp / "model.safetensors");
  ASSERT_TRUE(file.ok());
  for (auto& kv : (*model)->backbone->named_parameters()) {
    auto t = ToFloatTensor(*(*file)->Get(kv.key()), kv.key());
    ASSERT_TRUE(t.ok());
    EXPECT_TRUE(torch::equal(*t, kv.value())) << kv.key();
    EXPECT_FALSE(kv.value().requires_grad());
  }
  EXPECT_EQ((*model)->max_length, 64);
  auto ids = (*model)->tokenizer->Tokenize("hello");
  ASSERT_TRUE(ids.ok());
  EXPECT_EQ(*ids, std::vector<std::string>{"hello"});
}

TEST(CheckpointTest, ConvertsHalfPrecisionAndAcceptsBertPrefix) {
  testing::TempDir tmp;
  testing::WriteTinyModel(tmp.path());
  std::vector<std::vector<uint16_t>> halves;
  EditWeights(tmp.path(), [&](std::vector<TensorToWrite>& t, auto&) {
    halves.reserve(t.size());
    for (auto& x : t) {
      x.name = "bert." + x.name;  // BertForSequenceClassification layout
      if (x.name.find("pooler.dense.weight") != std::string::npos) {
        const size_t n = x.data.size() / 4;
        halves.emplace_back(n, 0x3c00);  // 1.0 in F16
        x.dtype = DType::kF16;
        x.data = {reinterpret_cast<const uint8_t*>(halves.back().data()), n * 2};
      }
    }
  });
  auto model = LoadBaseModel(tmp.path());
  ASSERT_TRUE(model.ok()) << model.status();
  for (auto& kv : (*model)->backbone->named_parameters()) {
    if (kv.key() == "pooler.dense.weight") {
      EXPECT_TRUE(torch::all(kv.value() == 1.0).item<bool>());
    }
  }
}

TEST(CheckpointTest, MissingOrMisShapedTensorIsNamed) {
  testing::TempDir tmp;
  testing::WriteTinyModel(tmp.path());
  EditWeights(tmp.path(), [](std::vector<TensorToWrite>& t, auto&) {
    t.erase(std::remove_if(t.begin(), t.end(),
                           [](auto& x) { return x.name == "encoder.layer.1.output.dense.bias"; }),
            t.end());
  });
  auto missing = LoadBaseModel(tmp.path());
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(missing.status().message().find("encoder.layer.1.output.dense.bias"), std::string::npos)
      << missing.status();

  testing::TempDir tmp2;
  testing::WriteTinyModel(tmp2.path());
  EditWeights(tmp2.path(), [](std::vector<TensorToWrite>& t, auto&) {
    for (auto& x : t)
      if (x.name == "pooler.dense.bias") x.shape = {2, 16};
  });
  auto shaped = LoadBaseModel(tmp2.path());
  ASSERT_FALSE(shaped.ok());
  EXPECT_NE(shaped.status().message().find("\"pooler.dense.bias\" has shape [2, 16]"),
            std::string::npos)
      << shaped.status();
}

TEST(CheckpointTest, CorruptWeightsAndBadConfigFailPrecisely) {
  testing::TempDir tmp;
  testing::WriteTinyModel(tmp.path());
  std::string bytes = testing::ReadFile(tmp / "model.safetensors");
  testing::WriteFile(tmp / "model.safetensors", bytes.substr(0, bytes.size() / 2));
  auto truncated = LoadBaseModel(tmp.path());
  ASSERT_FALSE(truncated.ok());
  EXPECT_EQ(truncated.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(truncated.status().message().find("model.safetensors"), std::string::npos);

  testing::WriteFile(tmp / "config.json", R"({"model_type": "bert", "hidden_size": 32})");
  auto config = LoadBaseModel(tmp.path());
  ASSERT_FALSE(config.ok());
  EXPECT_EQ(config.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(config.status().message().find("vocab_size"), std::string::npos) << config.status();

  EXPECT_EQ(LoadBaseModel(tmp / "nope").status().code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace loracle::model
