// loracle-gemm-rate: torch's sustained float32 matmul rate on this machine, for the roofline ratio.
//   loracle-gemm-rate [THREADS=0 (all cores)] [M=4096] [K=512] [N=2048]
// Prints GFLOP/s of C[M,N] = A[M,K] B[K,N] (2MKN flops), best of 5 timed runs of ~1 s each,
// THREADS being the BLAS threads, as the server's --threads.

#include <torch/torch.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <thread>

#include "server/model/cpu_runtime.h"

int main(int argc, char** argv) {
  int threads = argc > 1 ? std::atoi(argv[1]) : 0;
  if (threads <= 0) threads = static_cast<int>(std::thread::hardware_concurrency());
  const int64_t m = argc > 2 ? std::atoll(argv[2]) : 4096;
  const int64_t k = argc > 3 ? std::atoll(argv[3]) : 512;
  const int64_t n = argc > 4 ? std::atoll(argv[4]) : 2048;
  // As the server runs: BLAS threads, freed memory kept (no page faults on each fresh output).
  loracle::model::KeepFreedMemory();
  loracle::model::SetComputeThreads({.blas = threads, .intra_op = 1});
  c10::InferenceMode guard;
  torch::Tensor a = torch::randn({m, k}), b = torch::randn({k, n});
  for (int i = 0; i < 3; ++i) torch::matmul(a, b);  // warm up
  double best = 0;
  for (int run = 0; run < 5; ++run) {
    int reps = 0;
    const auto start = std::chrono::steady_clock::now();
    double seconds = 0;
    while (seconds < 1.0) {
      torch::Tensor c = torch::matmul(a, b);
      ++reps;
      seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    }
    best = std::max(best, 2.0 * m * k * n * reps / seconds / 1e9);
  }
  std::printf("%.2f\n", best);
  return 0;
}
