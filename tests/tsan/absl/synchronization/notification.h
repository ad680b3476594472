// TSan build only: absl::Notification on the header-only Mutex of ./mutex.h (see there).
#ifndef LORACLE_TESTS_TSAN_ABSL_SYNCHRONIZATION_NOTIFICATION_H_
#define LORACLE_TESTS_TSAN_ABSL_SYNCHRONIZATION_NOTIFICATION_H_

#include "absl/synchronization/mutex.h"

namespace absl {
ABSL_NAMESPACE_BEGIN

class Notification {
 public:
  Notification() = default;
  explicit Notification(bool notified) : notified_(notified) {}
  void Notify() {
    MutexLock lock(&mu_);
    notified_ = true;
  }
  bool HasBeenNotified() const {
    MutexLock lock(&mu_);
    return notified_;
  }
  void WaitForNotification() const { MutexLock lock(&mu_, Condition(&notified_)); }
  bool WaitForNotificationWithTimeout(absl::Duration timeout) const {
    MutexLock lock(&mu_);
    return mu_.AwaitWithTimeout(Condition(&notified_), timeout);
  }
  bool WaitForNotificationWithDeadline(absl::Time deadline) const {
    MutexLock lock(&mu_);
    return mu_.AwaitWithDeadline(Condition(&notified_), deadline);
  }

 private:
  mutable Mutex mu_;
  bool notified_ = false;
};

ABSL_NAMESPACE_END
}  // namespace absl

#endif  // LORACLE_TESTS_TSAN_ABSL_SYNCHRONIZATION_NOTIFICATION_H_
