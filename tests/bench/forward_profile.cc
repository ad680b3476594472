// loracle-forward-profile: where one batched forward of the benchmark model spends its time.
//   loracle-forward-profile [ROWS=32] [TOKENS=128] [LAYERS=4] [HIDDEN=512] [THREADS=2] [MODEL_DIR]
// Builds a random encoder (FFN 4 x HIDDEN, heads of 64), runs forward passes of ROWS x TOKENS
// under InferenceMode, and prints the forward's rate in GFLOP/s (one forward with THREADS BLAS
// threads, and split in THREADS row parts as the server runs batches) next to the time of the same
// model's linear-layer GEMMs alone and of the attention part alone, best of 5, so the
// roofline gap splits into "GEMMs", "attention" and "everything else" (LayerNorm, GELU, ...).
// With MODEL_DIR it also times the forward of that checkpoint (same shapes) as loaded.
// THREADS are BLAS threads and the process is set up as the server's (cpu_runtime.h). Knobs:
//   LORACLE_TRACE=FILE        also write a Chrome trace of one forward (torch's profiler)
//   LORACLE_INTRA_OP=N        torch intra-op threads (default 1, as the server)
//   LORACLE_MALLOC_DEFAULT=1  leave glibc malloc as it is (page faults per forward show the cost)

#include <ATen/Parallel.h>
#include <sys/resource.h>
#include <torch/csrc/autograd/profiler_legacy.h>
#include <torch/torch.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>

#include "server/model/bert_encoder.h"
#include "server/model/checkpoint.h"
#include "server/model/cpu_runtime.h"

namespace {

double BestSeconds(const std::function<void()>& f) {
  f();
  double best = 1e9;
  for (int i = 0; i < 5; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    f();
    best = std::min(best,
                    std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  return best;
}

}  // namespace

int main(int argc, char** argv) {
  using namespace loracle::model;
  const int64_t rows = argc > 1 ? std::atoll(argv[1]) : 32;
  const int64_t tokens = argc > 2 ? std::atoll(argv[2]) : 128;
  ModelConfig c;
  c.vocab_size = 30522;
  c.num_hidden_layers = argc > 3 ? std::atoll(argv[3]) : 4;
  c.hidden_size = argc > 4 ? std::atoll(argv[4]) : 512;
  c.num_attention_heads = c.hidden_size / 64;
  c.intermediate_size = 4 * c.hidden_size;
  c.max_position_embeddings = 512;
  if (std::getenv("LORACLE_MALLOC_DEFAULT") == nullptr) KeepFreedMemory();
  const char* intra_op = std::getenv("LORACLE_INTRA_OP");
  SetComputeThreads({.blas = argc > 5 ? std::atoi(argv[5]) : 2,
                     .intra_op = intra_op != nullptr ? std::atoi(intra_op) : 1});
  c10::InferenceMode guard;
  BertEncoder e(c);
  for (auto& p : e->parameters()) p.normal_(0, 0.02);
  const int64_t h = c.hidden_size, i = c.intermediate_size, n = rows * tokens;
  torch::Tensor ids = torch::randint(1000, 2000, {rows, tokens});
  torch::Tensor mask = torch::ones({rows, tokens}, torch::kInt64);
  torch::Tensor types = torch::zeros({rows, tokens}, torch::kInt64);
  const double forward = BestSeconds([&] { e->forward(ids, mask, types, nullptr); });
  // As the server runs a batch (EnsembleRunner, --parallel_rows): rows split across THREADS
  // threads, one BLAS thread each.
  const int blas = BlasThreads();
  SetBlasThreads(1);
  const int parts = std::max(1, blas);
  const double row_parallel = BestSeconds([&] {
    if (!ForwardInParts(*e, ids, mask, types, {}, parts).ok()) std::abort();
  });
  SetBlasThreads(blas);
  rusage before{}, after{};
  getrusage(RUSAGE_SELF, &before);
  e->forward(ids, mask, types, nullptr);
  getrusage(RUSAGE_SELF, &after);
  const long faults = after.ru_minflt - before.ru_minflt;
  if (const char* trace = std::getenv("LORACLE_TRACE")) {
    torch::autograd::profiler::RecordProfile profile(trace);
    e->forward(ids, mask, types, nullptr);
  }
  double loaded = 0;
  if (argc > 6) {
    auto base = LoadBaseModel(argv[6]);
    if (!base.ok()) {
      std::fprintf(stderr, "%s\n", base.status().ToString().c_str());
      return 1;
    }
    loaded = BestSeconds([&] { (*base)->backbone->forward(ids, mask, types, nullptr); });
  }

  // The linear layers alone: 4 [n,h]x[h,h] + [n,h]x[h,i] + [n,i]x[i,h] per layer, with bias.
  torch::Tensor x = torch::randn({n, h}), xi = torch::randn({n, i});
  torch::Tensor whh = torch::randn({h, h}), whi = torch::randn({i, h}), wih = torch::randn({h, i});
  torch::Tensor bh = torch::randn({h}), bi = torch::randn({i});
  const double gemms = BestSeconds([&] {
    for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
      for (int k = 0; k < 4; ++k) torch::nn::functional::linear(x, whh, bh);
      torch::nn::functional::linear(x, whi, bi);
      torch::nn::functional::linear(xi, wih, bh);
    }
  });
  // Attention alone, as the encoder runs it: per row, strided [heads, seq, head_dim] views of
  // the fused QKV output, scores, softmax, context written into the merged layout.
  const int64_t heads = c.num_attention_heads, d = h / heads;
  torch::Tensor qkv = torch::randn({rows, tokens, 3 * h});
  const double attention = BestSeconds([&] {
    for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
      torch::Tensor context = torch::empty({rows, tokens, h});
      for (int64_t r = 0; r < rows; ++r) {
        torch::Tensor x = qkv[r].view({tokens, 3, heads, d});
        torch::Tensor q = x.select(1, 0).transpose(0, 1), k = x.select(1, 1).transpose(0, 1);
        torch::Tensor v = x.select(1, 2).transpose(0, 1);
        torch::Tensor p = torch::softmax(torch::bmm(q, k.transpose(1, 2)).mul_(0.125), -1);
        torch::Tensor out = context[r].view({tokens, heads, d}).transpose(0, 1);
        torch::bmm_out(out, p, v);
      }
    }
  });
  const double linear_flops = 2.0 * n * c.num_hidden_layers * (4 * h * h + 2 * h * i);
  const double attn_flops = 4.0 * rows * tokens * tokens * h * c.num_hidden_layers;
  std::printf(
      "{\"rows\": %lld, \"tokens\": %lld, \"forward_s\": %.4f, \"forward_gflops\": %.1f, "
      "\"linear_gemms_s\": %.4f, \"linear_gflops\": %.1f, \"attention_s\": %.4f, "
      "\"attention_gflops\": %.1f, \"other_s\": %.4f, \"loaded_forward_s\": %.4f, "
      "\"page_faults_per_forward\": %ld, \"row_parallel_parts\": %d, \"row_parallel_forward_s\": "
      "%.4f, "
      "\"row_parallel_gflops\": %.1f}\n",
      static_cast<long long>(rows), static_cast<long long>(tokens), forward,
      (linear_flops + attn_flops) / forward / 1e9, gemms, linear_flops / gemms / 1e9, attention,
      attn_flops / attention / 1e9, forward - gemms - attention, loaded, faults, parts,
      row_parallel, (linear_flops + attn_flops) / row_parallel / 1e9);
  return 0;
}
