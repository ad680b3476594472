#include <gtest/gtest.h>

#include "server/adapters/adapter_files.h"
#include "server/adapters/adapter_weights.h"
#include "server/adapters/registry.h"
#include "server/adapters/store.h"
#include "server/model/checkpoint.h"
#include "server/util/file_util.h"
#include "tests/support/test_util.h"

namespace loracle::adapters {
namespace {

class AdapterStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    testing::WriteTinyModel(model_dir_.path());
    auto base = model::LoadBaseModel(model_dir_.path());
    ASSERT_TRUE(base.ok()) << base.status();
    base_ = *std::move(base);
    auto store = Store::Create({store_dir_.path()});
    ASSERT_TRUE(store.ok());
    store_ = *std::move(store);
    const model::BaseModel* model = base_.get();
    auto registry = Registry::Create(
        {store_.get(), [model](const std::string& dir, const std::string& name, int64_t version) {
           return LoadAdapter(dir, name, version, *model);
         }});
    ASSERT_TRUE(registry.ok());
    registry_ = *std::move(registry);
  }
  int64_t Publish(const std::string& name, const RandomAdapterSpec& spec) {
    auto v = store_->Publish(name, [&](const std::string& dir) {
      return WriteRandomAdapter(dir, testing::TinyConfig(), spec);
    });
    EXPECT_TRUE(v.ok()) << v.status();
    return v.ok() ? *v : -1;
  }

  testing::TempDir model_dir_, store_dir_;
  std::unique_ptr<model::BaseModel> base_;
  std::unique_ptr<Store> store_;
  std::unique_ptr<Registry> registry_;
};

TEST_F(AdapterStoreTest, PublishIsAtomicAndVersionsIncrease) {
  EXPECT_EQ(Publish("spam", testing::TinyAdapterSpec({"ham", "spam"}, 1, 1)), 1);
  EXPECT_EQ(Publish("spam", testing::TinyAdapterSpec({"ham", "spam"}, 1, 2)), 2);
  auto failed = store_->Publish("spam", [](const std::string& dir) {
    testing::WriteFile(dir + "/partial", "x");
    return absl::InternalError("disk full");
  });
  EXPECT_EQ(failed.status().code(), absl::StatusCode::kInternal);
  EXPECT_EQ(*store_->ListVersions("spam"), (std::vector<int64_t>{1, 2}));
  EXPECT_EQ(*store_->ListAdapters(), std::vector<std::string>{"spam"});
  auto entries = util::ListDir(store_dir_.path());
  ASSERT_TRUE(entries.ok());
  EXPECT_EQ(*entries, std::vector<std::string>{"spam"}) << "no temporary directory left behind";
  EXPECT_EQ(store_->ListVersions("ghost").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(store_->Publish("../evil", [](auto&) { return absl::OkStatus(); }).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(AdapterStoreTest, LoadsPeftNamedWeightsForEveryMember) {
  Publish("ens", testing::TinyAdapterSpec({"a", "b", "c"}, 3, 10));
  auto info = registry_->Load({"ens"});
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->state, AdapterState::kReady);
  EXPECT_EQ(info->serving.members, 3);
  auto adapter = registry_->Acquire("ens");
  ASSERT_TRUE(adapter.ok());
  ASSERT_EQ((*adapter)->members, 3);
  const std::vector<model::LoraMember>& members = MembersOf(**adapter);
  const auto& enc = *base_->backbone;
  int adapted = 0;
  for (size_t i = 0; i < enc.linear_names().size(); ++i) {
    const bool targeted = MatchesTarget(enc.linear_names()[i], {"query", "value"});
    EXPECT_EQ(members[0].layers[i].a.defined(), targeted) << enc.linear_names()[i];
    adapted += targeted;
  }
  EXPECT_EQ(adapted, 4);  // 2 layers x {query, value}
  EXPECT_DOUBLE_EQ(
      members[0].layers[enc.LinearIndex("encoder.layer.0.attention.self.query")].scaling, 2.0);
  EXPECT_FALSE(torch::equal(members[0].classifier_weight, members[1].classifier_weight))
      << "members are independently initialised";
}

TEST_F(AdapterStoreTest, NewVersionSwapsInWhileOldHandlesStayValid) {
  Publish("spam", testing::TinyAdapterSpec({"ham", "spam"}, 1, 1));
  ASSERT_TRUE(registry_->LoadAll().ok());
  auto v1 = registry_->Acquire("spam");
  ASSERT_TRUE(v1.ok());
  EXPECT_EQ((*v1)->version, 1);
  Publish("spam", testing::TinyAdapterSpec({"ham", "spam"}, 1, 2));
  auto info = registry_->Load({"spam"});
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->version, 2);
  auto v2 = registry_->Acquire("spam");
  ASSERT_TRUE(v2.ok());
  EXPECT_EQ((*v2)->version, 2);
  EXPECT_EQ((*v1)->version, 1) << "an in-flight request keeps the version it started with";
  EXPECT_EQ(v1->use_count(), 1) << "the registry let go of v1; it retires with its last handle";
  ASSERT_TRUE(registry_->Unload("spam").ok());
  EXPECT_EQ(registry_->Acquire("spam").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(registry_->Unload("spam").code(), absl::StatusCode::kNotFound);
}

TEST_F(AdapterStoreTest, CorruptAdapterIsFailedWithTheReason) {
  const int64_t v = Publish("broken", testing::TinyAdapterSpec({"ham", "spam"}, 1, 1));
  const std::string weights = store_->VersionDir("broken", v) + "/adapter_model.safetensors";
  testing::WriteFile(weights, testing::ReadFile(weights).substr(0, 100));
  ASSERT_TRUE(registry_->LoadAll().ok()) << "one bad adapter does not fail the store";
  auto info = registry_->Get("broken");
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->state, AdapterState::kFailed);
  EXPECT_NE(info->error.find("adapter_model.safetensors"), std::string::npos) << info->error;
  auto acquire = registry_->Acquire("broken");
  EXPECT_EQ(acquire.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(acquire.status().message().find("failed to load"), std::string::npos);
}

TEST_F(AdapterStoreTest, FailedReloadKeepsServingTheOldVersion) {
  Publish("spam", testing::TinyAdapterSpec({"ham", "spam"}, 1, 1));
  ASSERT_TRUE(registry_->Load({"spam"}).ok());
  const int64_t v2 = Publish("spam", testing::TinyAdapterSpec({"ham", "spam"}, 1, 2));
  testing::WriteFile(store_->VersionDir("spam", v2) + "/loracle.json", "{not json");
  auto reload = registry_->Load({"spam"});
  EXPECT_EQ(reload.status().code(), absl::StatusCode::kInvalidArgument);
  auto served = registry_->Acquire("spam");
  ASSERT_TRUE(served.ok());
  EXPECT_EQ((*served)->version, 1);
}

TEST_F(AdapterStoreTest, LabelsThatDisagreeWithTheHeadAreRejected) {
  const int64_t v = Publish("x", testing::TinyAdapterSpec({"a", "b", "c"}, 1, 1));
  testing::WriteFile(store_->VersionDir("x", v) + "/loracle.json", R"({"labels": ["a", "b"]})");
  auto info = registry_->Load({"x"});
  ASSERT_FALSE(info.ok());
  EXPECT_NE(info.status().message().find("classifier has 3 outputs"), std::string::npos)
      << info.status();
}

TEST_F(AdapterStoreTest, AdapterForAnotherBaseModelIsRejected) {
  model::ModelConfig other = testing::TinyConfig();
  other.hidden_size = 48;  // trained on a wider model
  auto v = store_->Publish("alien", [&](const std::string& dir) {
    return WriteRandomAdapter(dir, other, testing::TinyAdapterSpec({"a", "b"}, 1, 1));
  });
  ASSERT_TRUE(v.ok());
  auto info = registry_->Load({"alien"});
  ASSERT_FALSE(info.ok());
  EXPECT_EQ(info.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(info.status().message().find("lora_A.weight\" has shape [4, 48], expected [4, 32]"),
            std::string::npos)
      << info.status();
}

}  // namespace
}  // namespace loracle::adapters
