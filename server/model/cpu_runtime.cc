#include "server/model/cpu_runtime.h"

#include <ATen/Parallel.h>
#include <dlfcn.h>
#include <pthread.h>
#include <sched.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

#ifdef __GLIBC__
#include <malloc.h>
#endif

namespace loracle::model {
namespace {

// Looked up at run time so that any BLAS links; OpenBLAS ignores torch's thread setting.
using SetFn = void (*)(int);
using GetFn = int (*)();
SetFn OpenBlasSet() {
  static const SetFn f = reinterpret_cast<SetFn>(dlsym(RTLD_DEFAULT, "openblas_set_num_threads"));
  return f;
}
GetFn OpenBlasGet() {
  static const GetFn f = reinterpret_cast<GetFn>(dlsym(RTLD_DEFAULT, "openblas_get_num_threads"));
  return f;
}

// Guards the training count and every BLAS thread change made on serving's behalf.
std::mutex& BlasMutex() {
  static std::mutex* mu = new std::mutex;
  return *mu;
}
int training_scopes = 0;  // guarded by BlasMutex()

// Helper threads for RunInParallel: a queue of tasks, each one part of a caller's batch.
class HelperPool {
 public:
  static HelperPool& Get() {
    static HelperPool* pool = new HelperPool();  // never destroyed: threads outlive main's end
    return *pool;
  }

  void Run(int parts, const std::function<void(int)>& fn) {
    struct Batch {
      std::mutex mu;
      std::condition_variable done;
      int pending = 0;
      std::exception_ptr error;  // the first part's that threw
    } batch;
    batch.pending = parts - 1;
    {
      std::lock_guard<std::mutex> lock(mu_);
      while (static_cast<int>(threads_.size()) < parts - 1) {
        threads_.emplace_back([this] { Loop(); });
      }
      queued_.fetch_add(parts - 1, std::memory_order_relaxed);
      for (int p = 1; p < parts; ++p) {
        tasks_.push_back([&batch, &fn, p] {
          std::exception_ptr error;
          try {
            fn(p);
          } catch (...) {
            error = std::current_exception();
          }
          std::lock_guard<std::mutex> l(batch.mu);
          if (error && !batch.error) batch.error = error;
          if (--batch.pending == 0) batch.done.notify_one();
        });
      }
    }
    work_.notify_all();
    std::exception_ptr error;
    try {
      fn(0);
    } catch (...) {
      error = std::current_exception();
    }
    std::unique_lock<std::mutex> lock(batch.mu);
    batch.done.wait(lock, [&batch] { return batch.pending == 0; });
    if (!error) error = batch.error;
    if (error) std::rethrow_exception(error);
  }

 private:
  void Loop() {
    for (;;) {
      // A forward issues its split GEMMs a few hundred microseconds apart: spin for the next
      // part for a while before sleeping, as OpenBLAS's own threads do, so the core stays with
      // serving for the whole forward instead of going to a (low-priority) trainer in between.
      const auto spin_until = std::chrono::steady_clock::now() + kSpin;
      while (queued_.load(std::memory_order_relaxed) == 0 &&
             std::chrono::steady_clock::now() < spin_until) {
        CpuRelax();
      }
      std::function<void()> task;
      {
        std::unique_lock<std::mutex> lock(mu_);
        work_.wait(lock, [this] { return !tasks_.empty(); });
        task = std::move(tasks_.front());
        tasks_.pop_front();
        queued_.fetch_sub(1, std::memory_order_relaxed);
      }
      task();
    }
  }

  static void CpuRelax() {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#else
    std::this_thread::yield();
#endif
  }

  static constexpr std::chrono::microseconds kSpin{2000};

  std::mutex mu_;
  std::condition_variable work_;
  std::deque<std::function<void()>> tasks_;
  std::atomic<int> queued_{0};        // tasks_.size(), readable without mu_
  std::vector<std::thread> threads_;  // detached in effect: the pool is never destroyed
};

thread_local int token_parallel_parts = 1;

}  // namespace

void RunInParallel(int parts, const std::function<void(int)>& fn) {
  if (parts <= 1) {
    fn(0);
    return;
  }
  HelperPool::Get().Run(parts, fn);
}

TokenParallelScope::TokenParallelScope(int parts) : previous_(token_parallel_parts) {
  token_parallel_parts = std::max(parts, 1);
}

TokenParallelScope::~TokenParallelScope() { token_parallel_parts = previous_; }

int TokenParallelParts() { return token_parallel_parts; }

TrainingScope::TrainingScope() {
  std::lock_guard<std::mutex> lock(BlasMutex());
  ++training_scopes;
  SetBlasThreads(1);
}

TrainingScope::~TrainingScope() {
  std::lock_guard<std::mutex> lock(BlasMutex());
  --training_scopes;
}

bool TrainingActive() {
  std::lock_guard<std::mutex> lock(BlasMutex());
  return training_scopes > 0;
}

int SetServingBlasThreads(int threads) {
  std::lock_guard<std::mutex> lock(BlasMutex());
  if (training_scopes > 0) threads = 1;
  SetBlasThreads(threads);
  return threads;
}

IdlePriorityScope::IdlePriorityScope() {
#ifdef SCHED_IDLE
  sched_param param{};
  if (pthread_getschedparam(pthread_self(), &old_policy_, &param) != 0) return;
  old_priority_ = param.sched_priority;
  sched_param idle{};
  idle.sched_priority = 0;
  ok_ = pthread_setschedparam(pthread_self(), SCHED_IDLE, &idle) == 0;
#endif
}

IdlePriorityScope::~IdlePriorityScope() {
  if (!ok_) return;
  sched_param param{};
  param.sched_priority = old_priority_;
  pthread_setschedparam(pthread_self(), old_policy_, &param);
}

int Cores() { return static_cast<int>(std::max(1u, std::thread::hardware_concurrency())); }

void SetComputeThreads(const ComputeThreads& threads) {
  at::set_num_threads(threads.intra_op > 0 ? threads.intra_op : Cores());
  SetBlasThreads(threads.blas > 0 ? threads.blas : Cores());
}

void SetBlasThreads(int threads) {
  if (SetFn set = OpenBlasSet(); set != nullptr && BlasThreads() != threads) set(threads);
}

int BlasThreads() {
  GetFn get = OpenBlasGet();
  return get != nullptr ? get() : 0;
}

bool KeepFreedMemory() {
#ifdef __GLIBC__
  // One arena: the main one grows by brk without limit, where the per-thread arenas of other
  // threads (the batch threads) are 64 MiB heaps that mmap anything larger afresh.
  return mallopt(M_ARENA_MAX, 1) == 1 &&
         mallopt(M_MMAP_THRESHOLD, 1 << 30) == 1 &&  // blocks below 1 GiB come from the heap
         mallopt(M_TRIM_THRESHOLD, 1 << 30) == 1;    // give back only when 1 GiB is free on top
#else
  return false;
#endif
}

}  // namespace loracle::model
