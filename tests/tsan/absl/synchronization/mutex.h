// TSan build only (tests/sanitizers.sh tsan): a header-only absl::Mutex, Condition and
// MutexLock on std::mutex + std::condition_variable, which ThreadSanitizer sees through its
// pthread interceptors. Debian's libabsl_synchronization is not instrumented, so TSan cannot see
// its locking and reports every ABSL_GUARDED_BY member as racy (1,213 false reports in
// unit_tests). Only the API loracle uses. Every function is inline, and the build uses
// -fvisibility-inlines-hidden, so none of them interposes the shared library's own (whose
// internal objects keep their own layout).
#ifndef LORACLE_TESTS_TSAN_ABSL_SYNCHRONIZATION_MUTEX_H_
#define LORACLE_TESTS_TSAN_ABSL_SYNCHRONIZATION_MUTEX_H_

#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <type_traits>

#include "absl/base/thread_annotations.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace absl {
ABSL_NAMESPACE_BEGIN

class Condition {
 public:
  template <typename T>
  Condition(bool (*func)(T*), T* arg) : eval_([func, arg] { return func(arg); }) {}
  template <typename T>
  Condition(T* object, bool (T::*method)())
      : eval_([object, method] { return (object->*method)(); }) {}
  template <typename T>
  Condition(const T* object, bool (T::*method)() const)
      : eval_([object, method] { return (object->*method)(); }) {}
  explicit Condition(const bool* cond) : eval_([cond] { return *cond; }) {}
  template <typename T, typename = std::enable_if_t<std::is_class<T>::value>>
  explicit Condition(const T* callable) : eval_([callable] { return (*callable)(); }) {}
  bool Eval() const { return eval_(); }

 private:
  std::function<bool()> eval_;
};

// Every Unlock wakes every waiter, which re-evaluates its condition under the lock: the
// semantics of absl::Mutex::Await, without its efficiency.
class ABSL_LOCKABLE Mutex {
 public:
  Mutex() = default;
  Mutex(const Mutex&) = delete;
  Mutex& operator=(const Mutex&) = delete;

  void Lock() ABSL_EXCLUSIVE_LOCK_FUNCTION() { mu_.lock(); }
  // Notifies before unlocking: a waiter that then takes the lock may destroy the Mutex.
  void Unlock() ABSL_UNLOCK_FUNCTION() {
    cv_.notify_all();
    mu_.unlock();
  }
  bool TryLock() ABSL_EXCLUSIVE_TRYLOCK_FUNCTION(true) { return mu_.try_lock(); }
  void AssertHeld() const ABSL_ASSERT_EXCLUSIVE_LOCK() {}
  void ReaderLock() ABSL_SHARED_LOCK_FUNCTION() { Lock(); }
  void ReaderUnlock() ABSL_UNLOCK_FUNCTION() { Unlock(); }

  // Releases the held lock, waits on `cv` until notified or `deadline`, and holds the lock again.
  void WaitFor(std::condition_variable* cv, absl::Time deadline) {
    std::unique_lock<std::mutex> lock(mu_, std::adopt_lock);
    if (deadline == absl::InfiniteFuture()) {
      cv->wait(lock);
    } else {
      cv->wait_until(lock, absl::ToChronoTime(deadline));
    }
    lock.release();
  }

  void Await(const Condition& cond) {
    while (!cond.Eval()) WaitFor(&cv_, absl::InfiniteFuture());
  }
  bool AwaitWithDeadline(const Condition& cond, absl::Time deadline) {
    while (!cond.Eval()) {
      if (absl::Now() >= deadline) return cond.Eval();
      WaitFor(&cv_, deadline);
    }
    return true;
  }
  bool AwaitWithTimeout(const Condition& cond, absl::Duration timeout) {
    return AwaitWithDeadline(cond, absl::Now() + timeout);
  }
  void LockWhen(const Condition& cond) ABSL_EXCLUSIVE_LOCK_FUNCTION() {
    Lock();
    Await(cond);
  }
  bool LockWhenWithTimeout(const Condition& cond, absl::Duration timeout)
      ABSL_EXCLUSIVE_LOCK_FUNCTION() {
    Lock();
    return AwaitWithTimeout(cond, timeout);
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
};

class ABSL_SCOPED_LOCKABLE MutexLock {
 public:
  explicit MutexLock(Mutex* mu) ABSL_EXCLUSIVE_LOCK_FUNCTION(mu) : mu_(mu) { mu_->Lock(); }
  MutexLock(Mutex* mu, const Condition& cond) ABSL_EXCLUSIVE_LOCK_FUNCTION(mu) : mu_(mu) {
    mu_->LockWhen(cond);
  }
  MutexLock(const MutexLock&) = delete;
  MutexLock& operator=(const MutexLock&) = delete;
  ~MutexLock() ABSL_UNLOCK_FUNCTION() { mu_->Unlock(); }

 private:
  Mutex* const mu_;
};
using ReaderMutexLock = MutexLock;
using WriterMutexLock = MutexLock;

class ABSL_SCOPED_LOCKABLE ReleasableMutexLock {
 public:
  explicit ReleasableMutexLock(Mutex* mu) ABSL_EXCLUSIVE_LOCK_FUNCTION(mu) : mu_(mu) {
    mu_->Lock();
  }
  ReleasableMutexLock(const ReleasableMutexLock&) = delete;
  ReleasableMutexLock& operator=(const ReleasableMutexLock&) = delete;
  ~ReleasableMutexLock() ABSL_UNLOCK_FUNCTION() {
    if (mu_ != nullptr) mu_->Unlock();
  }
  void Release() ABSL_UNLOCK_FUNCTION() {
    mu_->Unlock();
    mu_ = nullptr;
  }

 private:
  Mutex* mu_;
};

// Waits on the Mutex's own std::mutex; Signal wakes every waiter (allowed: spurious wakeups).
class CondVar {
 public:
  void Wait(Mutex* mu) { mu->WaitFor(&cv_, absl::InfiniteFuture()); }
  bool WaitWithDeadline(Mutex* mu, absl::Time deadline) {
    mu->WaitFor(&cv_, deadline);
    return absl::Now() >= deadline;
  }
  bool WaitWithTimeout(Mutex* mu, absl::Duration timeout) {
    return WaitWithDeadline(mu, absl::Now() + timeout);
  }
  void Signal() { cv_.notify_all(); }
  void SignalAll() { cv_.notify_all(); }

 private:
  std::condition_variable cv_;
};

ABSL_NAMESPACE_END
}  // namespace absl

#endif  // LORACLE_TESTS_TSAN_ABSL_SYNCHRONIZATION_MUTEX_H_
