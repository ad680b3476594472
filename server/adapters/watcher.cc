#include "server/adapters/watcher.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/inotify.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "server/adapters/adapter_config.h"
#include "server/adapters/registry.h"
#include "server/adapters/store.h"
#include "server/util/file_util.h"
#include "server/util/log.h"

namespace loracle::adapters {

namespace {

constexpr uint32_t kEvents =
    IN_CREATE | IN_DELETE | IN_MOVED_TO | IN_MOVED_FROM | IN_DELETE_SELF | IN_ONLYDIR;

}  // namespace

struct Watcher::Shared {
  absl::Mutex mu;
  // Loads queued and not answered yet, by name: a scan does not queue a second.
  absl::flat_hash_set<std::string> pending ABSL_GUARDED_BY(mu);
  // A name whose newest version failed to load: that version and its files' latest change
  // (util::NewestChangeNanos). It is retried when that moves: a directory copied in by hand,
  // seen half-written.
  absl::flat_hash_map<std::string, std::pair<int64_t, int64_t>> failed ABSL_GUARDED_BY(mu);
};

Watcher::Watcher(const Options& options) : options_(options), shared_(std::make_shared<Shared>()) {}

absl::StatusOr<std::unique_ptr<Watcher>> Watcher::Create(const Options& options) {
  if (options.store == nullptr || options.registry == nullptr) {
    return absl::InvalidArgumentError("Watcher needs a store and a registry");
  }
  if (options.poll_interval <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError(absl::StrCat("store poll interval must be > 0, not ",
                                                   absl::FormatDuration(options.poll_interval)));
  }
  std::unique_ptr<Watcher> w(new Watcher(options));
  if (::pipe2(w->wake_fds_, O_CLOEXEC | O_NONBLOCK) != 0) {
    return absl::InternalError(absl::StrCat("Watcher: pipe: ", std::strerror(errno)));
  }
  if (options.use_inotify) {
    w->inotify_fd_ = ::inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    if (w->inotify_fd_ < 0) {
      LORACLE_LOG(WARNING, "store watcher: no inotify (%s); polling %s every %s",
                  std::strerror(errno), options.store->root().c_str(),
                  absl::FormatDuration(options.poll_interval).c_str());
    }
  }
  {
    absl::MutexLock lock(&w->scan_mu_);
    w->WatchDir(options.store->root());
  }
  w->thread_ = std::thread([raw = w.get()] { raw->Run(); });
  return w;
}

Watcher::~Watcher() {
  if (thread_.joinable()) {
    const char stop = 1;
    while (::write(wake_fds_[1], &stop, 1) < 0 && errno == EINTR) {
    }
    thread_.join();
  }
  for (int fd : {inotify_fd_, wake_fds_[0], wake_fds_[1]}) {
    if (fd >= 0) ::close(fd);
  }
}

void Watcher::WatchDir(const std::string& dir) {
  if (inotify_fd_ < 0 || watched_.contains(dir)) return;
  if (const int wd = ::inotify_add_watch(inotify_fd_, dir.c_str(), kEvents); wd >= 0) {
    watched_.insert(dir);
    watch_paths_[wd] = dir;
  }  // else: polling still covers it (e.g. the per-user watch limit was reached)
}

bool Watcher::DrainEvents() {
  bool any = false;
  alignas(inotify_event) char buffer[16384];
  while (true) {
    const ssize_t n = ::read(inotify_fd_, buffer, sizeof(buffer));
    if (n <= 0) break;
    for (ssize_t at = 0; at < n;) {
      const auto* e = reinterpret_cast<const inotify_event*>(buffer + at);
      any = true;
      if ((e->mask & IN_IGNORED) != 0) {  // a watched directory went away
        absl::MutexLock lock(&scan_mu_);
        if (auto w = watch_paths_.find(e->wd); w != watch_paths_.end()) {
          watched_.erase(w->second);
          watch_paths_.erase(w);
        }
      }
      at += static_cast<ssize_t>(sizeof(inotify_event) + e->len);
    }
  }
  return any;
}

void Watcher::Run() {
  ScanNow();
  absl::Time next = absl::Now() + options_.poll_interval;
  while (true) {
    const int timeout_ms =
        static_cast<int>(std::max<int64_t>(0, absl::ToInt64Milliseconds(next - absl::Now())));
    pollfd fds[2] = {{wake_fds_[0], POLLIN, 0}, {inotify_fd_, POLLIN, 0}};
    const int ready = ::poll(fds, inotify_fd_ >= 0 ? 2 : 1, timeout_ms);
    if (ready < 0 && errno != EINTR) return;
    if ((fds[0].revents & POLLIN) != 0) return;  // the destructor
    bool changed = false;
    if (inotify_fd_ >= 0 && (fds[1].revents & POLLIN) != 0) {
      // A publish is a rename of a complete directory; deletions come in bursts. Let a burst
      // settle, then scan once for all of it.
      pollfd stop{wake_fds_[0], POLLIN, 0};
      if (::poll(&stop, 1, static_cast<int>(absl::ToInt64Milliseconds(options_.settle))) > 0) {
        return;
      }
      changed = DrainEvents();
    }
    if (changed || absl::Now() >= next) {
      ScanNow();
      next = absl::Now() + options_.poll_interval;
    }
  }
}

void Watcher::ScanNow() {
  absl::MutexLock scan_lock(&scan_mu_);
  Store& store = *options_.store;
  Registry& registry = *options_.registry;
  const std::string prefix = store.root() + "/";
  auto from_store = [&](const AdapterInfo& info) {
    return absl::StartsWith(info.path, absl::StrCat(prefix, info.name, "/"));
  };

  absl::StatusOr<std::vector<std::string>> names = store.ListAdapters();
  if (!names.ok()) return;  // unreadable now (a remount): the next scan tries again
  if (inotify_fd_ >= 0) {   // every name directory, even one whose first version is not in yet
    absl::StatusOr<std::vector<std::string>> entries = util::ListDir(store.root());
    for (const std::string& e : entries.ok() ? *entries : std::vector<std::string>()) {
      if (ValidateAdapterName(e).ok() && util::IsDirectory(prefix + e)) WatchDir(prefix + e);
    }
  }
  absl::flat_hash_set<std::string> in_store;
  std::vector<std::pair<LoadRequest, int64_t>> loads;  // and the newest version then
  for (const std::string& name : *names) {
    absl::StatusOr<std::vector<int64_t>> versions = store.ListVersions(name);
    if (!versions.ok() || versions->empty()) continue;
    in_store.insert(name);
    const int64_t newest = versions->back();
    const auto seen = seen_.find(name);
    const bool was_seen = seen != seen_.end();
    const bool changed = !was_seen || seen->second != newest;
    bool files_changed = false;  // of a version that failed to load
    {
      absl::MutexLock lock(&shared_->mu);
      if (shared_->pending.contains(name)) continue;  // seen_ kept: the change is still to do
      if (auto f = shared_->failed.find(name); f != shared_->failed.end()) {
        if (f->second.first == newest &&
            f->second.second == util::NewestChangeNanos(store.VersionDir(name, newest))) {
          seen_[name] = newest;
          continue;  // failed as it is now: not retried until it changes
        }
        files_changed = true;
      }
    }
    absl::StatusOr<AdapterInfo> info = registry.Get(name);
    if (info.ok() &&
        (info->state == AdapterState::kLoading || info->state == AdapterState::kUnloading)) {
      continue;  // someone else's operation; looked at again next scan
    }
    seen_[name] = newest;
    // Only versions past any this process served: an unload or pin by an operator stands.
    const bool unserved_news = changed && newest > registry.HighestStoreVersion(name);
    if (!info.ok()) {
      if (unserved_news) loads.push_back({{name, newest, "", /*pin=*/false}, newest});
      continue;
    }
    if (!from_store(*info)) continue;
    if (info->state == AdapterState::kFailed) {
      if ((changed && was_seen) || files_changed) {
        loads.push_back(
            {{name, newest, "", /*pin=*/true}, newest});  // a new version, or fixed files
      } else {  // failed before this watcher looked (the server's first LoadAll): as it is now
        absl::MutexLock lock(&shared_->mu);
        shared_->failed[name] = {newest, util::NewestChangeNanos(store.VersionDir(name, newest))};
      }
    } else if (!std::binary_search(versions->begin(), versions->end(), info->version) &&
               !util::IsDirectory(store.VersionDir(name, info->version))) {
      // The served version was deleted (checked now: the listing may predate a publish the
      // registry already loaded). Back to the newest left, resolved when the load runs.
      loads.push_back({{name, 0, "", /*pin=*/true}, newest});
    } else if (unserved_news && newest > info->version) {
      loads.push_back({{name, newest, "", /*pin=*/false}, newest});
    }
  }
  std::vector<std::string> gone;
  for (const auto& [name, newest] : seen_) {
    if (!in_store.contains(name)) gone.push_back(name);
  }
  for (const std::string& name : gone) {
    seen_.erase(name);
    registry.ForgetStoreVersions(name);
  }
  std::vector<std::string> unloads;
  for (const AdapterInfo& info : registry.List()) {
    if (in_store.contains(info.name) || !from_store(info) ||
        info.state == AdapterState::kUnloading || store.ListVersions(info.name).ok()) {
      continue;  // (checked now too: the listing may predate a publish already loaded)
    }
    absl::MutexLock lock(&shared_->mu);
    if (!shared_->pending.contains(info.name)) unloads.push_back(info.name);
  }

  // Queued without a lock held: a registry that is shutting down answers on this thread.
  for (auto& [request, newest] : loads) {
    {
      absl::MutexLock lock(&shared_->mu);
      shared_->pending.insert(request.name);
    }
    request.only_past_served = !request.pin;
    const std::string dir = store.VersionDir(request.name, newest);
    registry.LoadAsync(request, [shared = shared_, name = request.name, version = newest,
                                 dir](absl::StatusOr<AdapterInfo> result) {
      const int64_t change = result.ok() ? 0 : util::NewestChangeNanos(dir);
      absl::MutexLock lock(&shared->mu);
      shared->pending.erase(name);
      if (result.ok()) {
        shared->failed.erase(name);
      } else if (result.status().code() != absl::StatusCode::kUnavailable &&
                 result.status().code() != absl::StatusCode::kAborted) {
        shared->failed[name] = {version, change};
      }
    });
  }
  for (const std::string& name : unloads) {
    {
      absl::MutexLock lock(&shared_->mu);
      shared_->pending.insert(name);
      shared_->failed.erase(name);
    }
    registry.UnloadAsync(name, [shared = shared_, name](absl::Status) {
      absl::MutexLock lock(&shared->mu);
      shared->pending.erase(name);
    });
  }
}

}  // namespace loracle::adapters
