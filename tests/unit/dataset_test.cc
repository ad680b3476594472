#include "server/training/dataset.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <map>

#include "tests/support/test_util.h"

namespace loracle::training {
namespace {

using data::ParseCsv;
using data::ParseJsonl;
using testing::TempDir;

TEST(DatasetTest, JsonlWithPairsAndBlankLines) {
  auto e = ParseJsonl(
      "{\"text\": \"free money\", \"label\": \"spam\"}\n\n"
      "{\"text\": \"q\", \"text_pair\": \"a\", \"label\": \"ham\"}\r\n",
      "d.jsonl");
  ASSERT_TRUE(e.ok()) << e.status();
  ASSERT_EQ(e->size(), 2u);
  EXPECT_EQ((*e)[0].text, "free money");
  EXPECT_EQ((*e)[0].text_pair, "");
  EXPECT_EQ((*e)[1].text_pair, "a");
  EXPECT_EQ((*e)[1].label, "ham");
}

TEST(DatasetTest, JsonlErrorsNameTheFileAndLine) {
  EXPECT_EQ(ParseJsonl("{\"text\":\"a\",\"label\":\"x\"}\n{oops\n", "d.jsonl").status().message(),
            "d.jsonl:2: not valid JSON");
  EXPECT_EQ(ParseJsonl("\n\n{\"text\":\"a\"}\n", "d.jsonl").status().message(),
            "d.jsonl:3: missing field \"label\"");
  EXPECT_EQ(ParseJsonl("{\"text\":1,\"label\":\"x\"}", "d.jsonl").status().message(),
            "d.jsonl:1: field \"text\" must be a string");
  EXPECT_EQ(ParseJsonl("[1]", "d.jsonl").status().message(), "d.jsonl:1: expected a JSON object");
}

TEST(DatasetTest, CsvQuotingAndColumnOrder) {
  auto e = ParseCsv(
      "id,label,text\n"
      "1,spam,\"Win, now!\"\n"
      "2,ham,\"She said \"\"hi\"\"\nacross lines\"\n"
      "3,ham,plain\n",
      "d.csv");
  ASSERT_TRUE(e.ok()) << e.status();
  ASSERT_EQ(e->size(), 3u);
  EXPECT_EQ((*e)[0].text, "Win, now!");
  EXPECT_EQ((*e)[1].text, "She said \"hi\"\nacross lines");
  EXPECT_EQ((*e)[2].label, "ham");
}

TEST(DatasetTest, CsvErrorsNameTheLineTheRecordStartsOn) {
  EXPECT_EQ(ParseCsv("a,b\n1,2\n", "d.csv").status().message(),
            "d.csv:1: the header must name columns \"text\" and \"label\" (and optionally "
            "\"text_pair\"); got: a,b");
  // The quoted newline makes record 2 span lines 2-3, so the short record is on line 4.
  EXPECT_EQ(ParseCsv("text,label\n\"a\nb\",x\nonly\n", "d.csv").status().message(),
            "d.csv:4: has 1 fields; the header has 2");
  EXPECT_EQ(ParseCsv("text,label\n\"open,x\n", "d.csv").status().message(),
            "d.csv:2: unterminated quoted field");
}

TEST(DatasetTest, DataPathsStayInsideTheDataDirectory) {
  TempDir root, outside;
  testing::WriteFile(root / "in.jsonl", "");
  testing::WriteFile(outside / "secret.jsonl", "");
  ASSERT_EQ(symlink((outside / "secret.jsonl").c_str(), (root / "link.jsonl").c_str()), 0);
  auto ok = ResolveDataPath(root.path(), "in.jsonl");
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ(ResolveDataPath("", "in.jsonl").status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_NE(ResolveDataPath("", "x").status().message().find("--data_dir"), std::string::npos);
  EXPECT_EQ(ResolveDataPath(root.path(), "../x/secret.jsonl").status().code(),
            absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(ResolveDataPath(root.path(), outside / "secret.jsonl").status().code(),
            absl::StatusCode::kPermissionDenied);
  auto link = ResolveDataPath(root.path(), "link.jsonl");
  EXPECT_EQ(link.status().code(), absl::StatusCode::kPermissionDenied) << "a symlink leading out";
  EXPECT_NE(link.status().message().find("--data_dir"), std::string::npos);
  EXPECT_EQ(ResolveDataPath(root.path(), "missing.jsonl").status().code(),
            absl::StatusCode::kNotFound);
}

TEST(DatasetTest, LabelsAreCheckedAgainstTheData) {
  std::vector<Example> ex = {{"a", "", "spam"}, {"b", "", "ham"}, {"c", "", "ham"}};
  EXPECT_EQ(*ResolveLabels(ex, {}), (std::vector<std::string>{"ham", "spam"}));
  EXPECT_EQ(*ResolveLabels(ex, {"spam", "ham"}), (std::vector<std::string>{"spam", "ham"}));
  EXPECT_EQ(ResolveLabels(ex, {"spam", "ham", "eggs"}).status().message(),
            "class \"eggs\" has no examples");
  EXPECT_EQ(ResolveLabels(ex, {"spam", "eggs"}).status().message(),
            "example 1 has label \"ham\", which is not one of the labels: spam, eggs");
  EXPECT_EQ(ResolveLabels({}, {}).status().message(), "no training examples");
  EXPECT_FALSE(ResolveLabels({{"a", "", "x"}}, {}).ok()) << "one class is no classifier";
}

TEST(DatasetTest, StratifiedSplitKeepsEveryClassOnBothSides) {
  std::vector<int> labels;
  for (int i = 0; i < 90; ++i) labels.push_back(0);
  for (int i = 0; i < 10; ++i) labels.push_back(1);
  labels.push_back(2);
  labels.push_back(2);
  const Split s = StratifiedSplit(labels, 0.1, 7);
  EXPECT_EQ(s.train.size() + s.validation.size(), labels.size());
  std::map<int, int> val;
  for (size_t i : s.validation) ++val[labels[i]];
  EXPECT_EQ(val[0], 9);
  EXPECT_EQ(val[1], 1);
  EXPECT_EQ(val[2], 1) << "a class of two still gets one validation example";
  EXPECT_EQ(StratifiedSplit(labels, 0.1, 7).validation, s.validation) << "seeded";
  EXPECT_NE(StratifiedSplit(labels, 0.1, 8).validation, s.validation);
}

}  // namespace
}  // namespace loracle::training
