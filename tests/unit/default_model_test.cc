#include "server/model/default_model.h"

#include <gtest/gtest.h>

#include <cmath>

#include "server/model/architecture.h"
#include "server/model/safetensors.h"
#include "server/util/file_util.h"
#include "tests/support/test_util.h"

namespace loracle::model {
namespace {

TEST(DefaultModelTest, ConfigIsTheDocumentedSmallBert) {
  const ModelConfig c = DefaultModelConfig();
  EXPECT_EQ(c.num_hidden_layers, 4);
  EXPECT_EQ(c.hidden_size, 256);
  EXPECT_EQ(c.num_attention_heads, 4);
  EXPECT_GT(c.vocab_size, 10000) << "a word-level English vocabulary";
}

TEST(DefaultModelTest, GenerationIsDeterministicAndComplete) {
  testing::TempDir a, b;
  auto da = EnsureDefaultModel(a.path());
  auto db = EnsureDefaultModel(b.path());
  ASSERT_TRUE(da.ok()) << da.status();
  ASSERT_TRUE(db.ok()) << db.status();
  for (const char* f : {"config.json", "model.safetensors", "vocab.txt", "tokenizer_config.json"}) {
    EXPECT_EQ(testing::ReadFile(*da + "/" + f), testing::ReadFile(*db + "/" + f)) << f;
  }
  auto file = SafetensorsFile::Open(*da + "/model.safetensors");
  ASSERT_TRUE(file.ok()) << file.status();
  for (const auto& [name, shape] : BaseTensorShapes(DefaultModelConfig())) {
    auto t = (*file)->Get(name);
    ASSERT_TRUE(t.ok()) << name;
    EXPECT_EQ(t->shape, shape) << name;
  }
  // No temporary directory is left behind.
  auto entries = util::ListDir(a.path());
  ASSERT_TRUE(entries.ok());
  EXPECT_EQ(*entries, std::vector<std::string>{kDefaultModelName});
}

TEST(DefaultModelTest, SecondCallReusesTheCache) {
  testing::TempDir tmp;
  auto first = EnsureDefaultModel(tmp.path());
  ASSERT_TRUE(first.ok());
  testing::WriteFile(*first + "/marker", "x");
  auto second = EnsureDefaultModel(tmp.path());
  ASSERT_TRUE(second.ok());
  EXPECT_EQ(*first, *second);
  EXPECT_TRUE(util::FileExists(*second + "/marker")) << "not regenerated";
}

TEST(DefaultModelTest, NormalSamplesHaveTheRequestedMoments) {
  const std::vector<float> v = DeterministicNormal(42, 100000, 0.02f);
  double mean = 0, var = 0;
  for (float x : v) mean += x;
  mean /= v.size();
  for (float x : v) var += (x - mean) * (x - mean);
  var /= v.size();
  EXPECT_NEAR(mean, 0.0, 0.0005);
  EXPECT_NEAR(std::sqrt(var), 0.02, 0.0005);
  EXPECT_EQ(v, DeterministicNormal(42, 100000, 0.02f));
  EXPECT_NE(v, DeterministicNormal(43, 100000, 0.02f));
}

}  // namespace
}  // namespace loracle::model
