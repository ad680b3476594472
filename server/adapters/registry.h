#ifndef LORACLE_SERVER_ADAPTERS_REGISTRY_H_
#define LORACLE_SERVER_ADAPTERS_REGISTRY_H_

// The adapters being served, by name, and their lifecycle (after TF Serving's manager and
// Triton's model lifecycle). Torch-free: loading the files is the injected Loader's job.
//
//   LOADING ──▶ READY ──▶ UNLOADING ──▶ (gone)        and  LOADING ──▶ FAILED
//
// - Loads and unloads run on the registry's own load threads. Operations on one name run one at
//   a time in the order they were asked for; different names load in parallel (load_threads).
// - A new version is loaded next to the served one and swapped in only when READY; a request
//   holds its version's shared_ptr, so a replaced or unloaded version is freed when its last
//   in-flight request lets go. An unloaded name shows UNLOADING until then.
// - Versions only move forward: a load that does not pin its version (LoadRequest::pin) and
//   resolves to a version older than the one served changes nothing.
// - A failed load leaves a served version serving (its error is shown); with nothing served the
//   name shows FAILED with the error.
// - With a memory budget (Options::memory_budget_bytes), loaded versions past it are evicted
//   least recently acquired first: the name stays READY with `resident` false, and AcquireAsync
//   reloads the same version from its directory on the next request (one reload however many
//   requests wait). Evicting only drops the registry's reference: in-flight requests keep theirs.
//
// Thread-safety: every public method is thread-safe. The blocking ones (Load, Unload, LoadAll)
// must not be called from a Callback or a Loader (they would wait on their own load thread).
// Callbacks run on a load thread, without the registry's lock held.

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "server/adapters/adapter.h"
#include "server/adapters/adapter_config.h"

namespace loracle::metrics {
class Metrics;
}

namespace loracle::adapters {

class Store;

// What to load. With an empty `path`, `version` of the store's `name` (0 = its newest);
// otherwise the directory `path` on the server, named `name` and numbered `version`.
struct LoadRequest {
  std::string name;
  int64_t version = 0;
  std::string path;
  // Pinned loads (an operator's explicit version or path) may move a name back to an older
  // version; unpinned ones (the newest at start, a publish, a watcher) only forward.
  bool pin = false;
  // The store watcher's loads: ABORTED, changing nothing, when this registry already loaded this
  // store version or a later one of the name (see HighestStoreVersion), checked when it runs.
  bool only_past_served = false;
};

class Registry {
 public:
  // Reads one adapter version's files. Called on a load thread, never under the registry's lock;
  // must be thread-safe when load_threads > 1.
  using Loader = std::function<absl::StatusOr<std::shared_ptr<const Adapter>>(
      const std::string& dir, const std::string& name, int64_t version)>;
  using InfoCallback = std::function<void(absl::StatusOr<AdapterInfo>)>;
  using StatusCallback = std::function<void(absl::Status)>;
  using AdapterCallback = std::function<void(absl::StatusOr<std::shared_ptr<const Adapter>>)>;

  struct Options {
    Store* store = nullptr;               // not owned; outlives the registry
    Loader loader;                        // required
    int load_threads = 1;                 // names loading at once
    metrics::Metrics* metrics = nullptr;  // optional, not owned: adapters by state
    // Bytes of adapter weights kept resident (Adapter::memory_bytes: rank and members count);
    // 0 = no limit. Versions added with Add are never evicted. One version larger than the
    // budget is still served, alone.
    int64_t memory_budget_bytes = 0;
  };
  // INVALID_ARGUMENT without a store or loader, or with a negative budget.
  static absl::StatusOr<std::unique_ptr<Registry>> Create(const Options& options);
  // Shutdown(), then waits for the operations still running.
  ~Registry() ABSL_LOCKS_EXCLUDED(mu_);

  // Stops taking operations: queued ones and later ones are answered UNAVAILABLE (on this thread);
  // running ones finish. Does not wait for them. Idempotent.
  void Shutdown() ABSL_LOCKS_EXCLUDED(mu_);

  // Queues a load; `done` gets the name's info once it ran (READY with the version now served),
  // or the error (the name's state and served version are then as described above). Errors:
  // INVALID_ARGUMENT (bad name), NOT_FOUND (no such adapter or version in the store), the
  // Loader's errors, UNAVAILABLE (the registry is shutting down).
  void LoadAsync(LoadRequest request, InfoCallback done) ABSL_LOCKS_EXCLUDED(mu_);
  // Queues an unload: the name stops taking requests at once when it runs, and is gone when the
  // last request holding it lets go (UNLOADING until then). NOT_FOUND when unknown.
  void UnloadAsync(const std::string& name, StatusCallback done) ABSL_LOCKS_EXCLUDED(mu_);

  // Blocking forms of the above.
  absl::StatusOr<AdapterInfo> Load(LoadRequest request) ABSL_LOCKS_EXCLUDED(mu_);
  absl::Status Unload(const std::string& name) ABSL_LOCKS_EXCLUDED(mu_);
  // Loads the newest version of every adapter in the store and waits. Failures are recorded per
  // adapter (FAILED, with the error); the result is an error only if the store cannot be read.
  absl::Status LoadAll() ABSL_LOCKS_EXCLUDED(mu_);

  // Serves an adapter built elsewhere (the base checkpoint's head), READY at once.
  // ALREADY_EXISTS when the name is taken.
  absl::Status Add(std::shared_ptr<const Adapter> adapter) ABSL_LOCKS_EXCLUDED(mu_);

  // The served version, for one request. NOT_FOUND (unknown or unloading), FAILED_PRECONDITION
  // (failed to load, with the reason), UNAVAILABLE (still loading its first version, or evicted:
  // Acquire never reloads). Marks the version used, for eviction.
  absl::StatusOr<std::shared_ptr<const Adapter>> Acquire(const std::string& name) const
      ABSL_LOCKS_EXCLUDED(mu_);
  // As Acquire, but an evicted version is reloaded first: `done` then runs on a load thread once
  // the reload ended (DEADLINE_EXCEEDED if that was after `deadline`; the reload's error, which
  // also marks the name FAILED; UNAVAILABLE at shutdown). Otherwise `done` runs on this thread
  // before AcquireAsync returns.
  void AcquireAsync(const std::string& name, absl::Time deadline, AdapterCallback done)
      ABSL_LOCKS_EXCLUDED(mu_);

  absl::StatusOr<AdapterInfo> Get(const std::string& name) const ABSL_LOCKS_EXCLUDED(mu_);
  std::vector<AdapterInfo> List() const ABSL_LOCKS_EXCLUDED(mu_);
  int ready_count() const ABSL_LOCKS_EXCLUDED(mu_);
  // Bytes of the versions the registry holds resident (Adapter::memory_bytes summed).
  int64_t resident_bytes() const ABSL_LOCKS_EXCLUDED(mu_);

  // The highest store version of `name` this registry ever loaded (0: none), kept after an
  // unload: the store watcher loads only versions past it, so an operator's unload or pinned
  // older version stands until something newer is published. Forget drops the mark (the name
  // left the store).
  int64_t HighestStoreVersion(const std::string& name) const ABSL_LOCKS_EXCLUDED(mu_);
  void ForgetStoreVersions(const std::string& name) ABSL_LOCKS_EXCLUDED(mu_);

 private:
  // Runs the operation (run = true) or refuses it (false: shutting down) and returns the reply
  // to its caller, which the registry sends once the entry's bookkeeping is done, without its
  // lock: a caller that got its answer sees the registry in the state the answer describes.
  using Reply = std::function<void()>;
  using Op = std::function<Reply(bool run)>;
  struct Entry {
    AdapterInfo info;                        // what Get and List show
    std::shared_ptr<const Adapter> current;  // the served version; null unless READY
    // Unloaded versions still held by requests: the entry shows UNLOADING while any is alive.
    std::vector<std::weak_ptr<const Adapter>> draining;
    std::deque<Op> ops;  // queued operations on this name, run one at a time
    bool running = false;
    // READY but dropped for the memory budget: info.path / info.version are reloaded on demand.
    bool evicted = false;
    bool evictable = false;  // loaded from a directory (not Add)
    uint64_t last_used = 0;  // use_clock_ at the last Acquire or load
    // AcquireAsync callers waiting for the queued reload of an evicted version.
    struct Waiter {
      absl::Time deadline;
      AdapterCallback done;
    };
    std::vector<Waiter> waiters;
    bool reload_queued = false;
  };

  explicit Registry(const Options& options) : options_(options) {}
  // Queues `op` on `name`'s entry, after `prepare` ran on it, under one lock. UNAVAILABLE when
  // shutting down; NOT_FOUND when !create and the name has no entry (`op` is then dropped).
  absl::Status Enqueue(const std::string& name, bool create,
                       const std::function<void(Entry&)>& prepare, Op op) ABSL_LOCKS_EXCLUDED(mu_);
  void EnqueueLocked(const std::string& name, Entry& e, Op op) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void WorkerLoop() ABSL_LOCKS_EXCLUDED(mu_);
  bool HasWork() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return !runnable_.empty() || stopping_;
  }
  absl::StatusOr<AdapterInfo> RunLoad(const LoadRequest& request) ABSL_LOCKS_EXCLUDED(mu_);
  absl::Status RunUnload(const std::string& name) ABSL_LOCKS_EXCLUDED(mu_);
  // Reloads `name`'s evicted version and answers its waiters (run = false: UNAVAILABLE).
  Reply RunReload(const std::string& name, bool run) ABSL_LOCKS_EXCLUDED(mu_);
  // What Acquire answers for `e` (resident or not).
  static absl::StatusOr<std::shared_ptr<const Adapter>> Lookup(const std::string& name,
                                                               const Entry& e);
  // Evicts least recently used resident versions other than `keep` until the budget holds.
  // Returns how many it evicted.
  int EvictOverBudget(const std::string& keep) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  int64_t ResidentBytesLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Drops an entry that serves nothing, drains nothing and has nothing queued.
  void MaybeErase(const std::string& name) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Entries that finished draining are gone (const: lazily, on every read).
  void Purge() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void ReportMetrics() const ABSL_LOCKS_EXCLUDED(mu_);

  const Options options_;
  mutable absl::Mutex mu_;
  mutable std::map<std::string, Entry> entries_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, int64_t> store_high_water_ ABSL_GUARDED_BY(mu_);
  std::deque<std::string> runnable_ ABSL_GUARDED_BY(mu_);  // names with an op ready to run
  mutable uint64_t use_clock_ ABSL_GUARDED_BY(mu_) = 0;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::thread> threads_;
};

}  // namespace loracle::adapters

#endif  // LORACLE_SERVER_ADAPTERS_REGISTRY_H_
