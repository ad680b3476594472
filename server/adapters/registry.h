#ifndef LORACLE_SERVER_ADAPTERS_REGISTRY_H_
#define LORACLE_SERVER_ADAPTERS_REGISTRY_H_

// The adapters being served, by name, with their state. Loading a new version never interrupts
// the old one: the old version keeps serving until the new one is READY, then requests move to
// the new one and the old retires when its last in-flight request drops its handle. Torch-free.

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "server/adapters/adapter_config.h"

namespace loracle::model {
struct BaseModel;
}

namespace loracle::adapters {

struct Adapter;
class Store;

class Registry {
 public:
  struct Options {
    Store* store = nullptr;                  // not owned; outlives the registry
    const model::BaseModel* base = nullptr;  // not owned; outlives the registry
  };
  static absl::StatusOr<std::unique_ptr<Registry>> Create(const Options& options);

  // Loads the newest version of every adapter in the store. Failures are recorded per adapter
  // (state FAILED, with the error); the result is an error only if the store cannot be read.
  absl::Status LoadAll();

  // Loads `name` from `path` (a directory on the server) or, when empty, from the store
  // (`version`, 0 = newest), and makes it the served version. Blocking; thread-safe. On failure a
  // previously READY version keeps serving.
  absl::StatusOr<AdapterInfo> Load(const std::string& name, int64_t version = 0,
                                   const std::string& path = "");

  // Serves the base checkpoint's own classification head as adapter `name` (adapter.h
  // BaseHeadAdapter). NOT_FOUND when the checkpoint has none; ALREADY_EXISTS when `name` is taken.
  absl::Status AddBaseHead(const std::string& name);

  // Stops serving `name`. NOT_FOUND when unknown.
  absl::Status Unload(const std::string& name);

  // A handle for one request. NOT_FOUND (unknown), FAILED_PRECONDITION (failed to load, with the
  // reason), UNAVAILABLE (still loading).
  absl::StatusOr<std::shared_ptr<const Adapter>> Acquire(const std::string& name) const;

  absl::StatusOr<AdapterInfo> Get(const std::string& name) const;
  std::vector<AdapterInfo> List() const;
  int ready_count() const;

 private:
  explicit Registry(const Options& options) : options_(options) {}
  struct Entry {
    AdapterInfo info;
    std::shared_ptr<const Adapter> adapter;  // null unless READY
  };

  Options options_;
  mutable absl::Mutex mu_;
  std::map<std::string, Entry> entries_ ABSL_GUARDED_BY(mu_);
};

}  // namespace loracle::adapters

#endif  // LORACLE_SERVER_ADAPTERS_REGISTRY_H_
