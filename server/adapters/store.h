#ifndef LORACLE_SERVER_ADAPTERS_STORE_H_
#define LORACLE_SERVER_ADAPTERS_STORE_H_

// The adapter store on disk: <root>/<name>/<version>/ with positive integer versions, as TF
// Serving's model base paths. Publish is atomic: a version directory appears complete or not
// at all (written into <root>/.tmp-*, fsynced, renamed).
//
// Thread-safety: every method may be called from any thread. Publish is serialised within this
// process; the listing methods read the directory as it is at the call.

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace loracle::adapters {

class Store {
 public:
  struct Options {
    std::string root;  // created if missing
  };
  static absl::StatusOr<std::unique_ptr<Store>> Create(const Options& options);

  // Adapter names with at least one version, sorted.
  absl::StatusOr<std::vector<std::string>> ListAdapters() const;
  // Versions of `name`, ascending. NOT_FOUND when there are none.
  absl::StatusOr<std::vector<int64_t>> ListVersions(const std::string& name) const;
  absl::StatusOr<int64_t> LatestVersion(const std::string& name) const;
  std::string VersionDir(const std::string& name, int64_t version) const;
  const std::string& root() const { return options_.root; }

  // Creates version latest+1 of `name`: `write` fills an empty temporary directory, which is
  // then fsynced and renamed into place. Returns the new version. Thread-safe.
  absl::StatusOr<int64_t> Publish(const std::string& name,
                                  const std::function<absl::Status(const std::string& dir)>& write)
      ABSL_LOCKS_EXCLUDED(publish_mu_);

  // Removes the staging directories (<root>/.tmp-*) in which nothing changed for `age`: left by
  // publishers that died mid-publish (SIGKILL, a lost node). Younger ones may be a live
  // publisher's in another process sharing the store, and stay. Never lists or touches versions.
  // Returns the paths removed.
  absl::StatusOr<std::vector<std::string>> RemoveStaleStaging(absl::Duration age) const;

 private:
  explicit Store(const Options& options) : options_(options) {}
  Options options_;
  absl::Mutex publish_mu_;  // serialises Publish within this process
};

}  // namespace loracle::adapters

#endif  // LORACLE_SERVER_ADAPTERS_STORE_H_
