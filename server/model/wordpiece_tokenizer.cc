#include "server/model/wordpiece_tokenizer.h"

#include <utf8proc.h>

#include <cstdlib>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "server/model/file_util.h"

namespace loracle::model {
namespace {

bool IsWhitespace(utf8proc_int32_t c) {
  if (c == ' ' || c == '\t' || c == '\n' || c == '\r') return true;
  return utf8proc_category(c) == UTF8PROC_CATEGORY_ZS;
}

bool IsControl(utf8proc_int32_t c) {
  if (c == '\t' || c == '\n' || c == '\r') return false;
  const auto cat = utf8proc_category(c);
  return cat == UTF8PROC_CATEGORY_CC || cat == UTF8PROC_CATEGORY_CF;
}

bool IsPunctuation(utf8proc_int32_t c) {
  // transformers treats all non-alphanumeric ASCII as punctuation, plus Unicode P*.
  if ((c >= 33 && c <= 47) || (c >= 58 && c <= 64) || (c >= 91 && c <= 96) ||
      (c >= 123 && c <= 126)) {
    return true;
  }
  switch (utf8proc_category(c)) {
    case UTF8PROC_CATEGORY_PC:
    case UTF8PROC_CATEGORY_PD:
    case UTF8PROC_CATEGORY_PS:
    case UTF8PROC_CATEGORY_PE:
    case UTF8PROC_CATEGORY_PI:
    case UTF8PROC_CATEGORY_PF:
    case UTF8PROC_CATEGORY_PO:
      return true;
    default:
      return false;
  }
}

bool IsChineseChar(utf8proc_int32_t c) {
  return (c >= 0x4E00 && c <= 0x9FFF) || (c >= 0x3400 && c <= 0x4DBF) ||
         (c >= 0x20000 && c <= 0x2A6DF) || (c >= 0x2A700 && c <= 0x2B73F) ||
         (c >= 0x2B740 && c <= 0x2B81F) || (c >= 0x2B820 && c <= 0x2CEAF) ||
         (c >= 0xF900 && c <= 0xFAFF) || (c >= 0x2F800 && c <= 0x2FA1F);
}

void AppendUtf8(utf8proc_int32_t c, std::string* out) {
  utf8proc_uint8_t buf[4];
  const utf8proc_ssize_t n = utf8proc_encode_char(c, buf);
  out->append(reinterpret_cast<const char*>(buf), static_cast<size_t>(n));
}

std::vector<utf8proc_int32_t> Decode(absl::string_view s) {
  std::vector<utf8proc_int32_t> out;
  const auto* p = reinterpret_cast<const utf8proc_uint8_t*>(s.data());
  utf8proc_ssize_t left = static_cast<utf8proc_ssize_t>(s.size());
  while (left > 0) {
    utf8proc_int32_t c;
    const utf8proc_ssize_t n = utf8proc_iterate(p, left, &c);
    if (n <= 0) break;  // callers validate first
    out.push_back(c);
    p += n;
    left -= n;
  }
  return out;
}

// Applies utf8proc_map with `options`; the input is valid UTF-8.
std::string Map(const std::string& s, int options) {
  utf8proc_uint8_t* out = nullptr;
  const utf8proc_ssize_t n = utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(s.data()),
                                          static_cast<utf8proc_ssize_t>(s.size()), &out,
                                          static_cast<utf8proc_option_t>(options));
  if (n < 0) return s;
  std::string result(reinterpret_cast<char*>(out), static_cast<size_t>(n));
  std::free(out);
  return result;
}

}  // namespace

absl::Status ValidateUtf8(absl::string_view text) {
  const auto* p = reinterpret_cast<const utf8proc_uint8_t*>(text.data());
  utf8proc_ssize_t left = static_cast<utf8proc_ssize_t>(text.size());
  size_t offset = 0;
  while (left > 0) {
    utf8proc_int32_t c;
    const utf8proc_ssize_t n = utf8proc_iterate(p, left, &c);
    if (n <= 0 || c < 0) {
      return absl::InvalidArgumentError(absl::StrCat("invalid UTF-8 at byte offset ", offset));
    }
    p += n;
    left -= n;
    offset += static_cast<size_t>(n);
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<WordPieceTokenizer>> WordPieceTokenizer::Create(
    const Options& options, absl::string_view vocab_text) {
  std::unique_ptr<WordPieceTokenizer> t(new WordPieceTokenizer(options));
  std::vector<absl::string_view> lines = absl::StrSplit(vocab_text, '\n');
  if (!lines.empty() && lines.back().empty()) lines.pop_back();
  for (absl::string_view line : lines) {
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    std::string token(line);
    if (!t->ids_.emplace(token, static_cast<int64_t>(t->vocab_.size())).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("vocabulary repeats token \"", token, "\" at line ", t->vocab_.size() + 1));
    }
    t->vocab_.push_back(std::move(token));
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
  return t;
}

absl::StatusOr<std::unique_ptr<WordPieceTokenizer>> WordPieceTokenizer::FromFile(
    const Options& options, const std::string& path) {
  absl::StatusOr<std::string> text = ReadFileToString(path);
  if (!text.ok()) return text.status();
  auto t = Create(options, *text);
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
  const std::vector<utf8proc_int32_t> chars = Decode(word);
  if (static_cast<int>(chars.size()) > options_.max_input_chars_per_word) {
    ids->push_back(unk_id_);
    return;
  }
  // Byte offset of each character boundary.
  std::vector<size_t> bounds{0};
  for (utf8proc_int32_t c : chars) {
    std::string tmp;
    AppendUtf8(c, &tmp);
    bounds.push_back(bounds.back() + tmp.size());
  }
  std::vector<int64_t> pieces;
  size_t start = 0;
  while (start < chars.size()) {
    size_t end = chars.size();
    int64_t found = -1;
    while (start < end) {
      std::string sub = word.substr(bounds[start], bounds[end] - bounds[start]);
      if (start > 0) sub = "##" + sub;
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

absl::StatusOr<std::vector<int64_t>> WordPieceTokenizer::TokenizeToIds(
    absl::string_view text) const {
  if (absl::Status s = ValidateUtf8(text); !s.ok()) return s;
  // Clean control characters, normalise whitespace, and isolate CJK ideographs.
  std::string cleaned;
  cleaned.reserve(text.size());
  for (utf8proc_int32_t c : Decode(text)) {
    if (c == 0 || c == 0xFFFD || IsControl(c)) continue;
    if (IsWhitespace(c)) {
      cleaned.push_back(' ');
    } else if (options_.tokenize_chinese_chars && IsChineseChar(c)) {
      cleaned.push_back(' ');
      AppendUtf8(c, &cleaned);
      cleaned.push_back(' ');
    } else {
      AppendUtf8(c, &cleaned);
    }
  }
  cleaned = Map(cleaned, UTF8PROC_STABLE | UTF8PROC_COMPOSE);  // NFC
  std::vector<int64_t> ids;
  for (absl::string_view w : absl::StrSplit(cleaned, ' ', absl::SkipEmpty())) {
    std::string word(w);
    if (options_.lowercase) {
      std::string lower;
      for (utf8proc_int32_t c : Decode(word)) AppendUtf8(utf8proc_tolower(c), &lower);
      word = std::move(lower);
    }
    if (options_.strip_accents) {
      std::string nfd = Map(word, UTF8PROC_STABLE | UTF8PROC_DECOMPOSE);
      word.clear();
      for (utf8proc_int32_t c : Decode(nfd)) {
        if (utf8proc_category(c) != UTF8PROC_CATEGORY_MN) AppendUtf8(c, &word);
      }
    }
    // Split on punctuation: each punctuation character is its own token.
    std::string current;
    for (utf8proc_int32_t c : Decode(word)) {
      if (IsPunctuation(c)) {
        if (!current.empty()) WordPiece(current, &ids);
        current.clear();
        std::string p;
        AppendUtf8(c, &p);
        WordPiece(p, &ids);
      } else {
        AppendUtf8(c, &current);
      }
    }
    if (!current.empty()) WordPiece(current, &ids);
  }
  return ids;
}

absl::StatusOr<std::vector<std::string>> WordPieceTokenizer::Tokenize(
    absl::string_view text) const {
  absl::StatusOr<std::vector<int64_t>> ids = TokenizeToIds(text);
  if (!ids.ok()) return ids.status();
  std::vector<std::string> out;
  out.reserve(ids->size());
  for (int64_t id : *ids) out.push_back(IdToToken(id));
  return out;
}

absl::StatusOr<Encoding> WordPieceTokenizer::Encode(absl::string_view text,
                                                    std::optional<absl::string_view> pair,
                                                    int max_length) const {
  const int specials = pair.has_value() ? 3 : 2;
  if (max_length < specials + 1) {
    return absl::InvalidArgumentError(absl::StrCat("max_length ", max_length, " is too small"));
  }
  absl::StatusOr<std::vector<int64_t>> a = TokenizeToIds(text);
  if (!a.ok()) return a.status();
  std::vector<int64_t> b;
  if (pair.has_value()) {
    absl::StatusOr<std::vector<int64_t>> bb = TokenizeToIds(*pair);
    if (!bb.ok())
      return absl::InvalidArgumentError(absl::StrCat("text pair: ", bb.status().message()));
    b = std::move(*bb);
  }
  Encoding e;
  const size_t budget = static_cast<size_t>(max_length - specials);
  while (a->size() + b.size() > budget) {  // longest_first
    e.truncated = true;
    if (a->size() >= b.size()) {
      a->pop_back();
    } else {
      b.pop_back();
    }
  }
  e.input_ids.push_back(cls_id_);
  e.input_ids.insert(e.input_ids.end(), a->begin(), a->end());
  e.input_ids.push_back(sep_id_);
  e.token_type_ids.assign(e.input_ids.size(), 0);
  if (pair.has_value()) {
    e.input_ids.insert(e.input_ids.end(), b.begin(), b.end());
    e.input_ids.push_back(sep_id_);
    e.token_type_ids.resize(e.input_ids.size(), 1);
  }
  return e;
}

}  // namespace loracle::model
