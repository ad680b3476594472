#ifndef LORACLE_SERVER_TEXT_TOKENIZER_FILES_H_
#define LORACLE_SERVER_TEXT_TOKENIZER_FILES_H_

// Reading a Hugging Face checkpoint's tokenizer files into a Tokenizer (tokenizer.h).

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "server/text/tokenizer.h"

namespace loracle::text {

// Loads the tokenizer of a Hugging Face checkpoint directory from its own files: tokenizer.json
// when present (WordPiece with BERT normalisation, or byte-level BPE), else vocab.txt (WordPiece)
// or vocab.json + merges.txt (byte-level BPE); tokenizer_config.json and
// special_tokens_map.json supply casing and special tokens; vocab.txt gets BERT's template and
// vocab.json + merges.txt RoBERTa's. NOT_FOUND when no tokenizer files exist; INVALID_ARGUMENT
// naming the file and field for anything malformed or unsupported.
absl::StatusOr<std::unique_ptr<Tokenizer>> LoadTokenizer(const std::string& dir,
                                                         int* model_max_length);

}  // namespace loracle::text

#endif  // LORACLE_SERVER_TEXT_TOKENIZER_FILES_H_
