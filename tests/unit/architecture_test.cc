// BERT, RoBERTa and DistilBERT checkpoints (as transformers lays them out:
// *ForSequenceClassification prefixes, F16/BF16 weights, sharded index) against a plain-C++
// double-precision forward written from the models' equations and fed the very tensors in the
// files. The reference is independent of the Encoder: it reads the files itself and shares no code
// with the model under test.

#include "server/model/architecture.h"

#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <map>
#include <memory>
#include <ostream>

#include "server/model/checkpoint.h"
#include "server/model/default_model.h"
#include "tests/support/test_util.h"

namespace loracle::model {
namespace {

namespace fs = std::filesystem;
using Vec = std::vector<double>;
using Mat = std::vector<Vec>;

// The reference reads every tensor straight from the checkpoint files.
class Reference {
 public:
  Reference(const std::string& dir, const ModelConfig& c) : c_(c) {
    auto w = CheckpointWeights::Open(dir);
    EXPECT_TRUE(w.ok()) << w.status();
    for (const std::string& name : (*w)->names()) {
      auto t = ToFloatTensor(*(*w)->Get(name), name);
      EXPECT_TRUE(t.ok());
      torch::Tensor d = t->to(torch::kFloat64).contiguous();
      std::string key = name;
      const std::string prefix = LayoutFor(c.architecture()).base_prefix + ".";
      if (key.rfind(prefix, 0) == 0) key = key.substr(prefix.size());
      tensors_[key] = std::vector<double>(d.data_ptr<double>(), d.data_ptr<double>() + d.numel());
      shapes_[key] = d.sizes().vec();
    }
  }

  // Logits of one row; keys j with attend[j] == 0 are masked out (empty: all attended).
  Vec Logits(const std::vector<int64_t>& ids, const std::vector<int64_t>& types,
             const std::vector<int64_t>& attend = {}) {
    const EncoderLayout& l = LayoutFor(c_.architecture());
    const size_t L = ids.size(), H = static_cast<size_t>(c_.hidden_size);
    Mat h(L, Vec(H));
    for (size_t t = 0; t < L; ++t) {
      const size_t pos = c_.architecture() == Architecture::kRoberta ? c_.pad_token_id + 1 + t : t;
      for (size_t i = 0; i < H; ++i) {
        h[t][i] = At("embeddings.word_embeddings.weight", ids[t], i) +
                  At("embeddings.position_embeddings.weight", pos, i);
        if (c_.architecture() == Architecture::kBert) {
          h[t][i] += At("embeddings.token_type_embeddings.weight", types[t], i);
        } else if (c_.architecture() == Architecture::kRoberta) {
          h[t][i] += At("embeddings.token_type_embeddings.weight", 0, i);
        }
      }
    }
    h = Norm(h, "embeddings.LayerNorm");
    for (int64_t n = 0; n < c_.num_hidden_layers; ++n) {
      const std::string p = l.layer_prefix + std::to_string(n) + ".";
      const Mat q = Linear(h, p + l.query), k = Linear(h, p + l.key), v = Linear(h, p + l.value);
      const size_t heads = static_cast<size_t>(c_.num_attention_heads), d = H / heads;
      Mat ctx(L, Vec(H, 0.0));
      for (size_t hd = 0; hd < heads; ++hd) {
        for (size_t i = 0; i < L; ++i) {
          Vec s(L);
          double max = -1e300, sum = 0;
          for (size_t j = 0; j < L; ++j) {
            if (!attend.empty() && attend[j] == 0) {
              s[j] = -1e300;
              continue;
            }
            double dot = 0;
            for (size_t x = 0; x < d; ++x) dot += q[i][hd * d + x] * k[j][hd * d + x];
            s[j] = dot / std::sqrt(static_cast<double>(d));
            max = std::max(max, s[j]);
          }
          for (double& sj : s) sum += (sj = sj == -1e300 ? 0.0 : std::exp(sj - max));
          for (size_t j = 0; j < L; ++j)
            for (size_t x = 0; x < d; ++x) ctx[i][hd * d + x] += s[j] / sum * v[j][hd * d + x];
        }
      }
      Mat a = Norm(Add(Linear(ctx, p + l.attn_out), h), p + l.attn_norm);
      Mat inter = Linear(a, p + l.intermediate);
      for (Vec& row : inter)
        for (double& x : row) x = Act(x);
      h = Norm(Add(Linear(inter, p + l.output), a), p + l.out_norm);
    }
    Mat f = {h[0]};
    if (l.has_pooler) f = Tanh(Linear(f, "pooler.dense"));
    const HeadLayout& head = HeadFor(c_.architecture());
    if (!head.dense.empty()) {
      f = Linear(f, head.dense);
      f = head.activation == HeadActivation::kTanh ? Tanh(f) : Relu(f);
    }
    return Linear(f, head.out)[0];
  }

 private:
  double At(const std::string& name, size_t row, size_t col) {
    EXPECT_TRUE(tensors_.count(name)) << name;
    return tensors_[name][row * static_cast<size_t>(shapes_[name][1]) + col];
  }
  Mat Linear(const Mat& x, const std::string& module) {
    const Vec& w = tensors_.at(module + ".weight");
    const Vec& b = tensors_.at(module + ".bias");
    const size_t out = b.size(), in = x[0].size();
    Mat y(x.size(), Vec(out));
    for (size_t n = 0; n < x.size(); ++n)
      for (size_t o = 0; o < out; ++o) {
        double s = b[o];
        for (size_t i = 0; i < in; ++i) s += x[n][i] * w[o * in + i];
        y[n][o] = s;
      }
    return y;
  }
  Mat Norm(Mat x, const std::string& module) {
    const Vec& g = tensors_.at(module + ".weight");
    const Vec& b = tensors_.at(module + ".bias");
    for (Vec& row : x) {
      double mean = 0, var = 0;
      for (double v : row) mean += v;
      mean /= row.size();
      for (double v : row) var += (v - mean) * (v - mean);
      var /= row.size();
      for (size_t i = 0; i < row.size(); ++i)
        row[i] = (row[i] - mean) / std::sqrt(var + c_.layer_norm_eps) * g[i] + b[i];
    }
    return x;
  }
  double Act(double x) const {
    if (c_.hidden_act == "relu") return std::max(0.0, x);
    if (c_.hidden_act == "gelu_new") {
      return 0.5 * x * (1.0 + std::tanh(std::sqrt(2.0 / M_PI) * (x + 0.044715 * x * x * x)));
    }
    return 0.5 * x * (1.0 + std::erf(x / std::sqrt(2.0)));
  }
  static Mat Add(Mat a, const Mat& b) {
    for (size_t n = 0; n < a.size(); ++n)
      for (size_t i = 0; i < a[n].size(); ++i) a[n][i] += b[n][i];
    return a;
  }
  static Mat Tanh(Mat a) {
    for (Vec& r : a)
      for (double& x : r) x = std::tanh(x);
    return a;
  }
  static Mat Relu(Mat a) {
    for (Vec& r : a)
      for (double& x : r) x = std::max(0.0, x);
    return a;
  }

  ModelConfig c_;
  std::map<std::string, Vec> tensors_;
  std::map<std::string, std::vector<int64_t>> shapes_;
};

struct Case {
  std::string model_type, tokenizer, hidden_act;
  DType dtype;
  int shards;
  double eps;
};
// What gtest (and so ctest's test list) prints for a parameter.
void PrintTo(const Case& k, std::ostream* os) {
  *os << k.model_type << ", " << k.shards << " shard(s)";
}

// Writes a *ForSequenceClassification checkpoint of `k` with `labels` labels and random biases
// and LayerNorms, using `k`'s fixture tokenizer; returns its config.
ModelConfig WriteCase(const Case& k, const std::string& dir, int64_t labels) {
  ModelConfig c = testing::ConfigOfShape(k.model_type, 32, 2, 4, 48);
  c.layer_norm_eps = k.eps;
  c.hidden_act = k.hidden_act;
  for (int64_t i = 0; i < labels; ++i) c.id2label.push_back("class-" + std::to_string(i));
  testing::CheckpointLayout layout;
  layout.dtype = k.dtype;
  layout.num_labels = labels;
  layout.shards = k.shards;
  layout.weight_std = 0.3f;
  layout.bias_std = 0.2f;
  return testing::WriteFixtureModel(dir, c, k.tokenizer, 64, layout, 77);
}

// WriteCase into `dir`, then LoadBaseModel of it; null (and a failure) when it does not load.
std::unique_ptr<BaseModel> LoadCase(const Case& k, const std::string& dir, int64_t labels) {
  WriteCase(k, dir, labels);
  absl::StatusOr<std::unique_ptr<BaseModel>> model = LoadBaseModel(dir);
  EXPECT_TRUE(model.ok()) << model.status();
  return model.ok() ? *std::move(model) : nullptr;
}

class ArchitectureTest : public ::testing::TestWithParam<Case> {};

TEST_P(ArchitectureTest, LogitsMatchTheEquationsOnTheFileWeights) {
  const Case& k = GetParam();
  testing::TempDir tmp;
  const ModelConfig written = WriteCase(k, tmp.path(), 3);
  if (k.shards > 1) {
    ASSERT_TRUE(fs::exists(tmp / "model.safetensors.index.json"));
    ASSERT_FALSE(fs::exists(tmp / "model.safetensors"));
  }
  auto model = LoadBaseModel(tmp.path());
  ASSERT_TRUE(model.ok()) << model.status();
  BaseModel& m = **model;
  ASSERT_NE(m.head, nullptr) << "a *ForSequenceClassification checkpoint has a head";
  EXPECT_EQ(m.head_labels, written.id2label);
  EXPECT_EQ(m.max_length, 64);

  Reference ref(tmp.path(), m.config);
  for (auto [a, b] : {std::pair<std::string, std::string>{"Hello, World! Café 中国", ""},
                      {"What is this?", "It is a test, I'm sure."}}) {
    std::optional<absl::string_view> pair;
    if (!b.empty()) pair = b;
    auto e = m.tokenizer->Encode(a, pair, m.max_length);
    ASSERT_TRUE(e.ok());
    const int64_t n = static_cast<int64_t>(e->input_ids.size());
    torch::Tensor logits;
    {
      c10::InferenceMode guard;
      torch::Tensor ids = torch::tensor(e->input_ids, torch::kInt64).view({1, n});
      torch::Tensor types = torch::tensor(e->token_type_ids, torch::kInt64).view({1, n});
      logits = m.head->Head(
          m.backbone->forward(ids, torch::ones({1, n}, torch::kInt64), types, nullptr));
    }
    const Vec want = ref.Logits(e->input_ids, e->token_type_ids);
    ASSERT_EQ(logits.size(1), 3);
    double spread = 0;
    for (int64_t i = 0; i < 3; ++i) {
      EXPECT_NEAR(logits[0][i].item<double>(), want[static_cast<size_t>(i)], 1e-4)
          << k.model_type << " label " << i << " text \"" << a << "\"";
      spread = std::max(spread, std::abs(want[static_cast<size_t>(i)] - want[0]));
    }
    EXPECT_GT(spread, 1e-2) << "logits should differ between labels";
  }
}

TEST_P(ArchitectureTest, PaddedBatchRowsEqualRowsAlone) {
  const Case& k = GetParam();
  testing::TempDir tmp;
  std::unique_ptr<BaseModel> model = LoadCase(k, tmp.path(), 2);
  ASSERT_NE(model, nullptr);
  BaseModel& m = *model;
  auto longer = m.tokenizer->Encode("a somewhat longer input with many words", std::nullopt, 64);
  auto shorter = m.tokenizer->Encode("short one", std::nullopt, 64);
  const int64_t n = static_cast<int64_t>(longer->input_ids.size()),
                s = static_cast<int64_t>(shorter->input_ids.size());
  ASSERT_LT(s, n);
  std::vector<int64_t> ids = longer->input_ids, mask(2 * n, 0);
  ids.resize(2 * n, m.tokenizer->pad_id());
  std::copy(shorter->input_ids.begin(), shorter->input_ids.end(), ids.begin() + n);
  std::fill(mask.begin(), mask.begin() + n, 1);
  std::fill(mask.begin() + n, mask.begin() + n + s, 1);
  c10::InferenceMode guard;
  torch::Tensor batch =
      m.backbone->forward(torch::tensor(ids).view({2, n}), torch::tensor(mask).view({2, n}),
                          torch::zeros({2, n}, torch::kInt64), nullptr);
  torch::Tensor alone = m.backbone->forward(torch::tensor(shorter->input_ids).view({1, s}),
                                            torch::ones({1, s}, torch::kInt64),
                                            torch::zeros({1, s}, torch::kInt64), nullptr);
  EXPECT_TRUE(torch::allclose(batch[1], alone[0], 1e-5, 1e-5)) << k.model_type;
}

// A mask that is not right padding (holes, or left padding) goes through the additive-mask path.
TEST_P(ArchitectureTest, MaskWithHolesMatchesTheEquations) {
  const Case& k = GetParam();
  testing::TempDir tmp;
  std::unique_ptr<BaseModel> model = LoadCase(k, tmp.path(), 3);
  ASSERT_NE(model, nullptr);
  BaseModel& m = *model;
  Reference ref(tmp.path(), m.config);
  auto e = m.tokenizer->Encode("holes in the mask, then more words to attend", std::nullopt, 64);
  ASSERT_TRUE(e.ok());
  const int64_t n = static_cast<int64_t>(e->input_ids.size());
  std::vector<int64_t> attend(static_cast<size_t>(n), 1);
  for (int64_t j = 2; j < n; j += 3) attend[static_cast<size_t>(j)] = 0;
  // Two rows: the holed mask, and the same row fully attended (the right-padding path).
  std::vector<int64_t> ids = e->input_ids, mask = attend;
  ids.insert(ids.end(), e->input_ids.begin(), e->input_ids.end());
  mask.resize(2 * static_cast<size_t>(n), 1);
  torch::Tensor logits;
  {
    c10::InferenceMode guard;
    logits = m.head->Head(m.backbone->forward(torch::tensor(ids).view({2, n}),
                                              torch::tensor(mask).view({2, n}),
                                              torch::zeros({2, n}, torch::kInt64), nullptr));
  }
  const Vec holed = ref.Logits(e->input_ids, e->token_type_ids, attend);
  const Vec full = ref.Logits(e->input_ids, e->token_type_ids);
  double differ = 0;
  for (int64_t i = 0; i < 3; ++i) {
    EXPECT_NEAR(logits[0][i].item<double>(), holed[static_cast<size_t>(i)], 1e-4) << i;
    EXPECT_NEAR(logits[1][i].item<double>(), full[static_cast<size_t>(i)], 1e-4) << i;
    differ =
        std::max(differ, std::abs(holed[static_cast<size_t>(i)] - full[static_cast<size_t>(i)]));
  }
  EXPECT_GT(differ, 1e-3) << "the holes should change the logits";
}

INSTANTIATE_TEST_SUITE_P(
    HuggingFaceLayouts, ArchitectureTest,
    ::testing::Values(Case{"bert", "bert-uncased", "gelu", DType::kF32, 1, 1e-12},
                      Case{"bert", "bert-cased", "gelu_new", DType::kBF16, 2, 1e-12},
                      Case{"roberta", "roberta", "gelu", DType::kF16, 3, 1e-5},
                      Case{"distilbert", "bert-uncased", "relu", DType::kF32, 2, 1e-12}),
    [](const auto& info) {
      return info.param.model_type + "_" + std::string(DTypeName(info.param.dtype)) + "_" +
             std::to_string(info.param.shards) + "shard";
    });

TEST(ArchitectureErrorsTest, UnsupportedArchitectureAndPickleCheckpointsAreNamed) {
  testing::TempDir tmp;
  testing::WriteFile(tmp / "config.json", R"({"model_type": "gpt2", "vocab_size": 10})");
  auto gpt2 = LoadBaseModel(tmp.path());
  ASSERT_FALSE(gpt2.ok());
  EXPECT_NE(gpt2.status().message().find("gpt2"), std::string::npos) << gpt2.status();
  EXPECT_NE(gpt2.status().message().find("roberta"), std::string::npos) << gpt2.status();

  testing::TempDir bin;
  testing::WriteTinyModel(bin.path());
  fs::rename(bin / "model.safetensors", bin / "pytorch_model.bin");
  auto pickle = LoadBaseModel(bin.path());
  ASSERT_FALSE(pickle.ok());
  EXPECT_NE(pickle.status().message().find("pytorch_model.bin"), std::string::npos);

  testing::TempDir sharded;
  Case k{"bert", "bert-uncased", "gelu", DType::kF32, 2, 1e-12};
  WriteCase(k, sharded.path(), 2);
  fs::remove(sharded / "model-00002-of-00002.safetensors");
  auto missing = LoadBaseModel(sharded.path());
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(missing.status().message().find("model-00002-of-00002.safetensors"), std::string::npos)
      << missing.status();
}

}  // namespace
}  // namespace loracle::model
