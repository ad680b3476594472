// TSan build only: absl::BlockingCounter on the header-only Mutex of ./mutex.h (see there).
#ifndef LORACLE_TESTS_TSAN_ABSL_SYNCHRONIZATION_BLOCKING_COUNTER_H_
#define LORACLE_TESTS_TSAN_ABSL_SYNCHRONIZATION_BLOCKING_COUNTER_H_

#include "absl/synchronization/mutex.h"

namespace absl {
ABSL_NAMESPACE_BEGIN

class BlockingCounter {
 public:
  explicit BlockingCounter(int initial_count) : count_(initial_count) {}
  bool DecrementCount() {
    MutexLock lock(&mu_);
    return --count_ == 0;
  }
  void Wait() { MutexLock lock(&mu_, Condition(this, &BlockingCounter::Done)); }

 private:
  bool Done() const { return count_ <= 0; }
  Mutex mu_;
  int count_;
};

ABSL_NAMESPACE_END
}  // namespace absl

#endif  // LORACLE_TESTS_TSAN_ABSL_SYNCHRONIZATION_BLOCKING_COUNTER_H_
