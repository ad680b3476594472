// loracle-decoder-bench: a decoder base with the shapes of Qwen2.5-0.5B (24 layers x 896, 14 query
// heads sharing 2 K/V heads of 64, SwiGLU 4864, vocabulary 151,936, tied embeddings; random BF16
// weights, as the checkpoint ships) loaded and run as the server would, one process per dtype:
//   loracle-decoder-bench DIR float32|bfloat16 [ROWS=8] [ROUNDS=3]
// Writes the checkpoint into DIR once (about 1 GB; kept for reuse, with a small byte-level BPE
// tokenizer from tests/data/tokenizers/roberta), then prints one JSON line: load seconds, resident
// and peak memory after the load, and with ROWS > 0 the forward of ROWS inputs of 128 tokens
// (best of ROUNDS): requests/s, achieved GFLOP/s and its ratio to a same-dtype GEMM of the MLP's
// shape measured in the same process (the roofline ratio).

#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>

#include "server/model/checkpoint.h"
#include "server/model/cpu_runtime.h"
#include "server/util/file_util.h"
#include "tests/support/fixture_checkpoint.h"

namespace {

double Seconds(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// VmRSS / VmHWM of this process in MiB.
double StatusMiB(const char* key) {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(key, 0) == 0) return std::stod(line.substr(std::string(key).size())) / 1024.0;
  }
  return -1;
}

}  // namespace

int main(int argc, char** argv) {
  using namespace loracle::model;
  namespace fs = std::filesystem;
  if (argc < 3) {
    std::fprintf(stderr, "usage: %s DIR float32|bfloat16 [ROWS] [ROUNDS]\n", argv[0]);
    return 2;
  }
  const std::string dir = argv[1], mode = argv[2];
  const int rows = argc > 3 ? std::atoi(argv[3]) : 8;
  const int rounds = argc > 4 ? std::atoi(argv[4]) : 3;
  ModelConfig c;
  c.model_type = "qwen2";
  c.vocab_size = 151936;
  c.hidden_size = 896;
  c.num_hidden_layers = 24;
  c.num_attention_heads = 14;
  c.num_key_value_heads = 2;
  c.head_dim = 64;
  c.intermediate_size = 4864;
  c.max_position_embeddings = 32768;
  c.rms_norm_eps = 1e-6;
  c.rope_theta = 1000000.0;
  c.tie_word_embeddings = true;
  c.type_vocab_size = 0;
  c.hidden_act = "silu";
  if (!fs::exists(dir + "/model.safetensors")) {
    loracle::testing::CheckpointLayout layout;
    layout.dtype = DType::kBF16;
    if (auto s = loracle::testing::WriteRandomCheckpoint(dir, c, 1, layout); !s.ok()) {
      std::fprintf(stderr, "%s\n", s.ToString().c_str());
      return 1;
    }
    for (const auto& e : fs::directory_iterator(std::string(LORACLE_SOURCE_DIR) +
                                                "/tests/data/tokenizers/roberta")) {
      fs::copy_file(e.path(), dir + "/" + e.path().filename().string(),
                    fs::copy_options::overwrite_existing);
    }
  }
  // As the server runs its forwards: freed memory kept in the process, BLAS on every core and
  // torch's own intra-op pool at one thread (cpu_runtime.h).
  KeepFreedMemory();
  const int cores = Cores();
  SetComputeThreads({cores, 1});
  Placement placement;
  placement.dtype = mode == "bfloat16" ? torch::kBFloat16 : torch::kFloat32;
  const double rss_before = StatusMiB("VmRSS:");
  const auto t0 = std::chrono::steady_clock::now();
  auto model = LoadBaseModel(dir, placement);
  const double load_s = Seconds(t0);
  if (!model.ok()) {
    std::fprintf(stderr, "%s\n", model.status().ToString().c_str());
    return 1;
  }
  const double rss = StatusMiB("VmRSS:"), peak = StatusMiB("VmHWM:");
  std::printf(
      "{\"mode\": \"%s\", \"parameters\": %lld, \"load_s\": %.2f, \"rss_mib\": %.0f, "
      "\"peak_mib\": %.0f, \"rss_before_mib\": %.0f",
      mode.c_str(), static_cast<long long>((*model)->num_parameters), load_s, rss, peak,
      rss_before);
  if (rows > 0) {
    c10::InferenceMode guard;
    const int64_t seq = 128;
    torch::Tensor ids = torch::randint(1, 3000, {rows, seq}, torch::kInt64);
    torch::Tensor mask = torch::ones({rows, seq}, torch::kInt64);
    torch::Tensor types = torch::zeros({rows, seq}, torch::kInt64);
    double best = 1e9;
    for (int r = 0; r < rounds; ++r) {
      const auto f0 = std::chrono::steady_clock::now();
      (*model)->backbone->forward(ids, mask, types, nullptr);
      best = std::min(best, Seconds(f0));
    }
    // FLOPs: 2 per multiply-add of every per-token linear layer, plus causal attention (q k^T and
    // p v over the keys each query sees, about seq / 2 on average).
    const double tokens = static_cast<double>(rows) * seq;
    const double linear =
        2.0 * tokens * c.num_hidden_layers *
        (c.hidden_size * (c.num_attention_heads + 2 * c.num_key_value_heads) * c.head_dim +
         c.num_attention_heads * c.head_dim * c.hidden_size +
         3.0 * c.hidden_size * c.intermediate_size);
    const double attention =
        2.0 * 2.0 * tokens * (seq / 2.0) * c.num_attention_heads * c.head_dim * c.num_hidden_layers;
    const double gflops = (linear + attention) / best / 1e9;
    // The same-dtype GEMM rate at the MLP's shape.
    torch::Tensor a =
        torch::randn({static_cast<int64_t>(tokens), c.hidden_size}).to(placement.dtype);
    torch::Tensor w = torch::randn({c.intermediate_size, c.hidden_size}).to(placement.dtype);
    double gemm = 1e9;
    for (int r = 0; r < rounds; ++r) {
      const auto g0 = std::chrono::steady_clock::now();
      torch::matmul(a, w.t());
      gemm = std::min(gemm, Seconds(g0));
    }
    const double gemm_gflops = 2.0 * tokens * c.hidden_size * c.intermediate_size / gemm / 1e9;
    std::printf(
        ", \"rows\": %d, \"tokens_per_row\": %lld, \"forward_s\": %.3f, "
        "\"requests_per_s\": %.2f, \"gflops\": %.1f, \"gemm_gflops\": %.1f, "
        "\"roofline\": %.2f",
        rows, static_cast<long long>(seq), best, rows / best, gflops, gemm_gflops,
        gflops / gemm_gflops);
  }
  std::printf("}\n");
  return 0;
}
