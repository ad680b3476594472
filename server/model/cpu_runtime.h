#ifndef LORACLE_SERVER_MODEL_CPU_RUNTIME_H_
#define LORACLE_SERVER_MODEL_CPU_RUNTIME_H_

// Process-wide CPU settings for inference. Torch-free header.

#include <functional>

namespace loracle::model {

// Thread counts for the two pools a forward uses: the BLAS library's (OpenBLAS pthreads: every
// GEMM) and torch's intra-op pool (element-wise ops: LayerNorm, GELU, softmax, adds). 0 = all
// cores. Torch's pool defaults to 1 on purpose: its OpenMP workers spin after each op while
// OpenBLAS's spin after each GEMM, and on the same cores the two starve each other (measured
// 16% slower forwards with both at 2 threads on 2 cores; tests/bench/README.md).
struct ComputeThreads {
  int blas = 0;
  int intra_op = 1;
};

// Applies `threads`. Safe to call again (the last call wins). When the BLAS in use is not
// OpenBLAS, its thread count is left as that library configures it.
void SetComputeThreads(const ComputeThreads& threads);

// Sets only the BLAS library's threads: cheap, for switching between forwards. Process-wide and
// not synchronised with GEMMs running on other threads (they keep the count they started with):
// callers serialise their forwards around it (serving::EnsembleRunner holds a mutex for both).
void SetBlasThreads(int threads);

// The BLAS threads in effect (0 when the BLAS library exposes no getter).
int BlasThreads();

// Serving and training share the process's one BLAS thread count (OpenBLAS's pool is
// process-wide). While at least one TrainingScope lives, BLAS runs single-threaded: every GEMM on
// the thread that calls it, none on the pool, so a trainer's GEMMs run on its own (low-priority)
// threads and a serving forward splits its rows across threads instead (serving::EnsembleRunner).
// Thread-safe.
class TrainingScope {
 public:
  TrainingScope();
  ~TrainingScope();
  TrainingScope(const TrainingScope&) = delete;
  TrainingScope& operator=(const TrainingScope&) = delete;
};

// True while a TrainingScope lives.
bool TrainingActive();

// SetBlasThreads(threads) for a serving forward, or 1 while training is active (atomically with
// respect to TrainingScope). Returns the count set.
int SetServingBlasThreads(int threads);

// Lowers the calling thread to SCHED_IDLE (Linux: it runs only on cores no other thread wants),
// restoring its policy on destruction. A no-op, with ok() false, where the OS refuses.
class IdlePriorityScope {
 public:
  IdlePriorityScope();
  ~IdlePriorityScope();
  bool ok() const { return ok_; }
  IdlePriorityScope(const IdlePriorityScope&) = delete;
  IdlePriorityScope& operator=(const IdlePriorityScope&) = delete;

 private:
  bool ok_ = false;
  int old_policy_ = 0;
  int old_priority_ = 0;
};

// std::thread::hardware_concurrency(), at least 1.
int Cores();

// Runs fn(0) on the calling thread and fn(1) .. fn(parts - 1) on helper threads (a process-wide
// pool, started on first use, at normal priority), and returns when all are done; then rethrows
// the first exception a part threw. `fn` must not call RunInParallel itself. Thread-safe;
// concurrent callers share the helpers.
void RunInParallel(int parts, const std::function<void(int)>& fn);

// While one lives on a thread, FusedLinear (lora.h) on that thread splits its tokens into
// `parts` chunks, one GEMM each on RunInParallel's threads. For a serving forward that cannot be
// split by rows while BLAS runs single-threaded (TrainingScope): one long sequence still uses
// every core. Nests (the innermost wins); parts <= 1 turns splitting off.
class TokenParallelScope {
 public:
  explicit TokenParallelScope(int parts);
  ~TokenParallelScope();
  TokenParallelScope(const TokenParallelScope&) = delete;
  TokenParallelScope& operator=(const TokenParallelScope&) = delete;

 private:
  int previous_;
};

// The calling thread's token parts (1 outside a TokenParallelScope).
int TokenParallelParts();

// Keeps memory freed by tensors inside the process (glibc malloc: no mmap per large tensor, no
// trimming of the heap), so a forward's activations reuse pages already mapped instead of
// faulting in fresh zeroed pages: ~100k page faults per forward of the benchmark model without
// it. Resident memory then stays at its peak. Call first thing in main, before other threads
// start. False (and no effect) off glibc or when glibc refuses a setting.
bool KeepFreedMemory();

}  // namespace loracle::model

#endif  // LORACLE_SERVER_MODEL_CPU_RUNTIME_H_
