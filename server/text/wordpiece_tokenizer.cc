#include "server/text/wordpiece_tokenizer.h"

#include <utf8proc.h>

#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "server/text/utf8_util.h"
#include "server/util/file_util.h"

namespace loracle::text {

absl::StatusOr<std::unique_ptr<WordPieceTokenizer>> WordPieceTokenizer::Create(
    const Options& options, std::vector<std::string> vocab,
    const SpecialTokensTemplate* template_override, std::vector<AddedToken> added) {
  std::unique_ptr<WordPieceTokenizer> t(new WordPieceTokenizer(options));
  t->vocab_ = std::move(vocab);
  for (size_t i = 0; i < t->vocab_.size(); ++i) {
    if (!t->ids_.emplace(t->vocab_[i], static_cast<int64_t>(i)).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("vocabulary repeats token \"", t->vocab_[i], "\" at id ", i));
    }
  }
  struct Special {
    const std::string& token;
    int64_t* id;
  };
  for (Special s :
       {Special{options.unk_token, &t->unk_id_}, Special{options.cls_token, &t->cls_id_},
        Special{options.sep_token, &t->sep_id_}, Special{options.pad_token, &t->pad_id_}}) {
    auto it = t->ids_.find(s.token);
    if (it == t->ids_.end()) {
      return absl::InvalidArgumentError(
          absl::StrCat("vocabulary lacks the special token \"", s.token, "\""));
    }
    *s.id = it->second;
  }
  t->template_ = template_override != nullptr ? *template_override
                                              : SpecialTokensTemplate::Bert(t->cls_id_, t->sep_id_);
  if (added.empty()) {
    for (const std::string* s : {&options.pad_token, &options.unk_token, &options.cls_token,
                                 &options.sep_token, &options.mask_token}) {
      if (auto it = t->ids_.find(*s); it != t->ids_.end()) added.push_back({*s, it->second});
    }
  }
  t->SetAddedTokens(std::move(added));
  return t;
}

absl::StatusOr<std::unique_ptr<WordPieceTokenizer>> WordPieceTokenizer::FromVocabText(
    const Options& options, absl::string_view vocab_text) {
  std::vector<std::string> vocab;
  std::vector<absl::string_view> lines = absl::StrSplit(vocab_text, '\n');
  if (!lines.empty() && lines.back().empty()) lines.pop_back();
  for (absl::string_view line : lines) {
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    vocab.emplace_back(line);
  }
  return Create(options, std::move(vocab));
}

absl::StatusOr<std::unique_ptr<WordPieceTokenizer>> WordPieceTokenizer::FromFile(
    const Options& options, const std::string& path) {
  absl::StatusOr<std::string> text = util::ReadFileToString(path);
  if (!text.ok()) return text.status();
  auto t = FromVocabText(options, *text);
  if (!t.ok()) return absl::InvalidArgumentError(absl::StrCat(path, ": ", t.status().message()));
  return t;
}

int64_t WordPieceTokenizer::TokenToId(absl::string_view token) const {
  auto it = ids_.find(token);
  return it == ids_.end() ? unk_id_ : it->second;
}

const std::string& WordPieceTokenizer::IdToToken(int64_t id) const {
  static const std::string kEmpty;
  return id >= 0 && id < vocab_size() ? vocab_[static_cast<size_t>(id)] : kEmpty;
}

void WordPieceTokenizer::WordPiece(const std::string& word, std::vector<int64_t>* ids) const {
  const std::vector<int32_t> chars = DecodeUtf8(word);
  if (static_cast<int>(chars.size()) > options_.max_input_chars_per_word) {
    ids->push_back(unk_id_);
    return;
  }
  std::vector<size_t> bounds{0};  // byte offset of each character boundary
  for (int32_t c : chars) {
    std::string tmp;
    AppendUtf8(c, &tmp);
    bounds.push_back(bounds.back() + tmp.size());
  }
  std::vector<int64_t> pieces;
  size_t start = 0;
  std::string sub;
  while (start < chars.size()) {
    size_t end = chars.size();
    int64_t found = -1;
    while (start < end) {
      sub.clear();
      if (start > 0) sub = options_.continuing_subword_prefix;
      sub.append(word, bounds[start], bounds[end] - bounds[start]);
      auto it = ids_.find(sub);
      if (it != ids_.end()) {
        found = it->second;
        break;
      }
      --end;
    }
    if (found < 0) {
      ids->push_back(unk_id_);  // the whole word becomes [UNK], as in transformers
      return;
    }
    pieces.push_back(found);
    start = end;
  }
  ids->insert(ids->end(), pieces.begin(), pieces.end());
}

void WordPieceTokenizer::TokenizeSegment(absl::string_view text, bool /*at_start*/,
                                         std::vector<int64_t>* ids) const {
  // BertNormalizer: clean text, isolate CJK, strip accents, lower-case (in that order).
  std::string cleaned;
  cleaned.reserve(text.size());
  for (int32_t c : DecodeUtf8(text)) {
    const bool whitespace = c == '\t' || c == '\n' || c == '\r' || IsUnicodeWhitespace(c);
    if (options_.clean_text) {
      if (c == 0 || c == 0xFFFD || (!whitespace && IsOtherCategory(c))) continue;
      if (whitespace) c = ' ';
    }
    if (options_.tokenize_chinese_chars && IsCjkIdeograph(c)) {
      cleaned.push_back(' ');
      AppendUtf8(c, &cleaned);
      cleaned.push_back(' ');
    } else {
      AppendUtf8(c, &cleaned);
    }
  }
  if (options_.strip_accents) {
    std::string nfd = Nfd(cleaned);
    cleaned.clear();
    for (int32_t c : DecodeUtf8(nfd)) {
      if (!IsNonSpacingMark(c)) AppendUtf8(c, &cleaned);
    }
  }
  if (options_.lowercase) {
    std::string lower;
    lower.reserve(cleaned.size());
    for (int32_t c : DecodeUtf8(cleaned)) AppendUtf8(utf8proc_tolower(c), &lower);
    cleaned = std::move(lower);
  }
  // BertPreTokenizer: split on whitespace, and isolate each punctuation character.
  std::string current;
  for (int32_t c : DecodeUtf8(cleaned)) {
    if (IsUnicodeWhitespace(c)) {
      if (!current.empty()) WordPiece(current, ids);
      current.clear();
    } else if (IsBertPunctuation(c)) {
      if (!current.empty()) WordPiece(current, ids);
      current.clear();
      std::string p;
      AppendUtf8(c, &p);
      WordPiece(p, ids);
    } else {
      AppendUtf8(c, &current);
    }
  }
  if (!current.empty()) WordPiece(current, ids);
}

}  // namespace loracle::text
