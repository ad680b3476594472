#include "server/adapters/registry.h"

#include <algorithm>
#include <optional>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/blocking_counter.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "server/adapters/store.h"
#include "server/metrics/metrics.h"

namespace loracle::adapters {
namespace {

const absl::Status& ShuttingDown() {
  static const absl::Status* const s =
      new absl::Status(absl::UnavailableError("the adapter registry is shutting down"));
  return *s;
}

bool Draining(const std::vector<std::weak_ptr<const Adapter>>& versions) {
  return std::any_of(versions.begin(), versions.end(),
                     [](const std::weak_ptr<const Adapter>& v) { return !v.expired(); });
}

}  // namespace

absl::StatusOr<std::unique_ptr<Registry>> Registry::Create(const Options& options) {
  if (options.store == nullptr || !options.loader) {
    return absl::InvalidArgumentError("Registry needs a store and a loader");
  }
  if (options.load_threads < 1) return absl::InvalidArgumentError("load_threads must be >= 1");
  if (options.memory_budget_bytes < 0) {
    return absl::InvalidArgumentError("memory_budget_bytes must be >= 0 (0: no limit)");
  }
  std::unique_ptr<Registry> r(new Registry(options));
  for (int i = 0; i < options.load_threads; ++i) {
    r->threads_.emplace_back([p = r.get()] { p->WorkerLoop(); });
  }
  return r;
}

Registry::~Registry() {
  Shutdown();
  for (std::thread& t : threads_) t.join();
}

void Registry::Shutdown() {
  std::vector<Op> queued;
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
    for (auto& [name, e] : entries_) {
      for (Op& op : e.ops) queued.push_back(std::move(op));
      e.ops.clear();
    }
    runnable_.clear();
  }
  for (Op& op : queued) op(/*run=*/false)();
}

absl::Status Registry::Enqueue(const std::string& name, bool create,
                               const std::function<void(Entry&)>& prepare, Op op) {
  absl::MutexLock lock(&mu_);
  if (stopping_) return ShuttingDown();
  auto it = entries_.find(name);
  if (it == entries_.end()) {
    if (!create) return absl::NotFoundError(absl::StrCat("adapter \"", name, "\" is not loaded"));
    it = entries_.emplace(name, Entry()).first;
  }
  Entry& e = it->second;
  if (prepare) prepare(e);
  EnqueueLocked(name, e, std::move(op));
  return absl::OkStatus();
}

void Registry::EnqueueLocked(const std::string& name, Entry& e, Op op) {
  e.ops.push_back(std::move(op));
  if (!e.running && e.ops.size() == 1) runnable_.push_back(name);
}

void Registry::WorkerLoop() {
  for (;;) {
    std::string name;
    Op op;
    {
      absl::MutexLock lock(&mu_, absl::Condition(this, &Registry::HasWork));
      if (stopping_) return;
      name = std::move(runnable_.front());
      runnable_.pop_front();
      Entry& e = entries_[name];
      op = std::move(e.ops.front());
      e.ops.pop_front();
      e.running = true;
    }
    Reply reply = op(/*run=*/true);
    {
      absl::MutexLock lock(&mu_);
      Entry& e = entries_[name];
      e.running = false;
      if (!e.ops.empty() && !stopping_) {
        runnable_.push_back(name);
      } else {
        MaybeErase(name);
      }
    }
    ReportMetrics();
    reply();
  }
}

void Registry::LoadAsync(LoadRequest request, InfoCallback done) {
  if (absl::Status s = ValidateAdapterName(request.name); !s.ok()) {
    done(s);
    return;
  }
  const std::string name = request.name;
  auto show_loading = [&request](Entry& e) {
    // The served version (resident or evicted) shows until the new one is READY.
    if (e.current != nullptr || e.evicted) return;
    e.info = AdapterInfo();
    e.info.name = request.name;
    e.info.version = request.version;
    e.info.path = request.path;
    e.info.state = AdapterState::kLoading;
  };
  auto op = [this, request, done](bool run) -> Reply {
    absl::StatusOr<AdapterInfo> result = run ? RunLoad(request) : ShuttingDown();
    return [done, result = std::move(result)]() mutable { done(std::move(result)); };
  };
  if (absl::Status s = Enqueue(name, /*create=*/true, show_loading, std::move(op)); !s.ok()) {
    done(s);
  }
}

absl::StatusOr<AdapterInfo> Registry::RunLoad(const LoadRequest& request) {
  const std::string& name = request.name;
  int64_t version = request.version;
  std::string dir = request.path;
  absl::Status resolved;
  if (dir.empty()) {
    if (version <= 0) {
      absl::StatusOr<int64_t> latest = options_.store->LatestVersion(name);
      if (latest.ok()) version = *latest;
      resolved = latest.status();
    }
    dir = options_.store->VersionDir(name, version);
  }
  if (resolved.ok()) {
    std::optional<AdapterInfo> unchanged;
    {
      absl::MutexLock lock(&mu_);
      Entry& e = entries_[name];
      const bool served = e.current != nullptr || e.evicted;  // info shows what is served
      const bool same_dir = served && e.info.path == dir;
      auto high = store_high_water_.find(name);
      if (request.only_past_served && high != store_high_water_.end() && version <= high->second) {
        if (served) {
          unchanged = e.info;
        } else {
          resolved = absl::AbortedError(absl::StrCat("adapter \"", name, "\" version ", version,
                                                     " was served here before; not reloaded"));
        }
      } else if (served && !request.pin &&
                 (version < e.info.version || (version == e.info.version && same_dir))) {
        unchanged = e.info;  // versions only move forward; or already serving this one
      } else if (!served) {
        e.info.version = version;
        e.info.path = dir;
      }
    }
    if (unchanged.has_value()) return *std::move(unchanged);
  }
  const absl::Time start = absl::Now();
  absl::StatusOr<std::shared_ptr<const Adapter>> loaded =
      resolved.ok() ? options_.loader(dir, name, version) : resolved;
  const double seconds = absl::ToDoubleSeconds(absl::Now() - start);
  absl::StatusOr<AdapterInfo> result;
  bool swap = false;
  int evictions = 0;
  {
    absl::MutexLock lock(&mu_);
    Entry& e = entries_[name];
    swap = e.current != nullptr || e.evicted;
    if (loaded.ok()) {
      if (request.path.empty()) {
        int64_t& high = store_high_water_[name];
        high = std::max(high, version);
      }
      e.current = *std::move(loaded);  // the old version retires when its last request lets go
      e.evicted = false;
      e.evictable = true;
      e.last_used = ++use_clock_;
      e.info = InfoOf(*e.current);
      result = e.info;
      evictions = EvictOverBudget(name);
    } else {
      result = loaded.status();
      if (swap) {
        e.info.error = absl::StrCat("loading version ", version, " failed (version ",
                                    e.info.version, " keeps serving): ", loaded.status().message());
      } else if (!resolved.ok()) {
        e.info.state = AdapterState::kLoading;  // nothing by that name: the entry goes away
      } else {
        e.info.state = AdapterState::kFailed;
        e.info.error = std::string(loaded.status().message());
      }
    }
  }
  if (options_.metrics != nullptr && resolved.ok()) {  // the loader ran
    options_.metrics->RecordAdapterLoad(loaded.ok(), swap, seconds);
    options_.metrics->RecordAdapterEvictions(evictions);
  }
  return result;
}

int Registry::EvictOverBudget(const std::string& keep) {
  if (options_.memory_budget_bytes <= 0) return 0;
  int64_t resident = ResidentBytesLocked();
  int evicted = 0;
  while (resident > options_.memory_budget_bytes) {
    Entry* lru = nullptr;
    for (auto& [name, e] : entries_) {
      if (e.current == nullptr || !e.evictable || name == keep) continue;
      if (lru == nullptr || e.last_used < lru->last_used) lru = &e;
    }
    if (lru == nullptr) break;
    resident -= lru->current->memory_bytes;
    lru->current.reset();  // in-flight requests keep their own references
    lru->evicted = true;
    lru->info.resident = false;
    ++evicted;
  }
  return evicted;
}

int64_t Registry::ResidentBytesLocked() const {
  int64_t bytes = 0;
  for (const auto& [name, e] : entries_) {
    if (e.current != nullptr) bytes += e.current->memory_bytes;
  }
  return bytes;
}

int64_t Registry::resident_bytes() const {
  absl::MutexLock lock(&mu_);
  return ResidentBytesLocked();
}

void Registry::AcquireAsync(const std::string& name, absl::Time deadline, AdapterCallback done) {
  absl::StatusOr<std::shared_ptr<const Adapter>> now;
  {
    absl::MutexLock lock(&mu_);
    auto it = entries_.find(name);
    if (it != entries_.end() && it->second.evicted && !stopping_) {
      Entry& e = it->second;
      e.waiters.push_back({deadline, std::move(done)});
      if (!e.reload_queued) {
        e.reload_queued = true;
        EnqueueLocked(name, e, [this, name](bool run) { return RunReload(name, run); });
      }
      return;
    }
    now = it == entries_.end()
              ? absl::NotFoundError(absl::StrCat("adapter \"", name, "\" not found"))
              : Lookup(name, it->second);
    if (now.ok()) it->second.last_used = ++use_clock_;
  }
  done(std::move(now));
}

Registry::Reply Registry::RunReload(const std::string& name, bool run) {
  std::vector<Entry::Waiter> waiters;
  std::string dir;
  int64_t version = 0;
  bool reload = false;
  absl::StatusOr<std::shared_ptr<const Adapter>> result = ShuttingDown();
  {
    absl::MutexLock lock(&mu_);
    Entry& e = entries_[name];
    e.reload_queued = false;
    if (!run) {
      waiters.swap(e.waiters);
    } else if (e.evicted) {
      reload = true;
      dir = e.info.path;
      version = e.info.version;
    } else {  // a newer version was loaded, or the name unloaded, since the reload was queued
      waiters.swap(e.waiters);
      result = Lookup(name, e);
    }
  }
  if (reload) {
    const absl::Time start = absl::Now();
    absl::StatusOr<std::shared_ptr<const Adapter>> loaded = options_.loader(dir, name, version);
    const double seconds = absl::ToDoubleSeconds(absl::Now() - start);
    int evictions = 0;
    {
      absl::MutexLock lock(&mu_);
      Entry& e = entries_[name];
      waiters.swap(e.waiters);
      e.evicted = false;
      if (loaded.ok()) {
        e.current = *loaded;
        e.last_used = ++use_clock_;
        e.info.resident = true;
        evictions = EvictOverBudget(name);
        result = *std::move(loaded);
      } else {
        e.info.state = AdapterState::kFailed;
        e.info.resident = false;
        e.info.error = absl::StrCat("reloading evicted version ", version,
                                    " failed: ", loaded.status().message());
        result = Lookup(name, e);
      }
    }
    if (options_.metrics != nullptr) {
      options_.metrics->RecordAdapterReload(loaded.ok(), seconds);
      options_.metrics->RecordAdapterEvictions(evictions);
    }
  }
  return [waiters = std::move(waiters), result = std::move(result)]() {
    const absl::Time now = absl::Now();
    for (const Entry::Waiter& w : waiters) {
      if (result.ok() && now > w.deadline) {
        w.done(
            absl::DeadlineExceededError("the deadline passed while the evicted adapter was "
                                        "reloaded"));
      } else {
        w.done(result);
      }
    }
  };
}

int64_t Registry::HighestStoreVersion(const std::string& name) const {
  absl::MutexLock lock(&mu_);
  auto it = store_high_water_.find(name);
  return it == store_high_water_.end() ? 0 : it->second;
}

void Registry::ForgetStoreVersions(const std::string& name) {
  absl::MutexLock lock(&mu_);
  store_high_water_.erase(name);
}

void Registry::UnloadAsync(const std::string& name, StatusCallback done) {
  auto op = [this, name, done](bool run) -> Reply {
    absl::Status result = run ? RunUnload(name) : ShuttingDown();
    return [done, result] { done(result); };
  };
  if (absl::Status s = Enqueue(name, /*create=*/false, nullptr, std::move(op)); !s.ok()) done(s);
}

absl::Status Registry::RunUnload(const std::string& name) {
  absl::Status status;
  {
    absl::MutexLock lock(&mu_);
    Entry& e = entries_[name];
    if (e.current != nullptr || e.evicted) {
      if (e.current != nullptr) e.draining.push_back(e.current);  // requests finish on it
      e.current.reset();
      e.evicted = false;
      e.info.state = AdapterState::kUnloading;
      e.info.error.clear();
    } else if (e.info.state == AdapterState::kFailed) {
      e.info.state = AdapterState::kUnloading;  // nothing to drain: erased after this op
    } else {
      status = absl::NotFoundError(absl::StrCat("adapter \"", name, "\" is not loaded"));
    }
  }
  if (status.ok() && options_.metrics != nullptr) options_.metrics->RecordAdapterUnload();
  return status;
}

absl::StatusOr<AdapterInfo> Registry::Load(LoadRequest request) {
  absl::Notification loaded;
  absl::StatusOr<AdapterInfo> result;
  LoadAsync(std::move(request), [&](absl::StatusOr<AdapterInfo> r) {
    result = std::move(r);
    loaded.Notify();
  });
  loaded.WaitForNotification();
  return result;
}

absl::Status Registry::Unload(const std::string& name) {
  absl::Notification unloaded;
  absl::Status result;
  UnloadAsync(name, [&](absl::Status s) {
    result = std::move(s);
    unloaded.Notify();
  });
  unloaded.WaitForNotification();
  return result;
}

absl::Status Registry::LoadAll() {
  absl::StatusOr<std::vector<std::string>> names = options_.store->ListAdapters();
  if (!names.ok()) return names.status();
  absl::BlockingCounter pending(static_cast<int>(names->size()));
  for (const std::string& name : *names) {
    LoadRequest request;
    request.name = name;
    // Recorded per adapter (FAILED with the error).
    LoadAsync(std::move(request),
              [&pending](absl::StatusOr<AdapterInfo>) { pending.DecrementCount(); });
  }
  pending.Wait();
  return absl::OkStatus();
}

absl::Status Registry::Add(std::shared_ptr<const Adapter> adapter) {
  if (absl::Status s = ValidateAdapterName(adapter->name); !s.ok()) return s;
  {
    absl::MutexLock lock(&mu_);
    Purge();
    if (entries_.count(adapter->name) > 0) {
      return absl::AlreadyExistsError(
          absl::StrCat("adapter \"", adapter->name, "\" is already registered"));
    }
    Entry& e = entries_[adapter->name];
    e.info = InfoOf(*adapter);
    e.current = std::move(adapter);
    e.last_used = ++use_clock_;
  }
  ReportMetrics();
  return absl::OkStatus();
}

absl::StatusOr<std::shared_ptr<const Adapter>> Registry::Acquire(const std::string& name) const {
  absl::MutexLock lock(&mu_);
  auto it = entries_.find(name);
  if (it == entries_.end()) {
    return absl::NotFoundError(absl::StrCat("adapter \"", name, "\" not found"));
  }
  absl::StatusOr<std::shared_ptr<const Adapter>> result = Lookup(name, it->second);
  if (result.ok()) it->second.last_used = ++use_clock_;
  return result;
}

absl::StatusOr<std::shared_ptr<const Adapter>> Registry::Lookup(const std::string& name,
                                                                const Entry& e) {
  if (e.current != nullptr) return e.current;
  if (e.evicted) {
    return absl::UnavailableError(
        absl::StrCat("adapter \"", name, "\" is evicted from memory; it reloads on request"));
  }
  switch (e.info.state) {
    case AdapterState::kFailed:
      return absl::FailedPreconditionError(
          absl::StrCat("adapter \"", name, "\" failed to load: ", e.info.error));
    case AdapterState::kUnloading:
      return absl::NotFoundError(absl::StrCat("adapter \"", name, "\" is being unloaded"));
    default:
      return absl::UnavailableError(absl::StrCat("adapter \"", name, "\" is still loading"));
  }
}

absl::StatusOr<AdapterInfo> Registry::Get(const std::string& name) const {
  absl::MutexLock lock(&mu_);
  Purge();
  auto it = entries_.find(name);
  if (it == entries_.end()) {
    return absl::NotFoundError(absl::StrCat("adapter \"", name, "\" not found"));
  }
  return it->second.info;
}

std::vector<AdapterInfo> Registry::List() const {
  absl::MutexLock lock(&mu_);
  Purge();
  std::vector<AdapterInfo> out;
  for (const auto& [name, e] : entries_) out.push_back(e.info);
  return out;
}

int Registry::ready_count() const {
  absl::MutexLock lock(&mu_);
  int n = 0;
  for (const auto& [name, e] : entries_) n += e.current != nullptr || e.evicted;
  return n;
}

void Registry::MaybeErase(const std::string& name) const {
  auto it = entries_.find(name);
  if (it == entries_.end()) return;
  const Entry& e = it->second;
  if (e.running || !e.ops.empty() || e.current != nullptr || e.evicted ||
      e.info.state == AdapterState::kFailed || Draining(e.draining)) {
    return;
  }
  entries_.erase(it);
}

void Registry::Purge() const {
  std::vector<std::string> names;
  for (auto& [name, e] : entries_) {
    e.draining.erase(
        std::remove_if(e.draining.begin(), e.draining.end(),
                       [](const std::weak_ptr<const Adapter>& v) { return v.expired(); }),
        e.draining.end());
    if (e.current == nullptr && e.info.state == AdapterState::kUnloading) names.push_back(name);
  }
  for (const std::string& name : names) MaybeErase(name);
}

void Registry::ReportMetrics() const {
  if (options_.metrics == nullptr) return;
  options_.metrics->SetAdaptersReady(ready_count());
  options_.metrics->SetAdapterResidentBytes(resident_bytes());
}

}  // namespace loracle::adapters
