#ifndef LORACLE_SERVER_MODEL_WORDPIECE_TOKENIZER_H_
#define LORACLE_SERVER_MODEL_WORDPIECE_TOKENIZER_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace loracle::model {

// The model inputs for one text (or text pair): [CLS] a [SEP] (b [SEP]).
struct Encoding {
  std::vector<int64_t> input_ids;
  std::vector<int64_t> token_type_ids;
  bool truncated = false;  // tokens were dropped to fit max_length
};

// BERT's tokenizer as in Hugging Face transformers (BasicTokenizer + WordpieceTokenizer):
// clean control characters, split CJK ideographs, NFC, lower-case and strip accents (NFD, drop
// Mn), split on whitespace and punctuation, then greedy longest-match-first WordPiece with `##`
// continuations. Immutable after Create; thread-safe.
class WordPieceTokenizer {
 public:
  struct Options {
    bool lowercase = true;
    bool strip_accents = true;  // transformers: follows `lowercase` unless set explicitly
    bool tokenize_chinese_chars = true;
    int max_input_chars_per_word = 100;
    std::string unk_token = "[UNK]";
    std::string cls_token = "[CLS]";
    std::string sep_token = "[SEP]";
    std::string pad_token = "[PAD]";
  };

  // `vocab_text`: one token per line, id = line number. INVALID_ARGUMENT when the special
  // tokens are missing or a token repeats.
  static absl::StatusOr<std::unique_ptr<WordPieceTokenizer>> Create(const Options& options,
                                                                    absl::string_view vocab_text);
  static absl::StatusOr<std::unique_ptr<WordPieceTokenizer>> FromFile(const Options& options,
                                                                      const std::string& path);

  // Word pieces of `text`. INVALID_ARGUMENT (with the byte offset) on invalid UTF-8.
  absl::StatusOr<std::vector<std::string>> Tokenize(absl::string_view text) const;

  // Encodes `text` (and `pair`) into at most `max_length` ids including special tokens,
  // truncating the longer segment first (transformers' "longest_first").
  absl::StatusOr<Encoding> Encode(absl::string_view text, std::optional<absl::string_view> pair,
                                  int max_length) const;

  int64_t TokenToId(absl::string_view token) const;  // unk id when absent
  const std::string& IdToToken(int64_t id) const;
  int64_t vocab_size() const { return static_cast<int64_t>(vocab_.size()); }
  int64_t pad_id() const { return pad_id_; }
  int64_t unk_id() const { return unk_id_; }
  int64_t cls_id() const { return cls_id_; }
  int64_t sep_id() const { return sep_id_; }

 private:
  explicit WordPieceTokenizer(const Options& options) : options_(options) {}
  absl::StatusOr<std::vector<int64_t>> TokenizeToIds(absl::string_view text) const;
  void WordPiece(const std::string& word, std::vector<int64_t>* ids) const;

  Options options_;
  std::vector<std::string> vocab_;
  absl::flat_hash_map<std::string, int64_t> ids_;
  int64_t pad_id_ = 0, unk_id_ = 0, cls_id_ = 0, sep_id_ = 0;
};

// Checks that `text` is valid UTF-8. INVALID_ARGUMENT naming the byte offset otherwise.
absl::Status ValidateUtf8(absl::string_view text);

}  // namespace loracle::model

#endif  // LORACLE_SERVER_MODEL_WORDPIECE_TOKENIZER_H_
