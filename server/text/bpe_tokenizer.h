#ifndef LORACLE_SERVER_TEXT_BPE_TOKENIZER_H_
#define LORACLE_SERVER_TEXT_BPE_TOKENIZER_H_

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "server/text/tokenizer.h"

namespace loracle::text {

// Byte-level BPE as GPT-2 and RoBERTa use it (and, with Options::byte_level false, the
// sentencepiece-style BPE of Llama 2's tokenizer.json) (Hugging Face tokenizers' ByteLevel
// pre-tokenizer + BPE model): split text with GPT-2's pattern
//   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
// map each piece's UTF-8 bytes to GPT-2's printable byte alphabet, then apply the merges in rank
// order. Immutable after Create; thread-safe.
class ByteLevelBpeTokenizer : public Tokenizer {
 public:
  // The pre-tokenizer's split pattern: GPT-2's (RoBERTa), or the Split regex Llama 3 and Qwen
  // put before a ByteLevel(use_regex=false) pre-tokenizer:
  //   (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|
  //   \s*[\r\n]+|\s+(?!\S)|\s+
  // (Qwen2/Qwen3: \p{N} one digit at a time instead of {1,3}).
  enum class Pattern { kGpt2, kLlama3, kQwen2 };
  struct Options {
    // false: sentencepiece-style BPE (Llama 2): no pre-tokenizer and no byte alphabet; the whole
    // normalised segment is one word of characters, merged by rank.
    bool byte_level = true;
    // Sentencepiece-style only: the normalizer Sequence[Prepend(prepend), Replace(" ", "▁")],
    // characters outside the vocabulary as their UTF-8 bytes "<0xXX>" (byte_fallback), else unk
    // (consecutive unks fused into one with fuse_unk).
    std::string prepend;
    bool replace_space = false;
    // Sentencepiece-style with a Metaspace pre-tokenizer (newer Llama 2 and Mistral files) instead
    // of that normalizer: spaces become "▁"; a "▁" is prepended, unless the text already starts
    // with one, to every stretch between added tokens (kAlways), only to the one that starts the
    // text (kFirst), or to none (kNever); with metaspace_split each "▁" starts a new word that
    // merges never cross (Hugging Face's MergedWithNext). kOff: no Metaspace.
    enum class Metaspace { kOff, kAlways, kFirst, kNever };
    Metaspace metaspace = Metaspace::kOff;
    bool metaspace_split = true;
    bool byte_fallback = false;
    bool fuse_unk = false;
    Pattern pattern = Pattern::kGpt2;
    bool ignore_merges = false;     // a piece that is itself a vocabulary token is not merged
    bool nfc = false;               // NFC-normalise text before splitting (Qwen's normalizer)
    bool add_prefix_space = false;  // prepend ' ' to text that does not start with one
    std::string unk_token;          // optional; "" = none (unknown symbols are dropped)
    std::string pad_token = "<pad>";
  };

  // `vocab`: token -> id; `merges`: pairs in rank order. INVALID_ARGUMENT when a merge names a
  // symbol not in the vocabulary, or pad_token is missing. `special`: the post-processor
  // template; `added`: tokens matched verbatim in raw text.
  static absl::StatusOr<std::unique_ptr<ByteLevelBpeTokenizer>> Create(
      const Options& options, const std::vector<std::pair<std::string, int64_t>>& vocab,
      const std::vector<std::pair<std::string, std::string>>& merges,
      const SpecialTokensTemplate& special, std::vector<AddedToken> added);

  const std::string& IdToToken(int64_t id) const override;
  int64_t vocab_size() const override { return static_cast<int64_t>(vocab_.size()); }
  int64_t TokenToId(absl::string_view token) const;  // -1 when absent

  // GPT-2's pre-tokenization of `text` (valid UTF-8) into pieces, before byte mapping.
  static std::vector<std::string> SplitGpt2(absl::string_view text);
  // Llama 3's (max_digits 3) or Qwen's (max_digits 1) pattern, as above.
  static std::vector<std::string> SplitLlama3(absl::string_view text, int max_digits);

 protected:
  void TokenizeSegment(absl::string_view text, bool at_start,
                       std::vector<int64_t>* ids) const override;

 private:
  explicit ByteLevelBpeTokenizer(const Options& options) : options_(options) {}
  void Bpe(const std::string& mapped, std::vector<int64_t>* ids) const;
  // Merges `symbols` by rank and appends their ids (unk, or nothing, for unknown symbols).
  void Merge(std::vector<std::string> symbols, std::vector<int64_t>* ids) const;
  void SentencePieceSegment(absl::string_view text, bool at_start, std::vector<int64_t>* ids) const;
  // One word of sentencepiece-style BPE: characters (or their "<0xXX>" bytes, or unk), merged.
  void SentencePieceWord(const std::string& input, std::vector<int64_t>* ids) const;

  Options options_;
  std::vector<std::string> vocab_;  // by id; "" for ids the vocabulary skips
  absl::flat_hash_map<std::string, int64_t> ids_;
  absl::flat_hash_map<std::string, int> ranks_;  // "left right" -> rank
  std::string byte_chars_[256];                  // UTF-8 of each byte's printable stand-in
  int64_t unk_id_ = -1;
};

}  // namespace loracle::text

#endif  // LORACLE_SERVER_TEXT_BPE_TOKENIZER_H_
