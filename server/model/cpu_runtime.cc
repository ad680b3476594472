#include "server/model/cpu_runtime.h"

#include <ATen/Parallel.h>
#include <dlfcn.h>
#include <pthread.h>
#include <sched.h>

#include <algorithm>
#include <mutex>
#include <thread>

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

}  // namespace

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
