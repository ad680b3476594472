#ifndef LORACLE_TESTS_SUPPORT_TEST_UTIL_H_
#define LORACLE_TESTS_SUPPORT_TEST_UTIL_H_

#include <cstdint>
#include <string>
#include <vector>

#include "server/adapters/adapter_files.h"
#include "server/model/default_model.h"
#include "server/model/model_config.h"
#include "tests/support/fixture_checkpoint.h"

namespace loracle::testing {

// A fresh directory, removed with everything in it at scope exit.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  const std::string& path() const { return path_; }
  std::string operator/(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

// A config of this shape, every other field at its default (vocab_size, positions and token
// types are set by WriteFixtureModel, or by the caller).
model::ModelConfig ConfigOfShape(const std::string& model_type, int64_t hidden, int64_t layers,
                                 int64_t heads, int64_t intermediate);

// A small WordPiece vocabulary: special tokens, some English words, '##' pieces, punctuation.
std::string TinyVocab();
// 2 layers, hidden 32, 2 heads, FFN 64, 64 positions, vocab = TinyVocab().
model::ModelConfig TinyConfig();
// Writes a random TinyConfig checkpoint (HF layout) into `dir`.
void WriteTinyModel(const std::string& dir, uint64_t seed = 3);

// A random adapter spec for TinyConfig: `labels`, `members`, rank 4 on query+value.
adapters::RandomAdapterSpec TinyAdapterSpec(std::vector<std::string> labels, int members,
                                            uint64_t seed);

// A random checkpoint of `config.model_type` in `dir` that uses fixture tokenizer
// tests/data/tokenizers/<tokenizer> (copied in): vocab_size and pad_token_id come from the
// tokenizer, max_position_embeddings is `positions` plus the architecture's offset, and
// type_vocab_size is 2 / 1 / 0 for BERT / RoBERTa / DistilBERT. The other fields of `config`
// (sizes, eps, activation, id2label) are used as given. Returns the config written.
model::ModelConfig WriteFixtureModel(const std::string& dir, model::ModelConfig config,
                                     const std::string& tokenizer, int64_t positions,
                                     const CheckpointLayout& layout, uint64_t seed);

// `n` labelled texts of a task the tiny vocabulary can express: label 1 ("spam") texts draw four
// money-words, label 0 ("ham") four office words; labels alternate, words seeded by `seed`.
std::vector<std::pair<std::string, int>> SpamHamTexts(int n, uint64_t seed);

std::string ReadFile(const std::string& path);

// GET `path` from 127.0.0.1:`port` over a real socket (HTTP/1.0); the raw response, or "" when
// the connection fails.
std::string HttpGet(int port, const std::string& path);

// A loopback TCP port that was free a moment ago.
int FreePort();
void WriteFile(const std::string& path, const std::string& contents);

}  // namespace loracle::testing

#endif  // LORACLE_TESTS_SUPPORT_TEST_UTIL_H_
