#include "server/model/dropout.h"

#include <gtest/gtest.h>

#include <cmath>

#include "server/model/bert_encoder.h"
#include "server/training/losses.h"
#include "tests/support/test_util.h"

namespace loracle::model {
namespace {

ModelConfig Small() {
  ModelConfig c = testing::ConfigOfShape("bert", 16, 2, 2, 32);
  c.vocab_size = 20;
  c.max_position_embeddings = 16;
  return c;
}

struct Fixture {
  BertEncoder encoder{nullptr};
  LoraMember member;
};

Fixture Make(uint64_t seed) {
  torch::manual_seed(seed);
  Fixture f;
  f.encoder = BertEncoder(Small());
  torch::NoGradGuard g;
  for (auto& p : f.encoder->named_parameters())
    p.value().copy_(torch::randn(p.value().sizes()) * 0.3);
  f.member.layers.resize(f.encoder->linear_names().size());
  for (size_t i = 0; i < f.member.layers.size(); ++i) {
    const auto& lin = f.encoder->linear(static_cast<int>(i));
    f.member.layers[i] = {torch::randn({4, lin->in_features()}) * 0.3,
                          torch::randn({lin->out_features(), 4}) * 0.3, 1.0};
  }
  f.member.classifier_weight = torch::randn({2, 16});
  f.member.classifier_bias = torch::randn({2});
  return f;
}

torch::Tensor Ids(int64_t rows) {
  return torch::tensor({2, 5, 7, 3, 9, 11}, torch::kInt64).repeat({rows, 1});
}

torch::Tensor Forward(Fixture& f, int64_t rows, const DropoutSpec* spec,
                      std::vector<uint64_t> seeds) {
  c10::InferenceMode guard;
  LoraRouting routing = {{0, rows, &f.member, spec, std::move(seeds)}};
  return f.encoder->forward(Ids(rows), torch::ones({rows, 6}, torch::kInt64),
                            torch::zeros({rows, 6}, torch::kInt64), &routing);
}

TEST(DropoutTest, LoraDropoutMaskStatisticsMatchTheRate) {
  c10::InferenceMode guard;
  for (double p : {0.1, 0.5}) {
    double dropped = 0, total = 0;
    for (uint64_t seed = 0; seed < 200; ++seed) {
      auto [ma, mb] = LoraDropoutMasks(seed, 3, 256, 128, p);
      ASSERT_EQ(ma.size(0), 256);
      ASSERT_EQ(mb.size(0), 128);
      // Entries are exactly 0 or 1/(1-p) (inverted dropout).
      auto kept = ma.ne(0);
      EXPECT_TRUE(torch::allclose(ma.masked_select(kept),
                                  torch::full({kept.sum().item<int64_t>()}, 1.0 / (1.0 - p))));
      dropped += ma.eq(0).sum().item<double>() + mb.eq(0).sum().item<double>();
      total += 256 + 128;
    }
    EXPECT_NEAR(dropped / total, p, 0.01) << "p = " << p;
  }
}

TEST(DropoutTest, LoraDropoutIsDiagMbTimesBATimesDiagMaNeverTheRank) {
  // Row output with LORA_DROPOUT == base model whose every adapted W is replaced by
  // W + s * diag(m_B) B A diag(m_A), with the masks of that row: the rank is untouched.
  Fixture f = Make(1);
  DropoutSpec spec{DropoutMethod::kLoraDropout, 0.4};
  torch::Tensor dropped = Forward(f, 1, &spec, {77});
  torch::Tensor plain = Forward(f, 1, nullptr, {});
  EXPECT_FALSE(torch::allclose(dropped, plain, 1e-4, 1e-4));
  {
    torch::NoGradGuard g;
    for (size_t i = 0; i < f.member.layers.size(); ++i) {
      const LoraPair& p = f.member.layers[i];
      auto& lin = f.encoder->linear(static_cast<int>(i));
      auto [ma, mb] =
          LoraDropoutMasks(77, static_cast<int>(i), lin->in_features(), lin->out_features(), 0.4);
      lin->weight.add_(torch::diag(mb).mm(p.b).mm(p.a).mm(torch::diag(ma)), p.scaling);
    }
  }
  c10::InferenceMode guard;
  torch::Tensor merged = f.encoder->forward(Ids(1), torch::ones({1, 6}, torch::kInt64),
                                            torch::zeros({1, 6}, torch::kInt64), nullptr);
  EXPECT_TRUE(torch::allclose(dropped, merged, 1e-5, 1e-5));
}

TEST(DropoutTest, SeedsAreReproducibleAndIndependentOfTheBatch) {
  Fixture f = Make(2);
  for (DropoutMethod m :
       {DropoutMethod::kInput, DropoutMethod::kLoraDropout, DropoutMethod::kHiddenKey}) {
    DropoutSpec spec{m, 0.3, 0.3, 0.3};
    torch::Tensor batch = Forward(f, 3, &spec, {10, 11, 12});
    torch::Tensor again = Forward(f, 3, &spec, {10, 11, 12});
    EXPECT_TRUE(torch::equal(batch, again)) << DropoutMethodName(m);
    EXPECT_FALSE(torch::allclose(batch[0], batch[1], 1e-4, 1e-4))
        << "different seeds, different masks";
    torch::Tensor alone = Forward(f, 1, &spec, {11});
    EXPECT_TRUE(torch::allclose(batch[1], alone[0], 1e-5, 1e-5)) << DropoutMethodName(m);
  }
}

TEST(ForwardInPartsTest, PartsOnThreadsEqualOneForwardWithGroupsCutAtTheEdges) {
  Fixture f = Make(4);
  Fixture g = Make(5);  // a second member: its own LoRA weights and head
  DropoutSpec lora{DropoutMethod::kLoraDropout, 0.3};
  DropoutSpec hiddenkey{DropoutMethod::kHiddenKey, 0.3, 0.3, 0.3};
  // Seven rows: 3 plain rows of f, 3 LoRA-dropout rows of g, 1 HiddenKey row of f; with 3 parts
  // (rows 0-1, 2-3, 4-6) the first two groups are each cut in two.
  const LoraRouting routing = {{0, 3, &f.member, nullptr, {}},
                               {3, 6, &g.member, &lora, {21, 22, 23}},
                               {6, 7, &f.member, &hiddenkey, {31}}};
  torch::Tensor ids = Ids(7);
  torch::Tensor mask = torch::ones({7, 6}, torch::kInt64);
  mask[1].narrow(0, 4, 2).fill_(0);  // a right-padded row
  mask[5][2] = 0;                    // a row with a hole
  const torch::Tensor types = torch::zeros({7, 6}, torch::kInt64);
  c10::InferenceMode guard;
  const torch::Tensor one = f.encoder->forward(ids, mask, types, &routing);
  for (int parts : {1, 2, 3, 7, 9}) {
    absl::StatusOr<torch::Tensor> split =
        ForwardInParts(*f.encoder, ids, mask, types, routing, parts);
    ASSERT_TRUE(split.ok()) << split.status();
    ASSERT_EQ(split->sizes(), one.sizes());
    EXPECT_TRUE(torch::allclose(*split, one, 1e-5, 1e-6)) << parts << " parts";
  }
  const LoraRouting middle = SliceRouting(routing, 2, 5);
  ASSERT_EQ(middle.size(), 2u);
  EXPECT_EQ(middle[0].begin, 0);
  EXPECT_EQ(middle[0].end, 1);
  EXPECT_EQ(middle[1].begin, 1);
  EXPECT_EQ(middle[1].end, 3);
  EXPECT_EQ(middle[1].row_seeds, (std::vector<uint64_t>{21, 22}));
  EXPECT_TRUE(middle[1].dropout_on());
}

TEST(DropoutTest, ZeroRateOrNoSeedsIsExactlyTheDeterministicModel) {
  Fixture f = Make(3);
  DropoutSpec zero{DropoutMethod::kLoraDropout, 0.0};
  DropoutSpec some{DropoutMethod::kLoraDropout, 0.5};
  torch::Tensor plain = Forward(f, 2, nullptr, {});
  EXPECT_TRUE(torch::equal(Forward(f, 2, &zero, {1, 2}), plain));
  EXPECT_TRUE(torch::equal(Forward(f, 2, &some, {}), plain));
}

TEST(DropoutTest, DropKeyNeverYieldsNaNEvenWhenAlmostEveryKeyIsDropped) {
  Fixture f = Make(4);
  DropoutSpec spec{DropoutMethod::kHiddenKey, 0, /*dropkey_rate=*/0.99, /*hiddencut_rate=*/0.5};
  c10::InferenceMode guard;
  // Padded rows too: only 2 of 6 keys are real in row 1.
  torch::Tensor mask =
      torch::tensor({1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0}, torch::kInt64).view({2, 6});
  for (uint64_t seed = 0; seed < 50; ++seed) {
    LoraRouting routing = {{0, 2, &f.member, &spec, {seed, seed + 1000}}};
    torch::Tensor out =
        f.encoder->forward(Ids(2), mask, torch::zeros({2, 6}, torch::kInt64), &routing);
    ASSERT_TRUE(torch::isfinite(out).all().item<bool>()) << "seed " << seed;
  }
}

TEST(DropoutTest, SpecValidationAndNames) {
  EXPECT_TRUE(ValidateDropoutSpec({DropoutMethod::kLoraDropout, 0.1}).ok());
  EXPECT_FALSE(ValidateDropoutSpec({DropoutMethod::kLoraDropout, 1.0}).ok());
  EXPECT_FALSE(ValidateDropoutSpec({DropoutMethod::kHiddenKey, 0, -0.1}).ok());
  EXPECT_EQ(*ParseDropoutMethod("HIDDENKEY"), DropoutMethod::kHiddenKey);
  EXPECT_EQ(ParseDropoutMethod("MAGIC").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_FALSE((DropoutSpec{DropoutMethod::kHiddenKey, 0.5, 0, 0}.active()))
      << "HIDDENKEY ignores `rate`";
  EXPECT_NE(MixSeed(1, 2, 3), MixSeed(1, 3, 2));
}

}  // namespace
}  // namespace loracle::model

namespace loracle::model {
namespace {

// Training time: the same seeded masks, with autograd. Two forwards of a batch under independent
// masks give different logits; HiddenKey's loss (CE + symmetric KL) sends gradients into the LoRA
// factors only, never into the frozen base.
TEST(DropoutTrainingTest, MaskedForwardsTrainLoraWithTheKlConsistencyLoss) {
  for (DropoutMethod method :
       {DropoutMethod::kLoraDropout, DropoutMethod::kHiddenKey, DropoutMethod::kInput}) {
    Fixture f = Make(21);
    for (LoraPair& p : f.member.layers) {
      p.a = p.a.clone().set_requires_grad(true);
      p.b = p.b.clone().set_requires_grad(true);
    }
    for (auto& p : f.encoder->parameters()) p.set_requires_grad(false);
    DropoutSpec spec;
    spec.method = method;
    spec.rate = 0.3;
    spec.dropkey_rate = 0.2;
    spec.hiddencut_rate = 0.2;
    const int64_t rows = 4;
    auto forward = [&](uint64_t base_seed) {
      std::vector<uint64_t> seeds;
      for (int64_t r = 0; r < rows; ++r) seeds.push_back(MixSeed(base_seed, r, 0));
      LoraRouting routing = {{0, rows, &f.member, &spec, seeds}};
      torch::Tensor feats = f.encoder->forward(Ids(rows), torch::ones({rows, 6}, torch::kInt64),
                                               torch::zeros({rows, 6}, torch::kInt64), &routing);
      return BackboneImpl::Classify(feats, routing)[0];
    };
    torch::Tensor a = forward(1), b = forward(2);
    EXPECT_FALSE(torch::allclose(a, b)) << DropoutMethodName(method);
    torch::Tensor labels = torch::tensor({0, 1, 0, 1}, torch::kInt64);
    torch::Tensor kl = training::SymmetricKl(a, b);
    EXPECT_GT(kl.item<double>(), 0.0);
    EXPECT_NEAR(training::SymmetricKl(a, a).item<double>(), 0.0, 1e-12);
    training::HiddenKeyLoss(a, b, labels, 1.0).backward();
    for (const LoraPair& p : f.member.layers) {
      ASSERT_TRUE(p.a.grad().defined());
      EXPECT_GT(p.a.grad().abs().sum().item<double>(), 0.0) << DropoutMethodName(method);
      EXPECT_GT(p.b.grad().abs().sum().item<double>(), 0.0);
    }
    for (auto& p : f.encoder->parameters()) EXPECT_FALSE(p.grad().defined());
  }
}

// KL(p||q) + KL(q||p) computed the long way, for one pair of rows.
TEST(DropoutTrainingTest, SymmetricKlMatchesTheDefinition) {
  torch::Tensor a = torch::tensor({{1.0, 0.0, -1.0}}), b = torch::tensor({{0.2, 0.5, 0.1}});
  torch::Tensor p = torch::softmax(a, -1)[0], q = torch::softmax(b, -1)[0];
  double want = 0;
  for (int i = 0; i < 3; ++i) {
    const double pi = p[i].item<double>(), qi = q[i].item<double>();
    want += 0.5 * (pi * std::log(pi / qi) + qi * std::log(qi / pi));
  }
  EXPECT_NEAR(training::SymmetricKl(a, b).item<double>(), want, 1e-6);
  EXPECT_NEAR(training::SymmetricKl(b, a).item<double>(), want, 1e-6);
}

}  // namespace
}  // namespace loracle::model
