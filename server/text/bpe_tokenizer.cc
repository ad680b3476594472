#include "server/text/bpe_tokenizer.h"

#include <utf8proc.h>

#include <cstdlib>
#include <limits>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "server/text/utf8_util.h"

namespace loracle::text {
namespace {

// GPT-2's bytes_to_unicode: printable Latin-1 bytes map to themselves, the other 68 bytes to
// U+0100 onwards, in byte order.
void ByteAlphabet(std::string (&out)[256]) {
  int next = 256;
  for (int b = 0; b < 256; ++b) {
    const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
    out[b].clear();
    AppendUtf8(printable ? b : next++, &out[b]);
  }
}

bool IsSpace(int32_t c) { return IsUnicodeWhitespace(c); }

}  // namespace

absl::StatusOr<std::unique_ptr<ByteLevelBpeTokenizer>> ByteLevelBpeTokenizer::Create(
    const Options& options, const std::vector<std::pair<std::string, int64_t>>& vocab,
    const std::vector<std::pair<std::string, std::string>>& merges,
    const SpecialTokensTemplate& special, std::vector<AddedToken> added) {
  std::unique_ptr<ByteLevelBpeTokenizer> t(new ByteLevelBpeTokenizer(options));
  ByteAlphabet(t->byte_chars_);
  int64_t max_id = -1;
  for (const auto& [token, id] : vocab) {
    // Ids index a table; gaps (e.g. between the vocabulary and added tokens) are allowed, a table
    // mostly of gaps (an id of 1e18 in a hostile file) is not.
    const int64_t id_limit = 2 * static_cast<int64_t>(vocab.size()) + 1024;
    if (id < 0 || id >= id_limit) {
      return absl::InvalidArgumentError(absl::StrCat("token \"", token, "\" has id ", id,
                                                     "; ids must be in 0..", id_limit - 1, " for ",
                                                     vocab.size(), " tokens"));
    }
    if (!t->ids_.emplace(token, id).second) {
      return absl::InvalidArgumentError(absl::StrCat("vocabulary repeats token \"", token, "\""));
    }
    max_id = std::max(max_id, id);
  }
  t->vocab_.assign(static_cast<size_t>(max_id + 1), "");
  for (const auto& [token, id] : vocab) t->vocab_[static_cast<size_t>(id)] = token;
  for (size_t r = 0; r < merges.size(); ++r) {
    const auto& [a, b] = merges[r];
    if (!t->ids_.contains(a) || !t->ids_.contains(b) || !t->ids_.contains(a + b)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "merge ", r + 1, " (\"", a, " ", b, "\") uses a token missing from the vocabulary"));
    }
    t->ranks_.emplace(absl::StrCat(a, " ", b), static_cast<int>(r));  // first rank wins
  }
  if (!options.unk_token.empty()) {
    auto it = t->ids_.find(options.unk_token);
    if (it == t->ids_.end()) {
      return absl::InvalidArgumentError(
          absl::StrCat("vocabulary lacks the unk token \"", options.unk_token, "\""));
    }
    t->unk_id_ = it->second;
  }
  auto pad = t->ids_.find(options.pad_token);
  if (pad == t->ids_.end()) {
    return absl::InvalidArgumentError(
        absl::StrCat("vocabulary lacks the pad token \"", options.pad_token, "\""));
  }
  t->pad_id_ = pad->second;
  t->template_ = special;
  t->SetAddedTokens(std::move(added));
  return t;
}

const std::string& ByteLevelBpeTokenizer::IdToToken(int64_t id) const {
  static const std::string kEmpty;
  return id >= 0 && id < vocab_size() ? vocab_[static_cast<size_t>(id)] : kEmpty;
}

int64_t ByteLevelBpeTokenizer::TokenToId(absl::string_view token) const {
  auto it = ids_.find(token);
  return it == ids_.end() ? -1 : it->second;
}

std::vector<std::string> ByteLevelBpeTokenizer::SplitGpt2(absl::string_view text) {
  const std::vector<int32_t> c = DecodeUtf8(text);
  const size_t n = c.size();
  std::vector<std::string> out;
  auto emit = [&](size_t begin, size_t end) {
    std::string s;
    for (size_t k = begin; k < end; ++k) AppendUtf8(c[k], &s);
    out.push_back(std::move(s));
  };
  auto run = [&](size_t k, auto pred) {
    while (k < n && pred(c[k])) ++k;
    return k;
  };
  auto other = [](int32_t ch) { return !IsSpace(ch) && !IsLetter(ch) && !IsNumber(ch); };
  size_t i = 0;
  while (i < n) {
    // 's|'t|'re|'ve|'m|'ll|'d (case-sensitive, as GPT-2's pattern)
    if (c[i] == '\'' && i + 1 < n) {
      const int32_t a = c[i + 1];
      const int32_t b = i + 2 < n ? c[i + 2] : 0;
      size_t len = 0;
      if (a == 's' || a == 't' || a == 'm' || a == 'd') len = 2;
      if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) len = 3;
      if (len > 0) {
        emit(i, i + len);
        i += len;
        continue;
      }
    }
    // ' ?\p{L}+', ' ?\p{N}+', ' ?[^\s\p{L}\p{N}]+'
    const size_t start = i;
    const size_t body = c[i] == ' ' && i + 1 < n ? i + 1 : i;
    size_t end = body;
    if (IsLetter(c[body])) {
      end = run(body, IsLetter);
    } else if (IsNumber(c[body])) {
      end = run(body, IsNumber);
    } else if (other(c[body])) {
      end = run(body, other);
    }
    if (end > body) {
      emit(start, end);
      i = end;
      continue;
    }
    // '\s+(?!\S)' then '\s+': a whitespace run, less its last character when a non-space
    // follows (that character then leads the next piece).
    end = run(i, IsSpace);
    if (end < n && end - i > 1) --end;
    emit(i, end);
    i = end;
  }
  return out;
}

std::vector<std::string> ByteLevelBpeTokenizer::SplitLlama3(absl::string_view text,
                                                            int max_digits) {
  const std::vector<int32_t> c = DecodeUtf8(text);
  const size_t n = c.size();
  std::vector<std::string> out;
  auto emit = [&](size_t begin, size_t end) {
    std::string s;
    for (size_t k = begin; k < end; ++k) AppendUtf8(c[k], &s);
    out.push_back(std::move(s));
  };
  auto run = [&](size_t k, auto pred) {
    while (k < n && pred(c[k])) ++k;
    return k;
  };
  auto newline = [](int32_t ch) { return ch == '\r' || ch == '\n'; };
  auto other = [](int32_t ch) { return !IsSpace(ch) && !IsLetter(ch) && !IsNumber(ch); };
  auto lower = [](int32_t ch) { return ch >= 'A' && ch <= 'Z' ? ch + 32 : ch; };
  size_t i = 0;
  while (i < n) {
    // (?i:'s|'t|'re|'ve|'m|'ll|'d)
    if (c[i] == '\'' && i + 1 < n) {
      const int32_t a = lower(c[i + 1]);
      const int32_t b = i + 2 < n ? lower(c[i + 2]) : 0;
      size_t len = 0;
      if (a == 's' || a == 't' || a == 'm' || a == 'd') len = 2;
      if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) len = 3;
      if (len > 0) {
        emit(i, i + len);
        i += len;
        continue;
      }
    }
    // [^\r\n\p{L}\p{N}]?\p{L}+
    if (!newline(c[i]) && !IsLetter(c[i]) && !IsNumber(c[i]) && i + 1 < n && IsLetter(c[i + 1])) {
      const size_t end = run(i + 1, IsLetter);
      emit(i, end);
      i = end;
      continue;
    }
    if (IsLetter(c[i])) {
      const size_t end = run(i, IsLetter);
      emit(i, end);
      i = end;
      continue;
    }
    // \p{N}{1,max_digits}
    if (IsNumber(c[i])) {
      size_t end = i;
      while (end < n && IsNumber(c[end]) && end - i < static_cast<size_t>(max_digits)) ++end;
      emit(i, end);
      i = end;
      continue;
    }
    // ' ?[^\s\p{L}\p{N}]+[\r\n]*'
    const size_t body = c[i] == ' ' && i + 1 < n && other(c[i + 1]) ? i + 1 : i;
    if (other(c[body])) {
      const size_t end = run(run(body, other), newline);
      emit(i, end);
      i = end;
      continue;
    }
    // \s*[\r\n]+: the whitespace run up to its last line break
    const size_t space_end = run(i, IsSpace);
    size_t last_break = n;
    for (size_t k = i; k < space_end; ++k) {
      if (newline(c[k])) last_break = k;
    }
    if (last_break != n) {
      emit(i, last_break + 1);
      i = last_break + 1;
      continue;
    }
    // \s+(?!\S) then \s+: the run, less its last character when a non-space follows it
    size_t end = space_end;
    if (end < n && end - i > 1) --end;
    emit(i, end);
    i = end;
  }
  return out;
}

void ByteLevelBpeTokenizer::Bpe(const std::string& mapped, std::vector<int64_t>* ids) const {
  std::vector<std::string> symbols;
  for (int32_t ch : DecodeUtf8(mapped)) {
    symbols.emplace_back();
    AppendUtf8(ch, &symbols.back());
  }
  Merge(std::move(symbols), ids);
}

void ByteLevelBpeTokenizer::SentencePieceSegment(absl::string_view text, bool at_start,
                                                 std::vector<int64_t>* ids) const {
  if (text.empty()) return;
  const std::string kMeta = "\xe2\x96\x81";  // U+2581 ▁
  using Metaspace = Options::Metaspace;
  const bool metaspace = options_.metaspace != Metaspace::kOff;
  std::string input = metaspace ? "" : options_.prepend;
  for (char ch : text) {
    if ((options_.replace_space || metaspace) && ch == ' ') {
      input += kMeta;
    } else {
      input += ch;
    }
  }
  if (metaspace && !absl::StartsWith(input, kMeta) &&
      (options_.metaspace == Metaspace::kAlways ||
       (options_.metaspace == Metaspace::kFirst && at_start))) {
    input.insert(0, kMeta);
  }
  if (metaspace && options_.metaspace_split) {
    // MergedWithNext: each "▁" begins a word; the words are merged one by one.
    size_t begin = 0;
    while (begin < input.size()) {
      // The next "▁" after this word's first byte (UTF-8 never matches inside a character).
      size_t next = input.find(kMeta, begin + 1);
      if (next == std::string::npos) next = input.size();
      SentencePieceWord(input.substr(begin, next - begin), ids);
      begin = next;
    }
    return;
  }
  SentencePieceWord(input, ids);
}

void ByteLevelBpeTokenizer::SentencePieceWord(const std::string& input,
                                              std::vector<int64_t>* ids) const {
  if (input.empty()) return;
  const std::string unk = unk_id_ >= 0 ? vocab_[static_cast<size_t>(unk_id_)] : "";
  std::vector<std::string> symbols;
  std::string ch;
  for (int32_t c : DecodeUtf8(input)) {
    ch.clear();
    AppendUtf8(c, &ch);
    if (ids_.contains(ch)) {
      symbols.push_back(ch);
      continue;
    }
    bool bytes_known = options_.byte_fallback;
    std::vector<std::string> bytes;
    for (unsigned char b : ch) {
      bytes.push_back(absl::StrFormat("<0x%02X>", b));
      bytes_known = bytes_known && ids_.contains(bytes.back());
    }
    if (bytes_known) {
      symbols.insert(symbols.end(), bytes.begin(), bytes.end());
    } else if (!unk.empty() && !(options_.fuse_unk && !symbols.empty() && symbols.back() == unk)) {
      symbols.push_back(unk);
    }
  }
  Merge(std::move(symbols), ids);
}

void ByteLevelBpeTokenizer::Merge(std::vector<std::string> symbols,
                                  std::vector<int64_t>* ids) const {
  std::string key;
  while (symbols.size() > 1) {
    int best = std::numeric_limits<int>::max();
    for (size_t k = 0; k + 1 < symbols.size(); ++k) {
      key.assign(symbols[k]).append(" ").append(symbols[k + 1]);
      auto it = ranks_.find(key);
      if (it != ranks_.end() && it->second < best) best = it->second;
    }
    if (best == std::numeric_limits<int>::max()) break;
    // Merge every occurrence of the best pair, left to right.
    std::vector<std::string> merged;
    merged.reserve(symbols.size());
    for (size_t k = 0; k < symbols.size(); ++k) {
      if (k + 1 < symbols.size()) {
        key.assign(symbols[k]).append(" ").append(symbols[k + 1]);
        auto it = ranks_.find(key);
        if (it != ranks_.end() && it->second == best) {
          merged.push_back(symbols[k] + symbols[k + 1]);
          ++k;
          continue;
        }
      }
      merged.push_back(std::move(symbols[k]));
    }
    symbols = std::move(merged);
  }
  for (const std::string& s : symbols) {
    auto it = ids_.find(s);
    if (it != ids_.end()) {
      ids->push_back(it->second);
    } else if (unk_id_ >= 0) {
      ids->push_back(unk_id_);
    }
  }
}

void ByteLevelBpeTokenizer::TokenizeSegment(absl::string_view text, bool at_start,
                                            std::vector<int64_t>* ids) const {
  if (!options_.byte_level) {
    SentencePieceSegment(text, at_start, ids);
    return;
  }
  std::string input(text);
  if (options_.nfc && !input.empty()) {
    utf8proc_uint8_t* nfc = utf8proc_NFC(reinterpret_cast<const utf8proc_uint8_t*>(input.c_str()));
    if (nfc != nullptr) {  // null only for invalid UTF-8, which Encode has already replaced
      input.assign(reinterpret_cast<const char*>(nfc));
      std::free(nfc);
    }
  }
  if (options_.add_prefix_space && !input.empty() && input.front() != ' ') input.insert(0, " ");
  const std::vector<std::string> pieces =
      options_.pattern == Pattern::kGpt2
          ? SplitGpt2(input)
          : SplitLlama3(input, options_.pattern == Pattern::kLlama3 ? 3 : 1);
  for (const std::string& piece : pieces) {
    std::string mapped;
    for (unsigned char b : piece) mapped += byte_chars_[b];
    if (options_.ignore_merges) {
      if (auto it = ids_.find(mapped); it != ids_.end()) {
        ids->push_back(it->second);
        continue;
      }
    }
    Bpe(mapped, ids);
  }
}

}  // namespace loracle::text
