// loracle-device-bench: the serving forward on one placement (--device, --dtype), in-process.
//   loracle-device-bench FIXTURE_DIR [DEVICE=cpu] [DTYPE=float32] [MAX_BATCH=256] [JSON_OUT]
// FIXTURE_DIR is what loracle-bench-fixture writes (model/, adapters/ with a0..a63 and ens8).
// Prints, each the median of timed runs after warm-ups (the device synchronised around each):
//   gemm      the placement's own matrix-product rate: 4096^3 (GPU) or 1024^3 (CPU) in DTYPE
//   forward   base-model forwards of B x 128 tokens, B = 1, 2, 4 ... MAX_BATCH: tokens/s and the
//             achieved FLOP rate as a fraction of the gemm rate
//   ensemble  one 128-token request through the EnsembleRunner, K=8 (ens8: 8 members) vs K=1 (a0)
//   mixed     64 one-input requests in one batch, each on its own adapter (a0..a63) vs all on a0
// JSON_OUT (optional) gets the same figures.

#include <torch/cuda.h>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "server/adapters/adapter_weights.h"
#include "server/model/checkpoint.h"
#include "server/model/cpu_runtime.h"
#include "server/serving/ensemble_runner.h"

namespace {

using loracle::model::BaseModel;
using loracle::model::Placement;

void Sync(const Placement& p) {
  if (p.device.is_cuda()) torch::cuda::synchronize(p.device.index());
}

// Median seconds of `runs` calls after `warmup` untimed ones.
double MedianSeconds(const Placement& p, int warmup, int runs, const std::function<void()>& f) {
  for (int i = 0; i < warmup; ++i) f();
  Sync(p);
  std::vector<double> s;
  for (int i = 0; i < runs; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    f();
    Sync(p);
    s.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(s.begin(), s.end());
  return s[s.size() / 2];
}

std::shared_ptr<const loracle::adapters::Adapter> Load(const std::string& fixture,
                                                       const std::string& name,
                                                       const BaseModel& base) {
  auto a = loracle::adapters::LoadAdapter(fixture + "/adapters/" + name + "/1", name, 1, base);
  if (!a.ok()) {
    std::fprintf(stderr, "%s\n", a.status().ToString().c_str());
    std::exit(1);
  }
  return *std::move(a);
}

// Seconds for one EnsembleRunner::Run of `adapters.size()` one-input requests of 128 tokens.
double BatchSeconds(const BaseModel& base, loracle::serving::EnsembleRunner& runner,
                    const std::vector<std::shared_ptr<const loracle::adapters::Adapter>>& adapters,
                    int runs) {
  loracle::text::Encoding e;
  for (int t = 0; t < 128; ++t) {
    e.input_ids.push_back(5 + (t * 37) % 1000);
    e.token_type_ids.push_back(0);
  }
  return MedianSeconds(base.placement, 3, runs, [&] {
    std::vector<std::unique_ptr<loracle::serving::InferenceRequest>> batch;
    for (const auto& a : adapters) {
      auto r = std::make_unique<loracle::serving::InferenceRequest>();
      r->adapter = a;
      r->members = a->members;
      r->inputs.push_back(e);
      r->done = [](absl::StatusOr<loracle::serving::InferenceResult> result) {
        if (!result.ok()) {
          std::fprintf(stderr, "%s\n", result.status().ToString().c_str());
          std::exit(1);
        }
      };
      batch.push_back(std::move(r));
    }
    runner.Run(std::move(batch));
  });
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s FIXTURE_DIR [DEVICE] [DTYPE] [MAX_BATCH] [JSON_OUT]\n",
                 argv[0]);
    return 2;
  }
  const std::string fixture = argv[1];
  auto placement =
      loracle::model::ResolvePlacement(argc > 2 ? argv[2] : "cpu", argc > 3 ? argv[3] : "float32");
  if (!placement.ok()) {
    std::fprintf(stderr, "%s\n", placement.status().ToString().c_str());
    return 2;
  }
  const Placement& p = *placement;
  const int max_batch = argc > 4 ? std::atoi(argv[4]) : 256;
  loracle::model::KeepFreedMemory();
  loracle::model::SetComputeThreads({0, 1});
  auto loaded = loracle::model::LoadBaseModel(fixture + "/model", p);
  if (!loaded.ok()) {
    std::fprintf(stderr, "%s\n", loaded.status().ToString().c_str());
    return 1;
  }
  const BaseModel& base = **loaded;
  const loracle::model::ModelConfig& c = base.config;
  nlohmann::json out = {{"device", p.DeviceName()},
                        {"dtype", p.DTypeName()},
                        {"layers", c.num_hidden_layers},
                        {"hidden", c.hidden_size},
                        {"tokens", 128}};
  if (p.device.is_cuda()) {
    out["gpu"] = torch::cuda::device_count() > 0 ? "cuda" : "";
  }

  // The placement's GEMM rate.
  const int64_t n = p.on_cpu() ? 1024 : 4096;
  double gemm_flops = 0;
  {
    torch::NoGradGuard no_grad;
    const torch::Tensor a = torch::randn({n, n}).to(p.options());
    const torch::Tensor b = torch::randn({n, n}).to(p.options());
    torch::Tensor c_out = torch::empty({n, n}, p.options());
    const double s = MedianSeconds(p, 2, 10, [&] { torch::mm_out(c_out, a, b); });
    gemm_flops = 2.0 * n * n * n / s;
    std::printf("gemm %ld^3 %s: %.1f TFLOP/s\n", static_cast<long>(n), p.DTypeName().c_str(),
                gemm_flops / 1e12);
    out["gemm_tflops"] = gemm_flops / 1e12;
  }

  // Base forwards: FLOPs per token = layers x (2 x 12 h^2 linear + 4 x seq x h attention).
  const int64_t h = c.hidden_size, seq = 128;
  const double flops_per_token = static_cast<double>(c.num_hidden_layers) *
                                 (2.0 * (4 * h * h + 2 * h * c.intermediate_size) + 4.0 * seq * h);
  nlohmann::json forwards = nlohmann::json::array();
  for (int64_t rows = 1; rows <= max_batch; rows *= 2) {
    c10::InferenceMode guard;
    const torch::Tensor ids = torch::randint(5, 1000, {rows, seq}, torch::kInt64);
    const torch::Tensor mask = torch::ones({rows, seq}, torch::kInt64);
    const torch::Tensor types = torch::zeros({rows, seq}, torch::kInt64);
    loracle::model::Backbone encoder = base.backbone;
    const int runs = rows >= 64 && p.on_cpu() ? 3 : 10;
    const double s = MedianSeconds(
        p, 2, runs, [&] { encoder->forward(ids, mask, types, nullptr).to(torch::kCPU); });
    const double tokens_per_s = static_cast<double>(rows * seq) / s;
    const double fraction = tokens_per_s * flops_per_token / gemm_flops;
    std::printf("forward batch %4ld: %9.3f ms  %10.0f tokens/s  %.3f of the gemm rate\n",
                static_cast<long>(rows), s * 1e3, tokens_per_s, fraction);
    forwards.push_back({{"batch", rows},
                        {"ms", s * 1e3},
                        {"tokens_per_s", tokens_per_s},
                        {"fraction_of_gemm", fraction}});
  }
  out["forward"] = forwards;

  // Ensembles and mixed adapters through the EnsembleRunner (the server's batch path).
  auto runner = loracle::serving::EnsembleRunner::Create({&base, 0, true, nullptr});
  if (!runner.ok()) {
    std::fprintf(stderr, "%s\n", runner.status().ToString().c_str());
    return 1;
  }
  const auto a0 = Load(fixture, "a0", base);
  const auto ens8 = Load(fixture, "ens8", base);
  const double k1 = BatchSeconds(base, **runner, {a0}, 30);
  const double k8 = BatchSeconds(base, **runner, {ens8}, 30);
  std::printf("ensemble batch 1: K=1 %.3f ms, K=8 %.3f ms: %.2fx\n", k1 * 1e3, k8 * 1e3, k8 / k1);
  out["ensemble"] = {{"k1_ms", k1 * 1e3}, {"k8_ms", k8 * 1e3}, {"k8_over_k1", k8 / k1}};
  std::vector<std::shared_ptr<const loracle::adapters::Adapter>> mixed, same;
  for (int i = 0; i < 64; ++i) {
    mixed.push_back(Load(fixture, absl::StrCat("a", i), base));
    same.push_back(a0);
  }
  const int runs = p.on_cpu() ? 3 : 20;
  const double one = BatchSeconds(base, **runner, same, runs);
  const double many = BatchSeconds(base, **runner, mixed, runs);
  std::printf("64 requests: one adapter %.3f ms, 64 adapters %.3f ms: %.2fx\n", one * 1e3,
              many * 1e3, many / one);
  out["mixed"] = {
      {"one_adapter_ms", one * 1e3}, {"sixty_four_adapters_ms", many * 1e3}, {"ratio", many / one}};
  if (argc > 5) std::ofstream(argv[5]) << out.dump(2) << "\n";
  return 0;
}
