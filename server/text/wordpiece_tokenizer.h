#ifndef LORACLE_SERVER_TEXT_WORDPIECE_TOKENIZER_H_
#define LORACLE_SERVER_TEXT_WORDPIECE_TOKENIZER_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "server/text/tokenizer.h"

namespace loracle::text {

// BERT's tokenizer as Hugging Face tokenizers runs it (BertNormalizer + BertPreTokenizer +
// WordPiece): drop control characters, whitespace to ' ', isolate CJK ideographs, strip accents
// (NFD, drop Mn) and lower-case when configured, split on whitespace and punctuation, then greedy
// longest-match-first WordPiece with `##` continuations; a word with no segmentation, or longer
// than max_input_chars_per_word, becomes [UNK]. Immutable after Create; thread-safe.
class WordPieceTokenizer : public Tokenizer {
 public:
  struct Options {
    bool clean_text = true;
    bool lowercase = true;
    bool strip_accents = true;  // transformers: follows `lowercase` unless set explicitly
    bool tokenize_chinese_chars = true;
    int max_input_chars_per_word = 100;
    std::string continuing_subword_prefix = "##";
    std::string unk_token = "[UNK]";
    std::string cls_token = "[CLS]";
    std::string sep_token = "[SEP]";
    std::string pad_token = "[PAD]";
    std::string mask_token = "[MASK]";
  };

  // `vocab`: token by id. INVALID_ARGUMENT when [UNK]/[CLS]/[SEP]/[PAD] are missing or a token
  // repeats. With no `template_override`, the BERT template ([CLS] A [SEP] B [SEP]); with no
  // `added`, the special tokens are the added tokens.
  static absl::StatusOr<std::unique_ptr<WordPieceTokenizer>> Create(
      const Options& options, std::vector<std::string> vocab,
      const SpecialTokensTemplate* template_override = nullptr, std::vector<AddedToken> added = {});
  // vocab.txt: one token per line, id = line number.
  static absl::StatusOr<std::unique_ptr<WordPieceTokenizer>> FromVocabText(
      const Options& options, absl::string_view vocab_text);
  static absl::StatusOr<std::unique_ptr<WordPieceTokenizer>> FromFile(const Options& options,
                                                                      const std::string& path);

  int64_t TokenToId(absl::string_view token) const;  // unk id when absent
  const std::string& IdToToken(int64_t id) const override;
  int64_t vocab_size() const override { return static_cast<int64_t>(vocab_.size()); }
  int64_t unk_id() const { return unk_id_; }
  int64_t cls_id() const { return cls_id_; }
  int64_t sep_id() const { return sep_id_; }

 protected:
  void TokenizeSegment(absl::string_view text, bool at_start,
                       std::vector<int64_t>* ids) const override;

 private:
  explicit WordPieceTokenizer(const Options& options) : options_(options) {}
  void WordPiece(const std::string& word, std::vector<int64_t>* ids) const;

  Options options_;
  std::vector<std::string> vocab_;
  absl::flat_hash_map<std::string, int64_t> ids_;
  int64_t unk_id_ = 0, cls_id_ = 0, sep_id_ = 0;
};

}  // namespace loracle::text

#endif  // LORACLE_SERVER_TEXT_WORDPIECE_TOKENIZER_H_
