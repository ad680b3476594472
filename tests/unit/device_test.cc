// --device / --dtype: the same model, adapters, sampled ensembles and training on every placement
// this machine offers, checked against the CPU float32 reference. On a CPU-only LibTorch the
// placements are cpu/bfloat16; with a GPU the same tests also run cuda/float32, cuda/bfloat16 and
// cuda/float16 (tests/bench/README.md "GPU").

#include <gtest/gtest.h>
#include <torch/cuda.h>
#include <torch/torch.h>

#include <random>
#include <string>
#include <vector>

#include "server/adapters/adapter_files.h"
#include "server/adapters/adapter_weights.h"
#include "server/model/checkpoint.h"
#include "server/model/cpu_runtime.h"
#include "server/model/lora.h"
#include "server/model/placement.h"
#include "server/serving/ensemble_runner.h"
#include "server/training/trainer.h"
#include "tests/support/test_util.h"

namespace loracle {
namespace {

using model::Placement;
using model::ResolvePlacement;

TEST(PlacementTest, ParsesDevicesAndTypes) {
  absl::StatusOr<Placement> p = ResolvePlacement("cpu", "float32");
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_TRUE(p->on_cpu());
  EXPECT_EQ(p->dtype, torch::kFloat32);
  EXPECT_EQ(p->DeviceName(), "cpu");
  p = ResolvePlacement("cpu", "bfloat16");
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->DTypeName(), "bfloat16");

  for (const auto& [device, dtype] :
       std::vector<std::pair<std::string, std::string>>{{"gpu", "float32"},
                                                        {"cuda:", "float32"},
                                                        {"cuda:-1", "float32"},
                                                        {"cuda:x", "float32"},
                                                        {"CPU", "float32"},
                                                        {"cpu", "fp32"},
                                                        {"cpu", "float64"},
                                                        {"cpu", ""}}) {
    absl::StatusOr<Placement> bad = ResolvePlacement(device, dtype);
    EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument) << device << " " << dtype;
  }
  absl::StatusOr<Placement> half = ResolvePlacement("cpu", "float16");
  EXPECT_EQ(half.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(half.status().message().find("bfloat16"), std::string::npos) << half.status();
}

TEST(PlacementTest, AutoPicksBfloat16OnlyWhereTheCpuMultipliesItNatively) {
  model::CpuBf16Support cpu;
  Placement p = model::AutoCpuPlacement(cpu);
  EXPECT_EQ(p.dtype, torch::kFloat32);
  EXPECT_NE(p.dtype_reason.find("no native bfloat16"), std::string::npos) << p.dtype_reason;
  cpu.avx512_bf16 = true;  // the instructions, but the OS does not save ZMM state
  EXPECT_EQ(model::AutoCpuPlacement(cpu).dtype, torch::kFloat32);
  cpu.os_avx512 = true;
  p = model::AutoCpuPlacement(cpu);
  EXPECT_EQ(p.dtype, torch::kBFloat16);
  EXPECT_NE(p.dtype_reason.find("AVX512_BF16"), std::string::npos) << p.dtype_reason;
  cpu = {};
  cpu.amx_bf16 = cpu.os_amx = true;
  p = model::AutoCpuPlacement(cpu);
  EXPECT_EQ(p.dtype, torch::kBFloat16);
  EXPECT_NE(p.dtype_reason.find("AMX-BF16"), std::string::npos) << p.dtype_reason;

  // This machine: what it detects decides, and the reason says so.
  absl::StatusOr<Placement> here = ResolvePlacement("cpu", "auto");
  ASSERT_TRUE(here.ok()) << here.status();
  EXPECT_EQ(here->dtype, model::DetectCpuBf16().native() ? torch::kBFloat16 : torch::kFloat32);
  EXPECT_NE(here->dtype_reason.find("--dtype=auto"), std::string::npos);
  EXPECT_EQ(ResolvePlacement("cpu", "float32")->dtype_reason, "--dtype=float32");
}

TEST(PlacementTest, Int8IsACpuFloat32ModeWithAnEngine) {
  EXPECT_EQ(ResolvePlacement("cpu", "float32", "int4").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ResolvePlacement("cpu", "bfloat16", "int8").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ResolvePlacement("cuda", "float32", "int8").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_FALSE(ResolvePlacement("cpu", "float32")->int8);
  absl::StatusOr<Placement> p = ResolvePlacement("cpu", "auto", "int8");
  if (model::Int8Engine().empty()) {
    EXPECT_EQ(p.status().code(), absl::StatusCode::kFailedPrecondition);
    GTEST_SKIP() << "no int8 engine in this LibTorch";
  }
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_TRUE(p->int8);
  EXPECT_EQ(p->dtype, torch::kFloat32);
  EXPECT_EQ(p->QuantizeName(), "int8");
  EXPECT_NE(p->dtype_reason.find(model::Int8Engine()), std::string::npos) << p->dtype_reason;
}

TEST(PlacementTest, CudaFailsClearlyWithoutAGpuAndResolvesWithOne) {
  absl::StatusOr<Placement> p = ResolvePlacement("cuda", "bfloat16");
  if (!torch::cuda::is_available()) {
    EXPECT_EQ(p.status().code(), absl::StatusCode::kFailedPrecondition);
    EXPECT_NE(p.status().message().find("--device=cpu"), std::string::npos) << p.status();
    EXPECT_EQ(ResolvePlacement("cuda:1", "float16").status().code(),
              absl::StatusCode::kFailedPrecondition);
    return;
  }
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_TRUE(p->device.is_cuda());
  EXPECT_EQ(p->DeviceName(), "cuda:0");
  EXPECT_TRUE(ResolvePlacement("cuda:0", "float16").ok());
  const std::string past = "cuda:" + std::to_string(torch::cuda::device_count());
  EXPECT_EQ(ResolvePlacement(past, "float32").status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(PlacementTest, LowestFiniteIsFiniteInItsType) {
  for (torch::ScalarType t : {torch::kFloat32, torch::kBFloat16, torch::kFloat16}) {
    const torch::Tensor v = torch::full({1}, model::LowestFinite(t), torch::kFloat32).to(t);
    EXPECT_TRUE(torch::isfinite(v).all().item<bool>()) << t;
    EXPECT_LT(v.item<float>(), -6e4) << t;
  }
}

// Every placement to check against cpu/float32.
std::vector<std::pair<std::string, std::string>> Placements() {
  // "int8": cpu/float32 with --quantize=int8, where LibTorch has an int8 engine.
  std::vector<std::pair<std::string, std::string>> out = {{"cpu", "bfloat16"}};
  if (!model::Int8Engine().empty()) out.emplace_back("cpu", "int8");
  if (torch::cuda::is_available()) {
    out.insert(out.end(), {{"cuda", "float32"}, {"cuda", "bfloat16"}, {"cuda", "float16"}});
  }
  return out;
}

class DeviceTest : public ::testing::TestWithParam<std::pair<std::string, std::string>> {
 protected:
  void SetUp() override {
    model::SetComputeThreads({2, 1});
    testing::WriteTinyModel(model_dir_.path(), 7);
    const bool int8 = GetParam().second == "int8";
    absl::StatusOr<Placement> placement = ResolvePlacement(
        GetParam().first, int8 ? "float32" : GetParam().second, int8 ? "int8" : "none");
    ASSERT_TRUE(placement.ok()) << placement.status();
    placement_ = *placement;
    auto reference = model::LoadBaseModel(model_dir_.path());
    ASSERT_TRUE(reference.ok()) << reference.status();
    reference_ = *std::move(reference);
    auto base = model::LoadBaseModel(model_dir_.path(), placement_);
    ASSERT_TRUE(base.ok()) << base.status();
    base_ = *std::move(base);

    // One adapter per dropout family that samples on the device.
    const std::vector<std::pair<std::string, model::DropoutSpec>> families = {
        {"lora", {model::DropoutMethod::kLoraDropout, 0.2, 0, 0}},
        {"input", {model::DropoutMethod::kInput, 0.2, 0, 0}},
        {"hiddenkey", {model::DropoutMethod::kHiddenKey, 0, 0.2, 0.2}}};
    for (const auto& [name, dropout] : families) {
      adapters::RandomAdapterSpec spec = testing::TinyAdapterSpec({"ham", "spam", "other"}, 2, 5);
      spec.lora.target_modules = {"query", "key", "value", "dense"};
      spec.serving.dropout = dropout;
      const std::string dir = adapter_dir_.path() + "/" + name;
      ASSERT_TRUE(adapters::WriteRandomAdapter(dir, testing::TinyConfig(), spec).ok());
      auto on_device = adapters::LoadAdapter(dir, name, 1, *base_);
      ASSERT_TRUE(on_device.ok()) << on_device.status();
      adapters_.push_back(*std::move(on_device));
      auto on_cpu = adapters::LoadAdapter(dir, name, 1, *reference_);
      ASSERT_TRUE(on_cpu.ok()) << on_cpu.status();
      reference_adapters_.push_back(*std::move(on_cpu));
    }
  }

  // Tolerance on probabilities against cpu/float32: float32 differs only in summation order;
  // bfloat16 keeps 8 bits of mantissa, float16 11; int8 rounds weights to 1/254 of each row's
  // largest and activations to 1/255 of each call's range, which dot products of 32 terms (this
  // tiny model's width) average out less than real models' (tests/bench/accuracy_guard.py bounds
  // it on real data: max |dp| <= 0.02).
  double Tolerance() const {
    if (placement_.int8) return 0.1;
    return placement_.dtype == torch::kFloat32 ? 1e-4 : 0.06;
  }

  // Every pass of every input of one batch: M members x N samples of the adapters in `adapters`.
  static std::vector<std::vector<double>> Run(
      const model::BaseModel& base,
      const std::vector<std::shared_ptr<const adapters::Adapter>>& adapters) {
    auto runner = serving::EnsembleRunner::Create({&base, 2, true, nullptr});
    EXPECT_TRUE(runner.ok()) << runner.status();
    const std::vector<std::string> texts = {"free money now !", "please review the invoice",
                                            "hello , the meeting is at noon"};
    std::vector<serving::InferenceResult> results(adapters.size());
    std::vector<std::unique_ptr<serving::InferenceRequest>> batch;
    for (size_t a = 0; a < adapters.size(); ++a) {
      auto r = std::make_unique<serving::InferenceRequest>();
      r->adapter = adapters[a];
      r->members = 2;
      r->mc_samples = 4;
      r->seed = 11 + a;
      for (const std::string& t : texts) {
        r->inputs.push_back(*base.tokenizer->Encode(t, std::nullopt, base.max_length));
      }
      r->done = [out = &results[a]](absl::StatusOr<serving::InferenceResult> result) {
        ASSERT_TRUE(result.ok()) << result.status();
        *out = *std::move(result);
      };
      batch.push_back(std::move(r));
    }
    (*runner)->Run(std::move(batch));
    std::vector<std::vector<double>> passes;
    for (const serving::InferenceResult& r : results) {
      for (const serving::InputResult& in : r.inputs) {
        for (const auto& p : in.passes) passes.emplace_back(p.begin(), p.end());
      }
    }
    return passes;
  }

  testing::TempDir model_dir_, adapter_dir_;
  Placement placement_;
  std::unique_ptr<model::BaseModel> reference_, base_;
  std::vector<std::shared_ptr<const adapters::Adapter>> adapters_, reference_adapters_;
};

TEST_P(DeviceTest, WeightsLiveOnTheDeviceAndQueryKeyValueStayFused) {
  const model::BackboneImpl& encoder = *base_->backbone;
  EXPECT_EQ(encoder.device(), placement_.device);
  EXPECT_EQ(encoder.dtype(), placement_.dtype);
  int64_t parameters = 0;
  for (const auto& p : base_->backbone->parameters()) {
    EXPECT_EQ(p.device(), placement_.device);
    EXPECT_EQ(p.scalar_type(), placement_.dtype);
    EXPECT_FALSE(p.requires_grad());
    parameters += p.numel();
  }
  EXPECT_EQ(parameters, reference_->num_parameters);
  // query, key and value are consecutive blocks of one weight, so one GEMM computes all three.
  const model::LoraLinear& q = encoder.linear(0);
  const model::LoraLinear& v = encoder.linear(2);
  EXPECT_EQ(encoder.linear_names()[0], "encoder.layer.0.attention.self.query");
  EXPECT_EQ(q->weight.storage().data(), v->weight.storage().data());
  EXPECT_EQ(v->weight.storage_offset(), 2 * q->weight.numel());
  for (const auto& a : adapters_) {
    for (const model::LoraMember& m : adapters::MembersOf(*a)) {
      EXPECT_EQ(m.classifier_weight.device(), placement_.device);
      EXPECT_EQ(m.classifier_weight.scalar_type(), placement_.dtype);
      EXPECT_EQ(m.layers[0].a.device(), placement_.device);
    }
  }
}

TEST_P(DeviceTest, SampledEnsemblesMatchTheCpuFloat32Reference) {
  // Dropout masks are drawn on the host from the same seeds: every sampled pass corresponds to
  // the reference's, whatever the device.
  const std::vector<std::vector<double>> want = Run(*reference_, reference_adapters_);
  const std::vector<std::vector<double>> got = Run(*base_, adapters_);
  ASSERT_EQ(got.size(), want.size());
  ASSERT_EQ(got.size(), 3u * 3 * 2 * 4);  // adapters x inputs x members x samples
  double worst = 0;
  for (size_t k = 0; k < got.size(); ++k) {
    ASSERT_EQ(got[k].size(), want[k].size());
    for (size_t c = 0; c < got[k].size(); ++c) {
      EXPECT_TRUE(std::isfinite(got[k][c]));
      worst = std::max(worst, std::abs(got[k][c] - want[k][c]));
    }
  }
  EXPECT_LE(worst, Tolerance());
  if (placement_.int8) {
    EXPECT_GT(worst, 1e-6) << "the int8 products did not run";
  }
  RecordProperty("max_abs_probability_difference", std::to_string(worst));
  // The passes of one input differ (the masks took effect) in both.
  EXPECT_NE(want[0], want[1]);
  EXPECT_GT(std::abs(got[0][0] - got[1][0]) + std::abs(got[0][1] - got[1][1]), 0);
}

TEST_P(DeviceTest, TrainsOnTheDeviceAndSavesFloat32) {
  auto data = [&](int n, uint64_t seed) {
    training::EncodedData d;
    for (const auto& [text, label] : testing::SpamHamTexts(n, seed)) {
      d.inputs.push_back(*base_->tokenizer->Encode(text, std::nullopt, 32));
      d.labels.push_back(label);
    }
    return d;
  };
  const training::EncodedData train = data(64, 4), validation = data(32, 5);
  training::TrainerOptions o;
  o.lora.rank = 4;
  o.lora.lora_alpha = 8;
  o.members = 2;
  o.mc_samples = 2;
  o.dropout = {model::DropoutMethod::kLoraDropout, 0.1, 0, 0};
  o.epochs = 6;
  o.batch_size = 8;
  o.learning_rate = 1e-2;
  o.seed = 3;
  o.threads = 2;
  absl::StatusOr<training::TrainedMembers> trained =
      training::Trainer::Train(*base_, {"ham", "spam"}, train, validation, o, nullptr, nullptr);
  ASSERT_TRUE(trained.ok()) << trained.status();
  // Master weights stay float32 on the device whatever the base's type.
  for (const model::LoraMember& m : trained->members) {
    EXPECT_EQ(m.classifier_weight.device(), placement_.device);
    EXPECT_EQ(m.classifier_weight.scalar_type(), torch::kFloat32);
  }
  EXPECT_GE(trained->report.ensemble.accuracy, 0.9) << "a separable task";

  // Saved as PEFT's float32 files; loaded back on the device in its type.
  adapters::Adapter identity;
  identity.name = "trained";
  identity.version = 1;
  identity.serving.labels = {"ham", "spam"};
  identity.serving.members = 2;
  identity.lora = o.lora;
  const auto adapter = adapters::MakeAdapter(identity, trained->members);
  const std::string dir = adapter_dir_.path() + "/trained";
  ASSERT_TRUE(adapters::SaveAdapter(dir, *adapter, *base_).ok());
  auto loaded = adapters::LoadAdapter(dir, "trained", 1, *base_);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(adapters::MembersOf(**loaded)[0].layers[0].a.scalar_type(), placement_.dtype);
  auto on_cpu = adapters::LoadAdapter(dir, "trained", 1, *reference_);
  ASSERT_TRUE(on_cpu.ok()) << on_cpu.status();
  const auto got = Run(*base_, {*loaded});
  const auto want = Run(*reference_, {*on_cpu});
  ASSERT_EQ(got.size(), want.size());
  for (size_t k = 0; k < got.size(); ++k) {
    for (size_t c = 0; c < got[k].size(); ++c) EXPECT_NEAR(got[k][c], want[k][c], Tolerance());
  }
}

TEST_P(DeviceTest, BatchedAttentionEqualsRowByRowAttention) {
  // The GPU's attention (one batched product, additive masks) against the CPU's (row by row on
  // each row's own keys), both on cpu/float32, with DropKey masks and a left-padded row.
  const std::vector<std::vector<double>> row_by_row = Run(*reference_, reference_adapters_);
  reference_->backbone->set_batched_attention(true);
  const std::vector<std::vector<double>> batched = Run(*reference_, reference_adapters_);
  ASSERT_EQ(batched.size(), row_by_row.size());
  for (size_t k = 0; k < batched.size(); ++k) {
    for (size_t c = 0; c < batched[k].size(); ++c) {
      EXPECT_NEAR(batched[k][c], row_by_row[k][c], 1e-5) << k;
    }
  }
  torch::NoGradGuard no_grad;
  const torch::Tensor ids = torch::tensor({2, 7, 8, 9, 3, 0, 2, 7, 3}, torch::kInt64).view({3, 3});
  const torch::Tensor mask = torch::tensor({1, 1, 1, 1, 1, 0, 0, 1, 1}, torch::kInt64).view({3, 3});
  const torch::Tensor types = torch::zeros({3, 3}, torch::kInt64);
  const torch::Tensor a = reference_->backbone->forward(ids, mask, types, nullptr);
  reference_->backbone->set_batched_attention(false);
  const torch::Tensor b = reference_->backbone->forward(ids, mask, types, nullptr);
  EXPECT_TRUE(torch::allclose(a, b, 1e-5, 1e-5)) << (a - b).abs().max();
}

std::string PlacementName(
    const ::testing::TestParamInfo<std::pair<std::string, std::string>>& info) {
  return info.param.first + "_" + info.param.second;
}

INSTANTIATE_TEST_SUITE_P(Placements, DeviceTest, ::testing::ValuesIn(Placements()), PlacementName);

}  // namespace
}  // namespace loracle
