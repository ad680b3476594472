#ifndef LORACLE_SERVER_ADAPTERS_WATCHER_H_
#define LORACLE_SERVER_ADAPTERS_WATCHER_H_

// Keeps a registry in step with an adapter store that other processes publish into (replicas
// sharing one store volume, a training tier): after TF Serving's file-system storage path source.
//
// Each scan compares the store with the previous scan and with what the registry serves from it:
//   - a new name, or a new newest version                  -> load it (unpinned: forward only);
//   - the served version deleted, older versions left      -> load the newest left (pinned);
//   - every version of a served name deleted                -> unload it.
// Changes drive loads, so an operator's Unload or pinned older version stands until the next
// publish of that name. A version whose load failed is retried only when its files change (one
// copied in by hand, seen half-written) or a newer one appears; it shows FAILED with its reason and
// the rest keep serving. Names served from elsewhere (an explicit path load, the base
// checkpoint's head) are left alone. The first scan loads every newest version not served.
//
// Scans run every `poll_interval` (the only signal on network volumes, where other hosts' writes
// raise no local events) and, with inotify, within ~`settle` of a change on a local filesystem.
//
// Thread-safety: the watcher owns one thread; ScanNow may be called from any thread. The store and
// registry must outlive it.

#include <cstdint>
#include <memory>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace loracle::adapters {

class Registry;
class Store;

class Watcher {
 public:
  struct Options {
    Store* store = nullptr;        // not owned
    Registry* registry = nullptr;  // not owned
    absl::Duration poll_interval = absl::Seconds(5);
    bool use_inotify = true;                         // false: polling only
    absl::Duration settle = absl::Milliseconds(50);  // wait after an event for its siblings
  };
  // INVALID_ARGUMENT without a store or registry, or with a poll interval <= 0. An inotify
  // instance that cannot be made (limits, a filesystem without it) leaves polling, and says so.
  static absl::StatusOr<std::unique_ptr<Watcher>> Create(const Options& options);
  ~Watcher();  // stops and joins the thread

  // Reconciles once on the calling thread and returns when the loads and unloads it asked for
  // have been queued (not finished). Scans are serialised.
  void ScanNow() ABSL_LOCKS_EXCLUDED(scan_mu_);

  bool inotify() const { return inotify_fd_ >= 0; }

 private:
  explicit Watcher(const Options& options);
  void Run();
  void WatchDir(const std::string& dir) ABSL_EXCLUSIVE_LOCKS_REQUIRED(scan_mu_);
  // Reads the queued inotify events; true when there were any.
  bool DrainEvents() ABSL_LOCKS_EXCLUDED(scan_mu_);

  struct Shared;  // what load callbacks update; they may outlive the watcher

  const Options options_;
  int inotify_fd_ = -1;
  int wake_fds_[2] = {-1, -1};  // a pipe: the destructor writes to stop the thread
  const std::shared_ptr<Shared> shared_;
  absl::Mutex scan_mu_;
  absl::flat_hash_map<std::string, int64_t> seen_ ABSL_GUARDED_BY(scan_mu_);  // name -> newest
  absl::flat_hash_set<std::string> watched_ ABSL_GUARDED_BY(scan_mu_);  // inotify'd directories
  absl::flat_hash_map<int, std::string> watch_paths_ ABSL_GUARDED_BY(scan_mu_);  // wd -> dir
  std::thread thread_;
};

}  // namespace loracle::adapters

#endif  // LORACLE_SERVER_ADAPTERS_WATCHER_H_
