#ifndef LORACLE_SERVER_TEXT_TOKENIZER_H_
#define LORACLE_SERVER_TEXT_TOKENIZER_H_

// The tokenizer interface and what all tokenizers share: special tokens found in raw text,
// the post-processor template that adds [CLS]/[SEP] (or <s>/</s>), and pair truncation.

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace loracle::text {

// The model inputs for one text (or text pair), special tokens included.
struct Encoding {
  std::vector<int64_t> input_ids;
  std::vector<int64_t> token_type_ids;
  bool truncated = false;  // tokens were dropped to fit max_length
};

// Where special tokens go (transformers' post-processor): each piece is a special token or
// sequence A / B, with a token type id.
struct SpecialTokensTemplate {
  struct Piece {
    int sequence = -1;  // 0 = A, 1 = B, -1 = the special token `id`
    int64_t id = -1;
    int type_id = 0;
  };
  std::vector<Piece> single, pair;

  // [CLS] A [SEP] / [CLS] A [SEP] B [SEP], B's part with type id 1 (BertProcessing).
  static SpecialTokensTemplate Bert(int64_t cls, int64_t sep);
  // <s> A </s> / <s> A </s></s> B </s>, all type id 0 (RobertaProcessing).
  static SpecialTokensTemplate Roberta(int64_t cls, int64_t sep);
  int NumSpecial(bool is_pair) const;
};

// A token matched verbatim in raw text before normalisation (tokenizer.json "added_tokens" and
// the special tokens), as transformers does: "[SEP]" typed by a user is the [SEP] token.
struct AddedToken {
  std::string content;
  int64_t id = -1;
  bool lstrip = false;  // swallow whitespace on its left / right
  bool rstrip = false;
};

// Immutable after creation; thread-safe.
class Tokenizer {
 public:
  virtual ~Tokenizer() = default;

  // Token strings of `text`, without special tokens. INVALID_ARGUMENT (with the byte offset) on
  // invalid UTF-8.
  absl::StatusOr<std::vector<std::string>> Tokenize(absl::string_view text) const;
  // Ids of `text`, without special tokens.
  absl::StatusOr<std::vector<int64_t>> TokenizeToIds(absl::string_view text) const;

  // Encodes `text` (and `pair`) into at most `max_length` ids including special tokens. When too
  // long, truncates as Hugging Face tokenizers' "longest_first" does: the longer sequence is cut
  // down to the shorter's length first, then both share what is left (the first gets the
  // smaller half). INVALID_ARGUMENT on bad UTF-8 or a max_length below the special tokens + 1.
  absl::StatusOr<Encoding> Encode(absl::string_view text, std::optional<absl::string_view> pair,
                                  int max_length) const;

  // A single text read in windows, for inputs longer than one window (Predict and fine-tuning
  // with max_windows > 1): `ids` (a text's ids without special tokens) become at most
  // `max_windows` encodings of at most `max_length` ids each, special tokens included. Ids that
  // fit one window give one window, exactly as Encode. Longer ids give w = min(max_windows,
  // ceil(n / L)) windows of exactly L = max_length - specials ids: when they cover the whole text
  // their starts are spread evenly (neighbours overlap by less than L in all); when they cannot,
  // they cover the first w * L ids back to back and every window is marked `truncated`.
  // INVALID_ARGUMENT for max_length below the special tokens + 1 or max_windows < 1.
  absl::StatusOr<std::vector<Encoding>> Windows(const std::vector<int64_t>& ids, int max_length,
                                                int max_windows) const;
  // `text` inside a prompt template, prefix + text + suffix, as one encoding of at most
  // `max_length` ids with special tokens: the ids of prefix + text, then those of the suffix
  // tokenised on its own (the ids of the whole prompt whenever the suffix starts at a pre-token
  // boundary, as a suffix starting with a space, newline or punctuation does). When too long,
  // the prefix + text ids are cut at their end (`truncated`); the suffix is always kept, since
  // the prediction is read after it. INVALID_ARGUMENT on bad UTF-8 or when the suffix and the
  // special tokens leave no room for one more id.
  absl::StatusOr<Encoding> EncodePrompt(absl::string_view prefix, absl::string_view text,
                                        absl::string_view suffix, int max_length) const;
  // Windows of `text`; a text pair (or max_windows == 1) gives the one encoding of Encode.
  absl::StatusOr<std::vector<Encoding>> EncodeWindows(absl::string_view text,
                                                      std::optional<absl::string_view> pair,
                                                      int max_length, int max_windows) const;

  virtual int64_t vocab_size() const = 0;
  virtual const std::string& IdToToken(int64_t id) const = 0;
  int64_t pad_id() const { return pad_id_; }
  const SpecialTokensTemplate& special_tokens() const { return template_; }

 protected:
  // Ids of a stretch of text that contains no added token; `text` is valid UTF-8. `at_start`:
  // the stretch begins the text (no added token before it).
  virtual void TokenizeSegment(absl::string_view text, bool at_start,
                               std::vector<int64_t>* ids) const = 0;

  // Appends the template's ids for `a` (and `b`, a pair, when not null) to `e`.
  void Assemble(const std::vector<int64_t>& a, const std::vector<int64_t>* b, Encoding* e) const;

  SpecialTokensTemplate template_;
  std::vector<AddedToken> added_;  // longest content first
  int64_t pad_id_ = 0;
  void SetAddedTokens(std::vector<AddedToken> tokens);
};

// Checks that `text` is valid UTF-8. INVALID_ARGUMENT naming the byte offset otherwise.
absl::Status ValidateUtf8(absl::string_view text);

}  // namespace loracle::text

#endif  // LORACLE_SERVER_TEXT_TOKENIZER_H_
