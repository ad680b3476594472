#include "server/text/tokenizer.h"

#include <utf8proc.h>

#include <algorithm>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "server/text/utf8_util.h"

namespace loracle::text {

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

SpecialTokensTemplate SpecialTokensTemplate::Bert(int64_t cls, int64_t sep) {
  SpecialTokensTemplate t;
  t.single = {{-1, cls, 0}, {0, -1, 0}, {-1, sep, 0}};
  t.pair = {{-1, cls, 0}, {0, -1, 0}, {-1, sep, 0}, {1, -1, 1}, {-1, sep, 1}};
  return t;
}

SpecialTokensTemplate SpecialTokensTemplate::Roberta(int64_t cls, int64_t sep) {
  SpecialTokensTemplate t;
  t.single = {{-1, cls, 0}, {0, -1, 0}, {-1, sep, 0}};
  t.pair = {{-1, cls, 0}, {0, -1, 0}, {-1, sep, 0}, {-1, sep, 1}, {1, -1, 1}, {-1, sep, 1}};
  return t;
}

int SpecialTokensTemplate::NumSpecial(bool is_pair) const {
  int n = 0;
  for (const Piece& p : is_pair ? pair : single) n += p.sequence < 0;
  return n;
}

void Tokenizer::SetAddedTokens(std::vector<AddedToken> tokens) {
  tokens.erase(std::remove_if(tokens.begin(), tokens.end(),
                              [](const AddedToken& t) { return t.content.empty(); }),
               tokens.end());
  std::stable_sort(tokens.begin(), tokens.end(), [](const AddedToken& a, const AddedToken& b) {
    return a.content.size() > b.content.size();
  });
  added_ = std::move(tokens);
}

absl::StatusOr<std::vector<int64_t>> Tokenizer::TokenizeToIds(absl::string_view text) const {
  if (absl::Status s = ValidateUtf8(text); !s.ok()) return s;
  std::vector<int64_t> ids;
  // Split on added tokens (leftmost, then longest); the stretches between are tokenized normally.
  size_t pos = 0;
  size_t seg_begin = 0;
  while (pos < text.size()) {
    const AddedToken* match = nullptr;
    for (const AddedToken& t : added_) {
      if (text.compare(pos, t.content.size(), t.content) == 0) {
        match = &t;
        break;
      }
    }
    if (match == nullptr) {
      ++pos;
      continue;
    }
    size_t seg_end = pos;
    if (match->lstrip) {
      while (seg_end > seg_begin && (text[seg_end - 1] == ' ' || text[seg_end - 1] == '\t' ||
                                     text[seg_end - 1] == '\n' || text[seg_end - 1] == '\r')) {
        --seg_end;
      }
    }
    if (seg_end > seg_begin) {
      TokenizeSegment(text.substr(seg_begin, seg_end - seg_begin), seg_begin == 0, &ids);
    }
    ids.push_back(match->id);
    pos += match->content.size();
    if (match->rstrip) {
      while (pos < text.size() &&
             (text[pos] == ' ' || text[pos] == '\t' || text[pos] == '\n' || text[pos] == '\r')) {
        ++pos;
      }
    }
    seg_begin = pos;
  }
  if (seg_begin < text.size()) TokenizeSegment(text.substr(seg_begin), seg_begin == 0, &ids);
  return ids;
}

absl::StatusOr<std::vector<std::string>> Tokenizer::Tokenize(absl::string_view text) const {
  absl::StatusOr<std::vector<int64_t>> ids = TokenizeToIds(text);
  if (!ids.ok()) return ids.status();
  std::vector<std::string> out;
  out.reserve(ids->size());
  for (int64_t id : *ids) out.push_back(IdToToken(id));
  return out;
}

void Tokenizer::Assemble(const std::vector<int64_t>& a, const std::vector<int64_t>* b,
                         Encoding* e) const {
  for (const SpecialTokensTemplate::Piece& p : b != nullptr ? template_.pair : template_.single) {
    if (p.sequence < 0) {
      e->input_ids.push_back(p.id);
      e->token_type_ids.push_back(p.type_id);
    } else {
      const std::vector<int64_t>& seq = p.sequence == 0 ? a : *b;
      e->input_ids.insert(e->input_ids.end(), seq.begin(), seq.end());
      e->token_type_ids.insert(e->token_type_ids.end(), seq.size(), p.type_id);
    }
  }
}

absl::StatusOr<std::vector<Encoding>> Tokenizer::Windows(const std::vector<int64_t>& ids,
                                                         int max_length, int max_windows) const {
  const int specials = template_.NumSpecial(false);
  if (max_length < specials + 1) {
    return absl::InvalidArgumentError(absl::StrCat("max_length ", max_length, " is too small"));
  }
  if (max_windows < 1) {
    return absl::InvalidArgumentError(absl::StrCat("max_windows must be >= 1, got ", max_windows));
  }
  const size_t n = ids.size(), len = static_cast<size_t>(max_length - specials);
  const size_t needed = std::max<size_t>(1, (n + len - 1) / len);
  const size_t w = std::min(needed, static_cast<size_t>(max_windows));
  const bool truncated = needed > w;
  std::vector<Encoding> out(w);
  for (size_t j = 0; j < w; ++j) {
    // Covering the whole text: starts spread evenly, the last window ending at the last token.
    // Not covering it: consecutive windows over the first w * len tokens.
    size_t begin = j * len;
    if (!truncated && w > 1) begin = j * (n - len) / (w - 1);
    const size_t end = std::min(n, begin + len);
    const std::vector<int64_t> part(ids.begin() + static_cast<std::ptrdiff_t>(begin),
                                    ids.begin() + static_cast<std::ptrdiff_t>(end));
    out[j].truncated = truncated;
    Assemble(part, nullptr, &out[j]);
  }
  return out;
}

absl::StatusOr<Encoding> Tokenizer::EncodePrompt(absl::string_view prefix, absl::string_view text,
                                                 absl::string_view suffix, int max_length) const {
  absl::StatusOr<std::vector<int64_t>> head = TokenizeToIds(absl::StrCat(prefix, text));
  if (!head.ok()) return head.status();
  absl::StatusOr<std::vector<int64_t>> tail = TokenizeToIds(suffix);
  if (!tail.ok()) return tail.status();
  const int64_t budget = static_cast<int64_t>(max_length) - template_.NumSpecial(false) -
                         static_cast<int64_t>(tail->size());
  if (budget < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the prompt template's text after {text} is ", tail->size(),
        " tokens, which leaves no room for the input in a window of ", max_length, " tokens"));
  }
  Encoding e;
  if (static_cast<int64_t>(head->size()) > budget) {
    head->resize(static_cast<size_t>(budget));
    e.truncated = true;
  }
  head->insert(head->end(), tail->begin(), tail->end());
  Assemble(*head, nullptr, &e);
  return e;
}

absl::StatusOr<std::vector<Encoding>> Tokenizer::EncodeWindows(
    absl::string_view text, std::optional<absl::string_view> pair, int max_length,
    int max_windows) const {
  if (pair.has_value() || max_windows == 1) {
    absl::StatusOr<Encoding> e = Encode(text, pair, max_length);
    if (!e.ok()) return e.status();
    return std::vector<Encoding>{*std::move(e)};
  }
  absl::StatusOr<std::vector<int64_t>> ids = TokenizeToIds(text);
  if (!ids.ok()) return ids.status();
  return Windows(*ids, max_length, max_windows);
}

absl::StatusOr<Encoding> Tokenizer::Encode(absl::string_view text,
                                           std::optional<absl::string_view> pair,
                                           int max_length) const {
  const int specials = template_.NumSpecial(pair.has_value());
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
  if (a->size() + b.size() > budget) {
    e.truncated = true;
    if (!pair.has_value()) {
      a->resize(budget);
    } else {
      // tokenizers' LongestFirst: the shorter keeps its length when it fits in half or less;
      // otherwise both get half, the originally longer one the odd token.
      size_t n1 = a->size(), n2 = b.size();
      const bool swap = n1 > n2;
      if (swap) std::swap(n1, n2);
      n2 = n1 > budget ? n1 : std::max(n1, budget - n1);
      if (n1 + n2 > budget) {
        n1 = budget / 2;
        n2 = n1 + budget % 2;
      }
      if (swap) std::swap(n1, n2);
      a->resize(std::min(a->size(), n1));
      b.resize(std::min(b.size(), n2));
    }
  }
  Assemble(*a, pair.has_value() ? &b : nullptr, &e);
  return e;
}

}  // namespace loracle::text
