// libFuzzer target: arbitrary bytes as text to encode, with the bundled WordPiece (BERT uncased,
// cased) and byte-level BPE (RoBERTa) tokenizers of tests/data/tokenizers. The first byte picks
// the tokenizer and the truncation length; a NUL byte splits the input into a text pair. Every
// encoding must respect max_length and hold ids inside the vocabulary; a single text's windows
// (up to 1 + data[0] % 5 of them) must too, cover it in order when not truncated, and equal
// Encode when there is one.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "server/text/tokenizer_files.h"

#ifndef LORACLE_SOURCE_DIR
#error LORACLE_SOURCE_DIR must name the source tree
#endif

namespace {

std::vector<std::unique_ptr<loracle::text::Tokenizer>>& Tokenizers() {
  static auto* all = [] {
    auto* v = new std::vector<std::unique_ptr<loracle::text::Tokenizer>>();
    for (const char* name : {"bert-uncased", "bert-cased", "roberta"}) {
      int max_length = 0;
      auto t = loracle::text::LoadTokenizer(
          std::string(LORACLE_SOURCE_DIR) + "/tests/data/tokenizers/" + name, &max_length);
      if (!t.ok()) std::abort();
      v->push_back(*std::move(t));
    }
    return v;
  }();
  return *all;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const loracle::text::Tokenizer& t = *Tokenizers()[data[0] % 3];
  const int max_length = 8 + (data[0] / 3) % 120;
  const absl::string_view all(reinterpret_cast<const char*>(data) + 1, size - 1);
  const size_t nul = all.find('\0');
  std::optional<absl::string_view> pair;
  absl::string_view text = all;
  if (nul != absl::string_view::npos) {
    text = all.substr(0, nul);
    pair = all.substr(nul + 1);
  }
  auto e = t.Encode(text, pair, max_length);
  if (!e.ok()) return 0;
  if (static_cast<int>(e->input_ids.size()) > max_length) std::abort();
  if (e->token_type_ids.size() != e->input_ids.size()) std::abort();
  for (int64_t id : e->input_ids) {
    if (id < 0 || id >= t.vocab_size()) std::abort();
  }
  if (pair.has_value()) return 0;
  const int max_windows = 1 + data[0] % 5;
  auto ids = t.TokenizeToIds(text);
  if (!ids.ok()) std::abort();  // Encode accepted the same text
  auto windows = t.Windows(*ids, max_length, max_windows);
  if (!windows.ok() || windows->empty() || static_cast<int>(windows->size()) > max_windows) {
    std::abort();
  }
  if (windows->size() == 1 && (*windows)[0].input_ids != e->input_ids) std::abort();
  const size_t specials = static_cast<size_t>(t.special_tokens().NumSpecial(false));
  size_t covered = 0;  // the last id of the text each window reaches
  for (const loracle::text::Encoding& w : *windows) {
    if (static_cast<int>(w.input_ids.size()) > max_length) std::abort();
    if (w.truncated != (*windows)[0].truncated) std::abort();
    covered += w.input_ids.size() - specials;
  }
  if (!(*windows)[0].truncated && covered < ids->size()) std::abort();
  if ((*windows)[0].truncated && covered >= ids->size()) std::abort();
  return 0;
}
