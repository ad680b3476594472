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
  e.ops.push_back(std::move(op));
  if (!e.running && e.ops.size() == 1) runnable_.push_back(name);
  return absl::OkStatus();
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
    if (e.current != nullptr) return;  // the served version shows until the new one is READY
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
      const bool same_dir = e.current != nullptr && e.current->path == dir;
      auto high = store_high_water_.find(name);
      if (request.only_past_served && high != store_high_water_.end() && version <= high->second) {
        if (e.current != nullptr) {
          unchanged = e.info;
        } else {
          resolved = absl::AbortedError(absl::StrCat("adapter \"", name, "\" version ", version,
                                                     " was served here before; not reloaded"));
        }
      } else if (e.current != nullptr && !request.pin &&
                 (version < e.current->version || (version == e.current->version && same_dir))) {
        unchanged = e.info;  // versions only move forward; or already serving this one
      } else if (e.current == nullptr) {
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
  {
    absl::MutexLock lock(&mu_);
    Entry& e = entries_[name];
    swap = e.current != nullptr;
    if (loaded.ok()) {
      if (request.path.empty()) {
        int64_t& high = store_high_water_[name];
        high = std::max(high, version);
      }
      e.current = *std::move(loaded);  // the old version retires when its last request lets go
      e.info = InfoOf(*e.current);
      result = e.info;
    } else {
      result = loaded.status();
      if (e.current != nullptr) {
        e.info.error =
            absl::StrCat("loading version ", version, " failed (version ", e.current->version,
                         " keeps serving): ", loaded.status().message());
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
  }
  return result;
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
    if (e.current != nullptr) {
      e.draining.push_back(e.current);  // requests holding it finish on it
      e.current.reset();
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
  const Entry& e = it->second;
  if (e.current != nullptr) return e.current;
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
  for (const auto& [name, e] : entries_) n += e.current != nullptr;
  return n;
}

void Registry::MaybeErase(const std::string& name) const {
  auto it = entries_.find(name);
  if (it == entries_.end()) return;
  const Entry& e = it->second;
  if (e.running || !e.ops.empty() || e.current != nullptr ||
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
  if (options_.metrics != nullptr) options_.metrics->SetAdaptersReady(ready_count());
}

}  // namespace loracle::adapters
