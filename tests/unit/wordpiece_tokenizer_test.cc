#include "server/text/wordpiece_tokenizer.h"

#include <gtest/gtest.h>

#include "absl/strings/str_split.h"
#include "nlohmann/json.hpp"
#include "server/model/default_model.h"
#include "tests/support/test_util.h"

namespace loracle::text {
namespace {

using Tokens = std::vector<std::string>;

std::unique_ptr<WordPieceTokenizer> Tiny(WordPieceTokenizer::Options options = {}) {
  auto t = WordPieceTokenizer::FromVocabText(options, testing::TinyVocab());
  EXPECT_TRUE(t.ok()) << t.status();
  return *std::move(t);
}

TEST(WordPieceTokenizerTest, LowercasesAndSplitsPunctuationAndWhitespace) {
  auto t = Tiny();
  EXPECT_EQ(*t->Tokenize(" \tHeLLo,  WORLD!\n"), (Tokens{"hello", ",", "world", "!"}));
  EXPECT_EQ(*t->Tokenize("free-money?"), (Tokens{"free", "-", "money", "?"}));
}

TEST(WordPieceTokenizerTest, StripsAccentsLikeBertUncased) {
  auto t = Tiny();
  EXPECT_EQ(*t->Tokenize("Café NAÏVE"), (Tokens{"cafe", "naive"}));
  // Decomposed input (e + combining acute) normalises the same way.
  EXPECT_EQ(*t->Tokenize("cafe\xcc\x81"), (Tokens{"cafe"}));
}

TEST(WordPieceTokenizerTest, KeepsAccentsWhenCased) {
  WordPieceTokenizer::Options o;
  o.lowercase = false;
  o.strip_accents = false;
  auto t = Tiny(o);
  // "Café" is not in the vocabulary and "é" has no piece: the word becomes [UNK].
  EXPECT_EQ(*t->Tokenize("Café"), (Tokens{"[UNK]"}));
}

TEST(WordPieceTokenizerTest, GreedyLongestMatchWithContinuations) {
  auto t = Tiny();
  // The example from transformers' own WordpieceTokenizer tests.
  EXPECT_EQ(*t->Tokenize("unwanted running"), (Tokens{"un", "##want", "##ed", "runn", "##ing"}));
  // A word with a character no piece covers becomes a single [UNK] (emoji: category So).
  EXPECT_EQ(*t->Tokenize("unwanted\xf0\x9f\x98\x80 running"), (Tokens{"[UNK]", "runn", "##ing"}));
}

TEST(WordPieceTokenizerTest, SplitsCjkIdeographsIntoSingleTokens) {
  auto t = Tiny();
  EXPECT_EQ(*t->Tokenize("hello\xe4\xb8\xad\xe6\x96\x87world"),
            (Tokens{"hello", "中", "文", "world"}));
}

TEST(WordPieceTokenizerTest, DropsControlCharacters) {
  auto t = Tiny();
  const char kText[] = "hel\x01lo\x7f world";
  EXPECT_EQ(*t->Tokenize(std::string(kText, sizeof(kText) - 1)), (Tokens{"hello", "world"}));
}

TEST(WordPieceTokenizerTest, OverlongWordIsUnknown) {
  WordPieceTokenizer::Options o;
  o.max_input_chars_per_word = 5;
  auto t = Tiny(o);
  EXPECT_EQ(*t->Tokenize("hello helloo"), (Tokens{"hello", "[UNK]"}));
}

TEST(WordPieceTokenizerTest, InvalidUtf8NamesTheByteOffset) {
  auto t = Tiny();
  auto r = t->Tokenize("hello \xff world");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("byte offset 6"), std::string::npos) << r.status();
  EXPECT_FALSE(t->Tokenize("\xc3").ok()) << "truncated sequence";
  EXPECT_FALSE(t->Tokenize("\xed\xa0\x80").ok()) << "UTF-16 surrogate";
}

TEST(WordPieceTokenizerTest, EncodesWithSpecialTokensAndTruncates) {
  auto t = Tiny();
  auto e = t->Encode("hello world", std::nullopt, 16);
  ASSERT_TRUE(e.ok());
  EXPECT_EQ(e->input_ids, (std::vector<int64_t>{t->cls_id(), t->TokenToId("hello"),
                                                t->TokenToId("world"), t->sep_id()}));
  EXPECT_FALSE(e->truncated);
  auto cut = t->Encode("hello world free money", std::nullopt, 4);
  ASSERT_TRUE(cut.ok());
  EXPECT_TRUE(cut->truncated);
  EXPECT_EQ(cut->input_ids, (std::vector<int64_t>{t->cls_id(), t->TokenToId("hello"),
                                                  t->TokenToId("world"), t->sep_id()}));
}

TEST(WordPieceTokenizerTest, LongTextsAreReadInEvenlySpreadWindows) {
  auto t = Tiny();
  const int64_t hello = t->TokenToId("hello"), world = t->TokenToId("world");
  std::vector<int64_t> ids;  // 10 tokens: hello world hello world ...
  for (int i = 0; i < 10; ++i) ids.push_back(i % 2 == 0 ? hello : world);
  auto body = [&](const Encoding& e) {  // the window without [CLS] ... [SEP]
    EXPECT_EQ(e.input_ids.front(), t->cls_id());
    EXPECT_EQ(e.input_ids.back(), t->sep_id());
    return std::vector<int64_t>(e.input_ids.begin() + 1, e.input_ids.end() - 1);
  };
  // Fits one window of 12 - 2 specials: the one encoding Encode gives.
  auto one = t->Windows(ids, 12, 4);
  ASSERT_TRUE(one.ok()) << one.status();
  ASSERT_EQ(one->size(), 1u);
  EXPECT_EQ(body((*one)[0]), ids);
  EXPECT_FALSE((*one)[0].truncated);
  // 10 tokens in windows of 4: 3 windows of exactly 4, starts 0, 3, 6 (the last ends at 10).
  auto three = t->Windows(ids, 6, 4);
  ASSERT_TRUE(three.ok()) << three.status();
  ASSERT_EQ(three->size(), 3u);
  for (size_t j = 0; j < 3; ++j) {
    const size_t start = j * 3;
    EXPECT_EQ(body((*three)[j]),
              std::vector<int64_t>(ids.begin() + static_cast<std::ptrdiff_t>(start),
                                   ids.begin() + static_cast<std::ptrdiff_t>(start + 4)))
        << "window " << j;
    EXPECT_FALSE((*three)[j].truncated);
    EXPECT_EQ((*three)[j].token_type_ids, std::vector<int64_t>(6, 0));
  }
  // At most 2 windows of 4 cannot cover 10 tokens: the first 8, back to back, marked truncated.
  auto two = t->Windows(ids, 6, 2);
  ASSERT_TRUE(two.ok()) << two.status();
  ASSERT_EQ(two->size(), 2u);
  EXPECT_EQ(body((*two)[0]), std::vector<int64_t>(ids.begin(), ids.begin() + 4));
  EXPECT_EQ(body((*two)[1]), std::vector<int64_t>(ids.begin() + 4, ids.begin() + 8));
  EXPECT_TRUE((*two)[0].truncated && (*two)[1].truncated);
  // One window is Encode's truncation.
  auto cut = t->EncodeWindows("hello world free money", std::nullopt, 4, 1);
  ASSERT_TRUE(cut.ok());
  ASSERT_EQ(cut->size(), 1u);
  EXPECT_EQ((*cut)[0].input_ids, t->Encode("hello world free money", std::nullopt, 4)->input_ids);
  EXPECT_TRUE((*cut)[0].truncated);
  // A pair is one window whatever max_windows says.
  auto pair = t->EncodeWindows("hello world free money", absl::string_view("you win"), 7, 8);
  ASSERT_TRUE(pair.ok());
  EXPECT_EQ(pair->size(), 1u);
  // Empty text: one window of the specials alone.
  auto empty = t->Windows({}, 6, 3);
  ASSERT_TRUE(empty.ok());
  ASSERT_EQ(empty->size(), 1u);
  EXPECT_EQ((*empty)[0].input_ids, (std::vector<int64_t>{t->cls_id(), t->sep_id()}));
  EXPECT_EQ(t->Windows(ids, 2, 3).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(t->Windows(ids, 6, 0).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(WordPieceTokenizerTest, PairsGetSegmentIdsAndLongestFirstTruncation) {
  auto t = Tiny();
  auto e = t->Encode("hello world", absl::string_view("free"), 16);
  ASSERT_TRUE(e.ok());
  EXPECT_EQ(e->token_type_ids, (std::vector<int64_t>{0, 0, 0, 0, 1, 1}));
  // Budget 7 - 3 specials = 4 tokens: the longer first segment loses tokens first.
  auto cut = t->Encode("hello world free money now", absl::string_view("you win"), 7);
  ASSERT_TRUE(cut.ok());
  EXPECT_TRUE(cut->truncated);
  EXPECT_EQ(
      cut->input_ids,
      (std::vector<int64_t>{t->cls_id(), t->TokenToId("hello"), t->TokenToId("world"), t->sep_id(),
                            t->TokenToId("you"), t->TokenToId("win"), t->sep_id()}));
}

TEST(WordPieceTokenizerTest, VocabularyWithoutSpecialTokensIsRejected) {
  auto t = WordPieceTokenizer::FromVocabText({}, "hello\nworld\n");
  ASSERT_FALSE(t.ok());
  EXPECT_NE(t.status().message().find("[UNK]"), std::string::npos);
}

TEST(WordPieceTokenizerTest, DefaultVocabularyTokenisesEnglishIntoWords) {
  auto t = WordPieceTokenizer::FromVocabText({}, model::DefaultVocab());
  ASSERT_TRUE(t.ok()) << t.status();
  auto tokens = (*t)->Tokenize(
      "Please review the attached invoice before Friday's meeting. This movie was great, "
      "but the ending was terrible!");
  ASSERT_TRUE(tokens.ok());
  int whole = 0, unknown = 0;
  for (const std::string& tok : *tokens) {
    whole += tok.rfind("##", 0) != 0;
    unknown += tok == "[UNK]";
  }
  EXPECT_EQ(unknown, 0);
  EXPECT_GE(whole, static_cast<int>(tokens->size()) * 9 / 10) << "mostly whole words";
  for (const char* w : {"please", "review", "invoice", "meeting", "movie", "great", "terrible"}) {
    EXPECT_NE(std::find(tokens->begin(), tokens->end(), w), tokens->end()) << w;
  }
}

}  // namespace
}  // namespace loracle::text

namespace loracle::text {
namespace {

// Real mail (tests/data/spam-assassin): the built-in vocabulary splits it into words, rarely
// into pieces, almost never into [UNK].
TEST(WordPieceTokenizerTest, DefaultVocabularyCoversRealMail) {
  auto t = WordPieceTokenizer::FromVocabText({}, model::DefaultVocab());
  ASSERT_TRUE(t.ok());
  const std::string jsonl =
      testing::ReadFile(std::string(LORACLE_SOURCE_DIR) + "/tests/data/spam-assassin/mail.jsonl");
  ASSERT_FALSE(jsonl.empty());
  size_t tokens = 0, pieces = 0, unknown = 0, messages = 0, words = 0, split_words = 0;
  for (absl::string_view line : absl::StrSplit(jsonl, '\n', absl::SkipEmpty())) {
    auto j = nlohmann::json::parse(line);
    auto toks = (*t)->Tokenize(j["text"].get<std::string>());
    ASSERT_TRUE(toks.ok()) << toks.status();
    ++messages;
    for (size_t i = 0; i < toks->size(); ++i) {
      const bool piece = (*toks)[i].rfind("##", 0) == 0;
      ++tokens;
      pieces += piece;
      unknown += (*toks)[i] == "[UNK]";
      if (!piece) {
        ++words;
        split_words += i + 1 < toks->size() && (*toks)[i + 1].rfind("##", 0) == 0;
      }
    }
  }
  EXPECT_EQ(messages, 200u);
  const double whole = 1.0 - static_cast<double>(split_words) / words;
  std::printf("%zu words, %zu tokens: %.1f%% of words kept whole, %.3f%% [UNK]\n", words, tokens,
              100.0 * whole, 100.0 * unknown / tokens);
  EXPECT_LT(static_cast<double>(unknown) / tokens, 0.005);
  EXPECT_GT(whole, 0.85) << "mail splits into words, not characters";
}

}  // namespace
}  // namespace loracle::text
