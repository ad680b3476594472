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

  // Every adapter loaded from now on reports `bytes` of weights.
  void SetBytes(int64_t bytes) {
    absl::MutexLock lock(&mu_);
    bytes_ = bytes;
  }
  // Successful loads of (name, version) so far.
  int Loads(const std::string& name, int64_t version) {
    absl::MutexLock lock(&mu_);
    auto it = loads_.find({name, version});
    return it == loads_.end() ? 0 : it->second;
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
      {
        absl::MutexLock lock(&mu_);
        a.memory_bytes = bytes_;
        ++loads_[{name, version}];
      }
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
  std::map<std::pair<std::string, int64_t>, int> loads_ ABSL_GUARDED_BY(mu_);
  int64_t bytes_ ABSL_GUARDED_BY(mu_) = 0;
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

namespace loracle::adapters {
namespace {

// The memory budget: 100-byte adapters under a 250-byte budget hold two resident at a time.
class RegistryBudgetTest : public ::testing::Test {
 protected:
  void SetUp() override {
    store_ = *Store::Create({dir_.path()});
    loader_.SetBytes(100);
    Registry::Options o{store_.get(), loader_.loader(), /*load_threads=*/2};
    o.memory_budget_bytes = 250;
    registry_ = *Registry::Create(o);
  }
  int64_t Publish(const std::string& name) {
    return *store_->Publish(name, [](const std::string&) { return absl::OkStatus(); });
  }
  void LoadNew(const std::string& name) {
    Publish(name);
    ASSERT_TRUE(registry_->Load({name, 0, "", false}).ok());
  }
  bool Resident(const std::string& name) {
    absl::StatusOr<AdapterInfo> info = registry_->Get(name);
    EXPECT_TRUE(info.ok()) << info.status();
    EXPECT_EQ(info->state, AdapterState::kReady) << name << ": " << info->error;
    return info->resident;
  }
  absl::StatusOr<std::shared_ptr<const Adapter>> AcquireAsync(
      const std::string& name, absl::Time deadline = absl::InfiniteFuture()) {
    Result<absl::StatusOr<std::shared_ptr<const Adapter>>> r;
    registry_->AcquireAsync(name, deadline, [&](absl::StatusOr<std::shared_ptr<const Adapter>> a) {
      r.Set(std::move(a));
    });
    return r.Wait();
  }

  TempDir dir_;
  FakeLoader loader_;
  std::unique_ptr<Store> store_;
  std::unique_ptr<Registry> registry_;
};

TEST_F(RegistryBudgetTest, LeastRecentlyUsedIsEvictedStaysReadyAndReloadsOnRequest) {
  LoadNew("a");
  LoadNew("b");
  ASSERT_TRUE(registry_->Acquire("a").ok());  // b is now the least recently used
  LoadNew("c");
  EXPECT_TRUE(Resident("a"));
  EXPECT_FALSE(Resident("b"));
  EXPECT_TRUE(Resident("c"));
  EXPECT_EQ(registry_->resident_bytes(), 200);
  EXPECT_EQ(registry_->ready_count(), 3) << "an evicted adapter is still served";
  EXPECT_EQ(registry_->Acquire("b").status().code(), absl::StatusCode::kUnavailable)
      << "Acquire never reloads";

  absl::StatusOr<std::shared_ptr<const Adapter>> b = AcquireAsync("b");
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_EQ((*b)->version, 1);
  EXPECT_EQ(loader_.Loads("b", 1), 2) << "loaded, evicted, reloaded";
  EXPECT_TRUE(Resident("b"));
  EXPECT_FALSE(Resident("a")) << "a was used before c was loaded: the LRU one goes";
  EXPECT_TRUE(Resident("c"));
  EXPECT_EQ(registry_->resident_bytes(), 200);

  // A resident adapter is answered at once, on this thread, without loading.
  ASSERT_TRUE(AcquireAsync("c").ok());
  EXPECT_EQ(loader_.Loads("c", 1), 1);
}

TEST_F(RegistryBudgetTest, ManyRequestsWaitingOnOneEvictedAdapterShareOneReload) {
  LoadNew("a");
  LoadNew("b");
  LoadNew("c");  // evicts a
  ASSERT_FALSE(Resident("a"));
  loader_.Block("a", 1);
  constexpr int kWaiters = 16;
  std::vector<std::unique_ptr<Result<absl::StatusOr<std::shared_ptr<const Adapter>>>>> results;
  for (int i = 0; i < kWaiters; ++i) {
    results.push_back(std::make_unique<Result<absl::StatusOr<std::shared_ptr<const Adapter>>>>());
    registry_->AcquireAsync("a", absl::InfiniteFuture(),
                            [r = results.back().get()](
                                absl::StatusOr<std::shared_ptr<const Adapter>> a) { r->Set(a); });
  }
  loader_.WaitEntered("a", 1);
  for (auto& r : results) EXPECT_FALSE(r->done.HasBeenNotified()) << "waits for the reload";
  loader_.Release("a", 1);
  const Adapter* first = nullptr;
  for (auto& r : results) {
    ASSERT_TRUE(r->Wait().ok()) << r->value.status();
    if (first == nullptr) first = r->value->get();
    EXPECT_EQ(r->value->get(), first) << "every waiter gets the one reloaded version";
  }
  EXPECT_EQ(loader_.Loads("a", 1), 2);
}

TEST_F(RegistryBudgetTest, EvictionLeavesInFlightRequestsTheirVersion) {
  LoadNew("a");
  std::shared_ptr<const Adapter> in_flight = *registry_->Acquire("a");
  std::weak_ptr<const Adapter> watch = in_flight;
  LoadNew("b");
  LoadNew("c");  // evicts a
  ASSERT_FALSE(Resident("a"));
  EXPECT_FALSE(watch.expired()) << "the request holding a keeps its weights";
  in_flight.reset();
  EXPECT_TRUE(watch.expired()) << "and they are freed when it lets go";
}

TEST_F(RegistryBudgetTest, AReloadThatFailsMarksTheAdapterFailed) {
  LoadNew("a");
  LoadNew("b");
  LoadNew("c");  // evicts a
  ASSERT_TRUE(util::RemoveTree(store_->VersionDir("a", 1)).ok());
  absl::StatusOr<std::shared_ptr<const Adapter>> a = AcquireAsync("a");
  EXPECT_EQ(a.status().code(), absl::StatusCode::kFailedPrecondition) << a.status();
  absl::StatusOr<AdapterInfo> info = registry_->Get("a");
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->state, AdapterState::kFailed);
  EXPECT_NE(info->error.find("reloading evicted version 1 failed"), std::string::npos)
      << info->error;
  EXPECT_TRUE(Resident("b"));
  EXPECT_TRUE(Resident("c"));
}

TEST_F(RegistryBudgetTest, AReloadEndingPastTheDeadlineAnswersDeadlineExceeded) {
  LoadNew("a");
  LoadNew("b");
  LoadNew("c");  // evicts a
  loader_.Block("a", 1);
  Result<absl::StatusOr<std::shared_ptr<const Adapter>>> r;
  registry_->AcquireAsync("a", absl::Now() + absl::Milliseconds(1),
                          [&](absl::StatusOr<std::shared_ptr<const Adapter>> a) { r.Set(a); });
  loader_.WaitEntered("a", 1);
  absl::SleepFor(absl::Milliseconds(5));
  loader_.Release("a", 1);
  EXPECT_EQ(r.Wait().status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_TRUE(Resident("a")) << "the reload itself is kept for the next request";
}

TEST_F(RegistryBudgetTest, NewerVersionOrUnloadOfAnEvictedAdapter) {
  LoadNew("a");
  LoadNew("b");
  LoadNew("c");  // evicts a
  ASSERT_FALSE(Resident("a"));
  Publish("a");
  absl::StatusOr<AdapterInfo> v2 = registry_->Load({"a", 0, "", false});
  ASSERT_TRUE(v2.ok()) << v2.status();
  EXPECT_EQ(v2->version, 2);
  EXPECT_TRUE(Resident("a"));
  EXPECT_EQ((*AcquireAsync("a"))->version, 2);
  EXPECT_EQ(loader_.Loads("a", 1), 1) << "version 1 was never reloaded";

  LoadNew("d");  // evicts b
  ASSERT_FALSE(Resident("b"));
  ASSERT_TRUE(registry_->Unload("b").ok());
  EXPECT_EQ(registry_->Get("b").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(AcquireAsync("b").status().code(), absl::StatusCode::kNotFound);
}

TEST_F(RegistryBudgetTest, AnAdapterLargerThanTheBudgetIsStillServedAlone) {
  LoadNew("a");
  loader_.SetBytes(1000);
  LoadNew("big");
  EXPECT_TRUE(Resident("big"));
  EXPECT_FALSE(Resident("a"));
  EXPECT_EQ(registry_->resident_bytes(), 1000);
  ASSERT_TRUE(AcquireAsync("big").ok());
}

TEST_F(RegistryBudgetTest, ShutdownAnswersLaterWaitersUnavailableAndLetsARunningReloadFinish) {
  LoadNew("a");
  LoadNew("b");
  LoadNew("c");  // evicts a
  loader_.Block("a", 1);
  Result<absl::StatusOr<std::shared_ptr<const Adapter>>> first, second;
  registry_->AcquireAsync("a", absl::InfiniteFuture(),
                          [&](absl::StatusOr<std::shared_ptr<const Adapter>> r) { first.Set(r); });
  loader_.WaitEntered("a", 1);
  registry_->Shutdown();
  registry_->AcquireAsync("a", absl::InfiniteFuture(),
                          [&](absl::StatusOr<std::shared_ptr<const Adapter>> r) { second.Set(r); });
  EXPECT_EQ(second.Wait().status().code(), absl::StatusCode::kUnavailable);
  loader_.Release("a", 1);
  EXPECT_TRUE(first.Wait().ok()) << "a reload already running finishes";
}

TEST(RegistryBudgetOptionsTest, NegativeBudgetIsRejected) {
  TempDir dir;
  FakeLoader loader;
  std::unique_ptr<Store> store = *Store::Create({dir.path()});
  Registry::Options o{store.get(), loader.loader(), 1};
  o.memory_budget_bytes = -1;
  EXPECT_EQ(Registry::Create(o).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace loracle::adapters
