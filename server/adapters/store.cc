#include "server/adapters/store.h"

#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "server/adapters/adapter_config.h"
#include "server/util/file_util.h"

namespace loracle::adapters {
namespace {

constexpr int kPublishAttempts = 16;  // versions taken by other publishers before ABORTED

bool ParseVersion(const std::string& s, int64_t* v) {
  if (s.empty() || s.size() > 18) return false;
  for (char c : s)
    if (c < '0' || c > '9') return false;
  return absl::SimpleAtoi(s, v) && *v > 0;
}

}  // namespace

absl::StatusOr<std::unique_ptr<Store>> Store::Create(const Options& options) {
  if (options.root.empty()) return absl::InvalidArgumentError("adapter store root is empty");
  if (absl::Status s = util::MakeDirs(options.root); !s.ok()) return s;
  return std::unique_ptr<Store>(new Store(options));
}

absl::StatusOr<std::vector<std::string>> Store::ListAdapters() const {
  absl::StatusOr<std::vector<std::string>> entries = util::ListDir(options_.root);
  if (!entries.ok()) return entries.status();
  std::vector<std::string> names;
  for (const std::string& e : *entries) {
    if (!ValidateAdapterName(e).ok() || !util::IsDirectory(options_.root + "/" + e)) continue;
    if (ListVersions(e).ok()) names.push_back(e);
  }
  return names;
}

absl::StatusOr<std::vector<int64_t>> Store::ListVersions(const std::string& name) const {
  if (absl::Status s = ValidateAdapterName(name); !s.ok()) return s;
  absl::StatusOr<std::vector<std::string>> entries = util::ListDir(options_.root + "/" + name);
  std::vector<int64_t> versions;
  if (entries.ok()) {
    for (const std::string& e : *entries) {
      int64_t v;
      if (ParseVersion(e, &v) && util::IsDirectory(VersionDir(name, v))) versions.push_back(v);
    }
  }
  if (versions.empty()) {
    return absl::NotFoundError(
        absl::StrCat("adapter \"", name, "\" has no versions in the store ", options_.root));
  }
  std::sort(versions.begin(), versions.end());
  return versions;
}

absl::StatusOr<int64_t> Store::LatestVersion(const std::string& name) const {
  absl::StatusOr<std::vector<int64_t>> v = ListVersions(name);
  if (!v.ok()) return v.status();
  return v->back();
}

std::string Store::VersionDir(const std::string& name, int64_t version) const {
  return absl::StrCat(options_.root, "/", name, "/", version);
}

absl::StatusOr<int64_t> Store::Publish(
    const std::string& name, const std::function<absl::Status(const std::string& dir)>& write) {
  if (absl::Status s = ValidateAdapterName(name); !s.ok()) return s;
  absl::MutexLock lock(&publish_mu_);
  absl::StatusOr<int64_t> latest = LatestVersion(name);
  const int64_t version = latest.ok() ? *latest + 1 : 1;
  // A name no other publisher can take, in this process or another on any host (replicas in
  // containers share pids): mkdtemp's random suffix.
  std::string tmp = absl::StrCat(options_.root, "/.tmp-", name, "-XXXXXX");
  if (::mkdtemp(tmp.data()) == nullptr) {
    return util::ErrnoStatus(errno,
                             absl::StrCat("publishing ", name, ": mkdtemp in ", options_.root));
  }
  absl::Status s = write(tmp);
  if (s.ok()) {
    absl::StatusOr<std::vector<std::string>> files = util::ListDir(tmp);
    if (files.ok()) {
      for (const std::string& f : *files) {
        if (util::IsDirectory(tmp + "/" + f)) util::FsyncDir(tmp + "/" + f).IgnoreError();
      }
    }
    s = util::FsyncDir(tmp);
  }
  if (s.ok()) s = util::MakeDirs(options_.root + "/" + name);
  // Other processes (replicas, trainers sharing the store) may publish the same name: the rename
  // never replaces a version, and a version taken meanwhile moves this one to the next number.
  int64_t published = version;
  for (int attempt = 0; s.ok(); ++attempt) {
    if (::renameat2(AT_FDCWD, tmp.c_str(), AT_FDCWD, VersionDir(name, published).c_str(),
                    RENAME_NOREPLACE) == 0) {
      break;
    }
    const int err = errno;
    if ((err == EEXIST || err == ENOTEMPTY) && attempt < kPublishAttempts) {
      absl::StatusOr<int64_t> now = LatestVersion(name);
      published = std::max(published, now.ok() ? *now : 0) + 1;
      continue;
    }
    if (err == EEXIST || err == ENOTEMPTY) {
      s = absl::AbortedError(absl::StrCat("publishing ", name, ": ", kPublishAttempts,
                                          " other publishers took the next version first"));
    } else {
      s = util::ErrnoStatus(
          err, absl::StrCat("publishing ", name, " version ", published, ": rename ", tmp));
    }
  }
  if (!s.ok()) {
    util::RemoveTree(tmp).IgnoreError();
    return s;
  }
  util::FsyncDir(options_.root + "/" + name).IgnoreError();
  return published;
}

absl::StatusOr<std::vector<std::string>> Store::RemoveStaleStaging(absl::Duration age) const {
  absl::StatusOr<std::vector<std::string>> entries = util::ListDir(options_.root);
  if (!entries.ok()) return entries.status();
  const int64_t cutoff = absl::ToUnixNanos(absl::Now() - age);
  std::vector<std::string> removed;
  for (const std::string& e : *entries) {
    const std::string path = absl::StrCat(options_.root, "/", e);
    if (e.rfind(".tmp-", 0) != 0 || !util::IsDirectory(path)) continue;
    // mtime only: a live publisher's writes move it (ctime would also move on a backup's chmod).
    if (util::NewestChangeNanos(path, /*ctime=*/false) >= cutoff) continue;
    if (absl::Status s = util::RemoveTree(path); !s.ok()) return s;
    removed.push_back(path);
  }
  return removed;
}

}  // namespace loracle::adapters
