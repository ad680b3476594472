#include "server/adapters/registry.h"

#include <gtest/gtest.h>

#include <map>
#include <memory>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "server/adapters/store.h"
#include "server/util/file_util.h"
#include "tests/support/test_util.h"

// The registry's lifecycle, each race driven deterministically: the injected loader blocks on a
// latch for the versions a test chooses, so "an unload arrives while the load is in flight" is
// an order of events, not a timing.
namespace loracle::adapters {
namespace {

using testing::TempDir;

// A loader that records what it loaded and can hold chosen versions until released.
class FakeLoader {
 public:
  // Loads of (name, version) block until Release(name, version); Entered() says one is waiting.
  void Block(const std::string& name, int64_t version) {
    absl::MutexLock lock(&mu_);
    gates_[{name, version}] = std::make_unique<Gate>();
  }
  void WaitEntered(const std::string& name, int64_t version) {
    Gate* g = GateFor(name, version);
    ASSERT_NE(g, nullptr);
    ASSERT_TRUE(g->entered.WaitForNotificationWithTimeout(absl::Seconds(30)));
  }
  void Release(const std::string& name, int64_t version) { GateFor(name, version)->open.Notify(); }
  void Fail(const std::string& name, int64_t version, absl::Status error) {
    absl::MutexLock lock(&mu_);
    failures_[{name, version}] = std::move(error);
  }

  Registry::Loader loader() {
    return [this](const std::string& dir, const std::string& name,
                  int64_t version) -> absl::StatusOr<std::shared_ptr<const Adapter>> {
      if (Gate* g = GateFor(name, version); g != nullptr) {
        g->entered.Notify();
        g->open.WaitForNotification();
      }
      {
        absl::MutexLock lock(&mu_);
        if (auto it = failures_.find({name, version}); it != failures_.end()) return it->second;
      }
      if (!util::IsDirectory(dir)) return absl::NotFoundError(absl::StrCat(dir, " is missing"));
      Adapter a;
      a.name = name;
      a.version = version;
      a.path = dir;
      a.serving.labels = {"a", "b"};
      return std::make_shared<const Adapter>(std::move(a));
    };
  }

 private:
  struct Gate {
    absl::Notification entered, open;
  };
  Gate* GateFor(const std::string& name, int64_t version) {
    absl::MutexLock lock(&mu_);
    auto it = gates_.find({name, version});
    return it == gates_.end() ? nullptr : it->second.get();
  }
  absl::Mutex mu_;
  std::map<std::pair<std::string, int64_t>, std::unique_ptr<Gate>> gates_ ABSL_GUARDED_BY(mu_);
  std::map<std::pair<std::string, int64_t>, absl::Status> failures_ ABSL_GUARDED_BY(mu_);
};

// Collects an async result.
template <typename T>
struct Result {
  absl::Notification done;
  T value;
  void Set(T v) {
    value = std::move(v);
    done.Notify();
  }
  const T& Wait() {
    EXPECT_TRUE(done.WaitForNotificationWithTimeout(absl::Seconds(30)));
    return value;
  }
};

class RegistryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    store_ = *Store::Create({dir_.path()});
    registry_ = *Registry::Create({store_.get(), loader_.loader(), /*load_threads=*/2});
  }
  // Publishes the next version of `name` (an empty directory: the fake loader reads nothing).
  int64_t Publish(const std::string& name) {
    return *store_->Publish(name, [](const std::string&) { return absl::OkStatus(); });
  }
  static LoadRequest Newest(const std::string& name) { return {name, 0, "", false}; }

  TempDir dir_;
  FakeLoader loader_;
  std::unique_ptr<Store> store_;
  std::unique_ptr<Registry> registry_;
};

TEST_F(RegistryTest, LoadingThenReadyThenUnloadedAndGone) {
  Publish("a");
  loader_.Block("a", 1);
  Result<absl::StatusOr<AdapterInfo>> load;
  registry_->LoadAsync(Newest("a"), [&](absl::StatusOr<AdapterInfo> r) { load.Set(std::move(r)); });
  loader_.WaitEntered("a", 1);
  EXPECT_EQ(registry_->Get("a")->state, AdapterState::kLoading);
  EXPECT_EQ(registry_->Acquire("a").status().code(), absl::StatusCode::kUnavailable);
  loader_.Release("a", 1);
  ASSERT_TRUE(load.Wait().ok()) << load.value.status();
  EXPECT_EQ(load.value->state, AdapterState::kReady);
  EXPECT_EQ(registry_->Get("a")->version, 1);
  EXPECT_EQ(registry_->ready_count(), 1);
  ASSERT_TRUE(registry_->Unload("a").ok());
  EXPECT_EQ(registry_->Get("a").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(registry_->ready_count(), 0);
  EXPECT_EQ(registry_->Unload("a").code(), absl::StatusCode::kNotFound);
}

TEST_F(RegistryTest, UnloadDuringLoadRunsAfterItAndWins) {
  Publish("a");
  loader_.Block("a", 1);
  Result<absl::StatusOr<AdapterInfo>> load;
  Result<absl::Status> unload;
  registry_->LoadAsync(Newest("a"), [&](absl::StatusOr<AdapterInfo> r) { load.Set(std::move(r)); });
  loader_.WaitEntered("a", 1);
  registry_->UnloadAsync("a", [&](absl::Status s) { unload.Set(std::move(s)); });
  EXPECT_FALSE(unload.done.HasBeenNotified()) << "the unload waits for the load of its name";
  loader_.Release("a", 1);
  ASSERT_TRUE(load.Wait().ok());
  ASSERT_TRUE(unload.Wait().ok()) << unload.value;
  // The load finishing does not bring the name back: the unload came after it.
  EXPECT_EQ(registry_->Get("a").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(registry_->Acquire("a").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(registry_->List().size(), 0u);
}

TEST_F(RegistryTest, NewerLoadArrivingDuringASlowOlderLoadEndsOnTheNewer) {
  Publish("a");
  loader_.Block("a", 1);
  Result<absl::StatusOr<AdapterInfo>> older, newer;
  registry_->LoadAsync(Newest("a"),
                       [&](absl::StatusOr<AdapterInfo> r) { older.Set(std::move(r)); });
  loader_.WaitEntered("a", 1);
  Publish("a");  // version 2 appears while version 1 is still loading
  registry_->LoadAsync(Newest("a"),
                       [&](absl::StatusOr<AdapterInfo> r) { newer.Set(std::move(r)); });
  loader_.Release("a", 1);
  ASSERT_TRUE(older.Wait().ok());
  ASSERT_TRUE(newer.Wait().ok());
  EXPECT_EQ(older.value->version, 1);
  EXPECT_EQ(newer.value->version, 2);
  EXPECT_EQ(registry_->Get("a")->version, 2);
  EXPECT_EQ((*registry_->Acquire("a"))->version, 2);
}

TEST_F(RegistryTest, OlderVersionAfterNewerOnlyWhenPinned) {
  Publish("a");
  Publish("a");
  ASSERT_EQ(registry_->Load(Newest("a"))->version, 2);
  // An unpinned load of an older version (a late publish notification) changes nothing.
  absl::StatusOr<AdapterInfo> late = registry_->Load({"a", 1, "", /*pin=*/false});
  ASSERT_TRUE(late.ok()) << late.status();
  EXPECT_EQ(late->version, 2);
  EXPECT_EQ((*registry_->Acquire("a"))->version, 2);
  // An operator's explicit rollback does.
  absl::StatusOr<AdapterInfo> rollback = registry_->Load({"a", 1, "", /*pin=*/true});
  ASSERT_TRUE(rollback.ok()) << rollback.status();
  EXPECT_EQ(rollback->version, 1);
  EXPECT_EQ((*registry_->Acquire("a"))->version, 1);
  EXPECT_EQ(registry_->Get("a")->state, AdapterState::kReady);
}

TEST_F(RegistryTest, UnloadWhileRequestsHoldTheVersionFreesItOnlyAfterThey) {
  Publish("a");
  ASSERT_TRUE(registry_->Load(Newest("a")).ok());
  std::shared_ptr<const Adapter> in_flight = *registry_->Acquire("a");
  std::weak_ptr<const Adapter> watch = in_flight;
  ASSERT_TRUE(registry_->Unload("a").ok());
  absl::StatusOr<AdapterInfo> info = registry_->Get("a");
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->state, AdapterState::kUnloading);
  EXPECT_EQ(info->version, 1);
  EXPECT_EQ(registry_->Acquire("a").status().code(), absl::StatusCode::kNotFound)
      << "no new requests on an unloading adapter";
  EXPECT_FALSE(watch.expired()) << "the in-flight request still holds it";
  EXPECT_EQ(in_flight->version, 1);
  in_flight.reset();
  EXPECT_TRUE(watch.expired()) << "freed once the last request let go";
  EXPECT_EQ(registry_->Get("a").status().code(), absl::StatusCode::kNotFound);
}

TEST_F(RegistryTest, SwapFreesTheOldVersionWhenItsLastRequestLetsGo) {
  Publish("a");
  ASSERT_TRUE(registry_->Load(Newest("a")).ok());
  std::shared_ptr<const Adapter> in_flight = *registry_->Acquire("a");
  std::weak_ptr<const Adapter> v1 = in_flight;
  Publish("a");
  ASSERT_EQ(registry_->Load(Newest("a"))->version, 2);
  EXPECT_EQ((*registry_->Acquire("a"))->version, 2) << "new requests get the new version";
  EXPECT_FALSE(v1.expired());
  in_flight.reset();
  EXPECT_TRUE(v1.expired());
}

TEST_F(RegistryTest, FailedLoadKeepsThePreviousVersionServing) {
  Publish("a");
  ASSERT_TRUE(registry_->Load(Newest("a")).ok());
  Publish("a");
  loader_.Fail("a", 2, absl::InvalidArgumentError("adapter_model.safetensors: bad tensor"));
  absl::StatusOr<AdapterInfo> failed = registry_->Load(Newest("a"));
  EXPECT_EQ(failed.status().code(), absl::StatusCode::kInvalidArgument);
  absl::StatusOr<AdapterInfo> info = registry_->Get("a");
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->state, AdapterState::kReady);
  EXPECT_EQ(info->version, 1);
  EXPECT_NE(info->error.find("bad tensor"), std::string::npos) << info->error;
  EXPECT_EQ((*registry_->Acquire("a"))->version, 1);
}

TEST_F(RegistryTest, FailedFirstLoadIsListedFailedAndCanBeUnloaded) {
  Publish("a");
  loader_.Fail("a", 1, absl::DataLossError("truncated"));
  EXPECT_EQ(registry_->Load(Newest("a")).status().code(), absl::StatusCode::kDataLoss);
  absl::StatusOr<AdapterInfo> info = registry_->Get("a");
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->state, AdapterState::kFailed);
  EXPECT_EQ(info->error, "truncated");
  EXPECT_EQ(registry_->Acquire("a").status().code(), absl::StatusCode::kFailedPrecondition);
  ASSERT_TRUE(registry_->Unload("a").ok());
  EXPECT_EQ(registry_->Get("a").status().code(), absl::StatusCode::kNotFound);
}

TEST_F(RegistryTest, UnknownNamesAndBadNames) {
  EXPECT_EQ(registry_->Load(Newest("nothing")).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(registry_->Get("nothing").status().code(), absl::StatusCode::kNotFound)
      << "a load of a name the store lacks leaves no entry behind";
  EXPECT_EQ(registry_->Load(Newest("../x")).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(registry_->Unload("nothing").code(), absl::StatusCode::kNotFound);
}

TEST_F(RegistryTest, LoadsOfDifferentNamesRunInParallel) {
  Publish("a");
  Publish("b");
  loader_.Block("a", 1);
  Result<absl::StatusOr<AdapterInfo>> a;
  registry_->LoadAsync(Newest("a"), [&](absl::StatusOr<AdapterInfo> r) { a.Set(std::move(r)); });
  loader_.WaitEntered("a", 1);
  // With "a" blocked on one load thread, "b" loads on the other.
  absl::StatusOr<AdapterInfo> b = registry_->Load(Newest("b"));
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_EQ(registry_->Get("a")->state, AdapterState::kLoading);
  loader_.Release("a", 1);
  ASSERT_TRUE(a.Wait().ok());
  EXPECT_EQ(registry_->ready_count(), 2);
}

TEST_F(RegistryTest, LoadAllRecordsFailuresPerAdapter) {
  Publish("good");
  Publish("bad");
  loader_.Fail("bad", 1, absl::InvalidArgumentError("labels disagree"));
  ASSERT_TRUE(registry_->LoadAll().ok());
  EXPECT_EQ(registry_->Get("good")->state, AdapterState::kReady);
  EXPECT_EQ(registry_->Get("bad")->state, AdapterState::kFailed);
}

TEST_F(RegistryTest, QueuedOperationsAreAnsweredWhenTheRegistryShutsDown) {
  Publish("a");
  loader_.Block("a", 1);
  Result<absl::StatusOr<AdapterInfo>> first;
  Result<absl::Status> queued;
  registry_->LoadAsync(Newest("a"),
                       [&](absl::StatusOr<AdapterInfo> r) { first.Set(std::move(r)); });
  loader_.WaitEntered("a", 1);
  registry_->UnloadAsync("a", [&](absl::Status s) { queued.Set(std::move(s)); });
  registry_->Shutdown();
  EXPECT_EQ(queued.Wait().code(), absl::StatusCode::kUnavailable) << queued.value;
  EXPECT_EQ(registry_->Load(Newest("a")).status().code(), absl::StatusCode::kUnavailable);
  EXPECT_FALSE(first.done.HasBeenNotified()) << "Shutdown does not wait for the running load";
  loader_.Release("a", 1);
  registry_.reset();  // waits for it
  EXPECT_TRUE(first.Wait().ok()) << "the running load finished";
}

TEST_F(RegistryTest, AddServesAnAdapterBuiltElsewhere) {
  auto head = std::make_shared<Adapter>();
  head->name = "base";
  head->serving.labels = {"x", "y"};
  ASSERT_TRUE(registry_->Add(head).ok());
  EXPECT_EQ(registry_->Get("base")->state, AdapterState::kReady);
  EXPECT_EQ(registry_->Add(head).code(), absl::StatusCode::kAlreadyExists);
}

}  // namespace
}  // namespace loracle::adapters
