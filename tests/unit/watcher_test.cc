#include "server/adapters/watcher.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "server/adapters/registry.h"
#include "server/adapters/store.h"
#include "server/util/file_util.h"
#include "tests/support/test_util.h"

// The store watcher against a real store directory changed the way other processes change it
// (Store::Publish from a second Store object, rm -r, a directory copied in by hand), with inotify
// and with polling alone.
namespace loracle::adapters {
namespace {

using testing::TempDir;

// Counts loads per (name, version); a (name, version) can be made to fail.
class CountingLoader {
 public:
  Registry::Loader loader() {
    return [this](const std::string& dir, const std::string& name,
                  int64_t version) -> absl::StatusOr<std::shared_ptr<const Adapter>> {
      absl::MutexLock lock(&mu_);
      ++loads_[{name, version}];
      if (failing_.count({name, version}) > 0) {
        return absl::InvalidArgumentError(absl::StrCat(dir, ": weights are NaN"));
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
  void Fail(const std::string& name, int64_t version, bool fail) {
    absl::MutexLock lock(&mu_);
    if (fail) {
      failing_.insert({name, version});
    } else {
      failing_.erase({name, version});
    }
  }
  int Loads(const std::string& name, int64_t version) {
    absl::MutexLock lock(&mu_);
    return loads_[{name, version}];
  }

 private:
  absl::Mutex mu_;
  std::map<std::pair<std::string, int64_t>, int> loads_ ABSL_GUARDED_BY(mu_);
  std::set<std::pair<std::string, int64_t>> failing_ ABSL_GUARDED_BY(mu_);
};

bool WaitFor(const std::function<bool()>& done, absl::Duration timeout = absl::Seconds(10)) {
  for (const absl::Time end = absl::Now() + timeout; absl::Now() < end;) {
    if (done()) return true;
    absl::SleepFor(absl::Milliseconds(10));
  }
  return done();
}

class WatcherTest : public ::testing::TestWithParam<bool> {  // true: inotify
 protected:
  void SetUp() override {
    store_ = *Store::Create({dir_.path()});
    other_process_ = *Store::Create({dir_.path()});  // a second publisher on the same volume
    registry_ = *Registry::Create({store_.get(), loader_.loader(), /*load_threads=*/2});
  }
  void StartWatcher(absl::Duration poll = absl::Milliseconds(100)) {
    Watcher::Options o;
    o.store = store_.get();
    o.registry = registry_.get();
    o.poll_interval = GetParam() ? absl::Seconds(60) : poll;  // inotify alone must be enough
    o.use_inotify = GetParam();
    auto w = Watcher::Create(o);
    ASSERT_TRUE(w.ok()) << w.status();
    watcher_ = *std::move(w);
    ASSERT_EQ(watcher_->inotify(), GetParam());
  }
  int64_t PublishElsewhere(const std::string& name) {
    return *other_process_->Publish(name, [](const std::string& dir) {
      return util::WriteFileAtomically(dir + "/adapter_config.json", "{}");
    });
  }
  int64_t Served(const std::string& name) {
    absl::StatusOr<AdapterInfo> info = registry_->Get(name);
    return info.ok() && info->state == AdapterState::kReady ? info->version : 0;
  }
  bool Known(const std::string& name) { return registry_->Get(name).ok(); }

  TempDir dir_;
  CountingLoader loader_;
  std::unique_ptr<Store> store_, other_process_;
  std::unique_ptr<Registry> registry_;
  std::unique_ptr<Watcher> watcher_;
};

TEST_P(WatcherTest, LoadsWhatIsThereThenEveryNewVersion) {
  PublishElsewhere("a");
  StartWatcher();
  ASSERT_TRUE(WaitFor([&] { return Served("a") == 1; }));
  PublishElsewhere("a");
  PublishElsewhere("b");
  ASSERT_TRUE(WaitFor([&] { return Served("a") == 2 && Served("b") == 1; }))
      << Served("a") << " " << Served("b");
  EXPECT_EQ(loader_.Loads("a", 1), 1);
  EXPECT_EQ(loader_.Loads("a", 2), 1);
}

TEST_P(WatcherTest, DeletionUnloadsAndDeletingTheServedVersionRollsBack) {
  PublishElsewhere("a");
  PublishElsewhere("a");
  PublishElsewhere("b");
  StartWatcher();
  ASSERT_TRUE(WaitFor([&] { return Served("a") == 2 && Served("b") == 1; }));
  ASSERT_TRUE(util::RemoveTree(store_->VersionDir("a", 2)).ok());
  ASSERT_TRUE(WaitFor([&] { return Served("a") == 1; })) << Served("a");
  ASSERT_TRUE(util::RemoveTree(dir_.path() + "/b").ok());
  ASSERT_TRUE(WaitFor([&] { return !Known("b"); }));
  EXPECT_EQ(Served("a"), 1);
}

TEST_P(WatcherTest, AFailedVersionIsRetriedOnlyWhenItsFilesChange) {
  loader_.Fail("bad", 1, true);
  PublishElsewhere("bad");
  PublishElsewhere("good");
  StartWatcher();
  ASSERT_TRUE(WaitFor([&] {
    auto info = registry_->Get("bad");
    return info.ok() && info->state == AdapterState::kFailed && Served("good") == 1;
  }));
  EXPECT_NE(registry_->Get("bad")->error.find("NaN"), std::string::npos);
  for (int i = 0; i < 5; ++i) watcher_->ScanNow();
  absl::SleepFor(absl::Milliseconds(300));  // polls, or events, that must not retry it
  EXPECT_EQ(loader_.Loads("bad", 1), 1);
  // Fixed in place (a copy finishing, a file replaced): loaded.
  loader_.Fail("bad", 1, false);
  ASSERT_TRUE(
      util::WriteFileAtomically(store_->VersionDir("bad", 1) + "/adapter_config.json", "{ }").ok());
  watcher_->ScanNow();  // in-place edits raise no event on the store's directories
  ASSERT_TRUE(WaitFor([&] { return Served("bad") == 1; }));
  EXPECT_EQ(loader_.Loads("bad", 1), 2);
}

TEST_P(WatcherTest, AnOperatorsUnloadStandsUntilTheNextPublish) {
  PublishElsewhere("a");
  StartWatcher();
  ASSERT_TRUE(WaitFor([&] { return Served("a") == 1; }));
  ASSERT_TRUE(registry_->Unload("a").ok());
  for (int i = 0; i < 3; ++i) watcher_->ScanNow();
  absl::SleepFor(absl::Milliseconds(300));
  EXPECT_FALSE(Known("a"));
  PublishElsewhere("a");
  ASSERT_TRUE(WaitFor([&] { return Served("a") == 2; }));
}

// A publish the watcher has not scanned yet, loaded and unloaded by an operator meanwhile: the
// scan must not bring it back (the registry served that version already).
TEST(WatcherRaceTest, APublishAlreadyLoadedAndUnloadedIsNotReloaded) {
  TempDir dir;
  auto store = *Store::Create({dir.path()});
  CountingLoader loader;
  auto registry = *Registry::Create({store.get(), loader.loader(), 1});
  auto watcher = *Watcher::Create({store.get(), registry.get(), absl::Hours(1), false});
  watcher->ScanNow();
  ASSERT_TRUE(store->Publish("a", [](const std::string&) { return absl::OkStatus(); }).ok());
  ASSERT_TRUE(registry->Load({"a", 0, "", false}).ok());
  ASSERT_TRUE(registry->Unload("a").ok());
  watcher->ScanNow();
  absl::SleepFor(absl::Milliseconds(100));
  EXPECT_FALSE(registry->Get("a").ok());
  EXPECT_EQ(loader.Loads("a", 1), 1);
  ASSERT_TRUE(store->Publish("a", [](const std::string&) { return absl::OkStatus(); }).ok());
  watcher->ScanNow();
  ASSERT_TRUE(WaitFor([&] { return registry->Get("a").ok() && registry->Get("a")->version == 2; }));
}

TEST_P(WatcherTest, LeavesNamesServedFromElsewhereAlone) {
  TempDir outside;
  ASSERT_TRUE(registry_->Load({"pinned", 7, outside.path(), true}).ok());
  PublishElsewhere("a");
  StartWatcher();
  ASSERT_TRUE(WaitFor([&] { return Served("a") == 1; }));
  watcher_->ScanNow();
  EXPECT_EQ(Served("pinned"), 7);
}

INSTANTIATE_TEST_SUITE_P(InotifyAndPolling, WatcherTest, ::testing::Bool(),
                         [](const ::testing::TestParamInfo<bool>& p) {
                           return p.param ? "Inotify" : "Polling";
                         });

TEST(WatcherOptionsTest, Invalid) {
  TempDir dir;
  auto store = *Store::Create({dir.path()});
  CountingLoader loader;
  auto registry = *Registry::Create({store.get(), loader.loader(), 1});
  EXPECT_EQ(Watcher::Create({nullptr, registry.get()}).status().code(),
            absl::StatusCode::kInvalidArgument);
  Watcher::Options o{store.get(), registry.get()};
  o.poll_interval = absl::ZeroDuration();
  EXPECT_EQ(Watcher::Create(o).status().code(), absl::StatusCode::kInvalidArgument);
}

// Publishers in several processes: every publish gets its own version, each complete; none
// fails or overwrites another. (Store objects of their own, as separate processes have.)
TEST(StorePublishTest, StagingLeftByADeadPublisherIsRemovedOnceStaleAndNothingElse) {
  testing::TempDir dir;
  std::unique_ptr<Store> store = *Store::Create({dir.path()});
  ASSERT_TRUE(store
                  ->Publish("a",
                            [](const std::string& d) {
                              testing::WriteFile(d + "/x", "complete");
                              return absl::OkStatus();
                            })
                  .ok());
  // Two publishers that died mid-publish: one long ago, one a moment ago (or still alive).
  const std::string old_tmp = dir / ".tmp-a-OLD123";
  const std::string young_tmp = dir / ".tmp-a-NEW456";
  for (const std::string& d : {old_tmp, young_tmp}) {
    ASSERT_TRUE(util::MakeDirs(d + "/member-0").ok());
    testing::WriteFile(d + "/member-0/adapter_model.safetensors", "half");
  }
  const timespec two_hours_ago[2] = {{::time(nullptr) - 7200, 0}, {::time(nullptr) - 7200, 0}};
  for (const char* p : {"", "/member-0", "/member-0/adapter_model.safetensors"}) {
    ASSERT_EQ(::utimensat(AT_FDCWD, (old_tmp + p).c_str(), two_hours_ago, AT_SYMLINK_NOFOLLOW), 0);
  }
  EXPECT_EQ(*store->ListAdapters(), std::vector<std::string>{"a"}) << "staging is never listed";
  absl::StatusOr<std::vector<std::string>> removed = store->RemoveStaleStaging(absl::Hours(1));
  ASSERT_TRUE(removed.ok()) << removed.status();
  EXPECT_EQ(*removed, std::vector<std::string>{old_tmp});
  EXPECT_FALSE(util::IsDirectory(old_tmp));
  EXPECT_TRUE(util::IsDirectory(young_tmp)) << "may be a live publisher in another process";
  EXPECT_EQ(testing::ReadFile(store->VersionDir("a", 1) + "/x"), "complete");
  EXPECT_EQ(*store->ListVersions("a"), std::vector<int64_t>{1});
}

TEST(StorePublishTest, ConcurrentPublishersGetDistinctCompleteVersions) {
  TempDir dir;
  constexpr int kPublishers = 4, kEach = 10;
  std::vector<std::thread> threads;
  std::vector<std::vector<int64_t>> got(kPublishers);
  for (int p = 0; p < kPublishers; ++p) {
    threads.emplace_back([&, p] {
      auto store = *Store::Create({dir.path()});
      for (int i = 0; i < kEach; ++i) {
        auto v = store->Publish("shared", [p, i](const std::string& d) {
          return util::WriteFileAtomically(d + "/who", absl::StrCat(p, " ", i));
        });
        ASSERT_TRUE(v.ok()) << v.status();
        got[p].push_back(*v);
      }
    });
  }
  for (std::thread& t : threads) t.join();
  std::set<int64_t> all;
  for (const auto& g : got) all.insert(g.begin(), g.end());
  EXPECT_EQ(all.size(), static_cast<size_t>(kPublishers * kEach));
  auto store = *Store::Create({dir.path()});
  auto versions = store->ListVersions("shared");
  ASSERT_TRUE(versions.ok());
  EXPECT_EQ(versions->size(), static_cast<size_t>(kPublishers * kEach));
  for (int64_t v : *versions) {
    EXPECT_TRUE(util::ReadFileToString(store->VersionDir("shared", v) + "/who").ok()) << v;
  }
  const absl::StatusOr<std::vector<std::string>> entries = util::ListDir(dir.path());
  ASSERT_TRUE(entries.ok());
  for (const std::string& e : *entries) {
    EXPECT_EQ(e.rfind(".tmp-", 0), std::string::npos) << e;
  }
}

}  // namespace
}  // namespace loracle::adapters
