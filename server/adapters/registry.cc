#include "server/adapters/registry.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "server/adapters/adapter.h"
#include "server/adapters/store.h"
#include "server/model/checkpoint.h"

namespace loracle::adapters {
namespace {

AdapterInfo InfoOf(const Adapter& a) {
  AdapterInfo info;
  info.name = a.name;
  info.version = a.version;
  info.state = AdapterState::kReady;
  info.path = a.path;
  info.serving = a.serving;
  info.lora = a.lora;
  return info;
}

}  // namespace

absl::StatusOr<std::unique_ptr<Registry>> Registry::Create(const Options& options) {
  if (options.store == nullptr || options.base == nullptr) {
    return absl::InvalidArgumentError("Registry needs a store and a base model");
  }
  return std::unique_ptr<Registry>(new Registry(options));
}

absl::Status Registry::LoadAll() {
  absl::StatusOr<std::vector<std::string>> names = options_.store->ListAdapters();
  if (!names.ok()) return names.status();
  for (const std::string& name : *names) Load(name).IgnoreError();  // recorded per adapter
  return absl::OkStatus();
}

absl::StatusOr<AdapterInfo> Registry::Load(const std::string& name, int64_t version,
                                           const std::string& path) {
  if (absl::Status s = ValidateAdapterName(name); !s.ok()) return s;
  std::string dir = path;
  if (dir.empty()) {
    if (version <= 0) {
      absl::StatusOr<int64_t> latest = options_.store->LatestVersion(name);
      if (!latest.ok()) return latest.status();
      version = *latest;
    }
    dir = options_.store->VersionDir(name, version);
  }
  {
    absl::MutexLock lock(&mu_);
    Entry& e = entries_[name];
    if (e.adapter == nullptr) {  // nothing served yet: show the load in progress
      e.info = AdapterInfo();
      e.info.name = name;
      e.info.version = version;
      e.info.path = dir;
      e.info.state = AdapterState::kLoading;
    }
  }
  absl::StatusOr<std::shared_ptr<const Adapter>> loaded =
      LoadAdapter(dir, name, version, *options_.base);
  absl::MutexLock lock(&mu_);
  Entry& e = entries_[name];
  if (!loaded.ok()) {
    if (e.adapter == nullptr) {
      e.info.state = AdapterState::kFailed;
      e.info.error = std::string(loaded.status().message());
    }
    return loaded.status();
  }
  e.adapter = *std::move(loaded);  // the old version retires when its last request lets go
  e.info = InfoOf(*e.adapter);
  return e.info;
}

absl::Status Registry::AddBaseHead(const std::string& name) {
  if (absl::Status s = ValidateAdapterName(name); !s.ok()) return s;
  absl::StatusOr<std::shared_ptr<const Adapter>> head = BaseHeadAdapter(*options_.base, name);
  if (!head.ok()) return head.status();
  absl::MutexLock lock(&mu_);
  if (entries_.count(name) > 0) {
    return absl::AlreadyExistsError(
        absl::StrCat("adapter \"", name, "\" exists in the store; the base head is not served"));
  }
  Entry& e = entries_[name];
  e.adapter = *std::move(head);
  e.info = InfoOf(*e.adapter);
  return absl::OkStatus();
}

absl::Status Registry::Unload(const std::string& name) {
  absl::MutexLock lock(&mu_);
  if (entries_.erase(name) == 0) {
    return absl::NotFoundError(absl::StrCat("adapter \"", name, "\" is not loaded"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::shared_ptr<const Adapter>> Registry::Acquire(const std::string& name) const {
  absl::MutexLock lock(&mu_);
  auto it = entries_.find(name);
  if (it == entries_.end()) {
    return absl::NotFoundError(absl::StrCat("adapter \"", name, "\" not found"));
  }
  const Entry& e = it->second;
  if (e.adapter != nullptr) return e.adapter;
  if (e.info.state == AdapterState::kFailed) {
    return absl::FailedPreconditionError(
        absl::StrCat("adapter \"", name, "\" failed to load: ", e.info.error));
  }
  return absl::UnavailableError(absl::StrCat("adapter \"", name, "\" is still loading"));
}

absl::StatusOr<AdapterInfo> Registry::Get(const std::string& name) const {
  absl::MutexLock lock(&mu_);
  auto it = entries_.find(name);
  if (it == entries_.end()) {
    return absl::NotFoundError(absl::StrCat("adapter \"", name, "\" not found"));
  }
  return it->second.info;
}

std::vector<AdapterInfo> Registry::List() const {
  absl::MutexLock lock(&mu_);
  std::vector<AdapterInfo> out;
  for (const auto& [name, e] : entries_) out.push_back(e.info);
  return out;
}

int Registry::ready_count() const {
  absl::MutexLock lock(&mu_);
  int n = 0;
  for (const auto& [name, e] : entries_) n += e.adapter != nullptr;
  return n;
}

}  // namespace loracle::adapters
