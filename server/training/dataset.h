#ifndef LORACLE_SERVER_TRAINING_DATASET_H_
#define LORACLE_SERVER_TRAINING_DATASET_H_

// Labelled training data (torch-free): inline examples, JSONL or CSV files confined to a data
// directory, the label set, and a stratified train/validation split. Every error names where it
// is: the file and line, or the example index.
//
//   JSONL  one object per line: {"text": "...", "text_pair": "..." (optional), "label": "..."};
//          blank lines are skipped.
//   CSV    RFC 4180 (quoted fields may hold commas, quotes as "" and newlines); a header row
//          naming the columns "text", "label" and optionally "text_pair", in any order; other
//          columns are ignored.

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace loracle::training {

struct Example {
  std::string text;
  std::string text_pair;  // empty = a single text
  std::string label;
};

// INVALID_ARGUMENT "<source>:<line>: ..." for malformed lines or missing fields.
absl::StatusOr<std::vector<Example>> ParseJsonl(absl::string_view contents,
                                                absl::string_view source);
absl::StatusOr<std::vector<Example>> ParseCsv(absl::string_view contents, absl::string_view source);

// Bounds on one fine-tune job's data (the server's --max_examples_per_job, --max_dataset_bytes,
// --max_labels and --max_label_bytes).
struct DataLimits {
  int64_t max_examples = 1000000;  // training + validation examples
  int64_t max_bytes = 256 << 20;   // a data file's size; inline: the bytes of texts and labels
  int max_labels = 1000;           // classes
  int max_label_bytes = 128;       // per class name
};

// INVALID_ARGUMENT, naming the bound and its flag, when `examples` (training and validation
// together) or the `requested` labels (or, when none are requested, the examples' distinct
// labels) exceed `limits`. Reads every example once; stops counting labels past the bound.
absl::Status CheckDataLimits(const std::vector<Example>& examples,
                             const std::vector<std::string>& requested, const DataLimits& limits);

// Reads `path` as JSONL (.jsonl, .json) or CSV (.csv). INVALID_ARGUMENT for another extension or
// a file larger than `max_bytes` (checked before reading); the file's own errors as above;
// NOT_FOUND when missing.
absl::StatusOr<std::vector<Example>> ReadExamples(const std::string& path,
                                                  int64_t max_bytes = INT64_MAX);

// `path` resolved inside `data_dir` (relative paths are relative to it), with every symlink
// followed. PERMISSION_DENIED, naming `flag`, when `data_dir` is empty (server-side files are
// off), when `path` contains "..", or when it resolves outside `data_dir`. NOT_FOUND when it
// does not exist.
absl::StatusOr<std::string> ResolveDataPath(const std::string& data_dir, const std::string& path,
                                            absl::string_view flag = "--data_dir");

// The class names: `requested` when given (every example's label must be one of them), else the
// sorted distinct labels of `examples`. INVALID_ARGUMENT for no examples, fewer than two classes,
// a label not in `requested` (naming the example), duplicate or empty class names, or a class with
// no examples.
absl::StatusOr<std::vector<std::string>> ResolveLabels(const std::vector<Example>& examples,
                                                       const std::vector<std::string>& requested);

// Indices of a stratified split: about `fraction` of each class (at least one example of every
// class with two or more) goes to validation, chosen by `seed`; the rest trains. `label_ids`:
// the class of each example.
struct Split {
  std::vector<size_t> train, validation;
};
Split StratifiedSplit(const std::vector<int>& label_ids, double fraction, uint64_t seed);

}  // namespace loracle::training

#endif  // LORACLE_SERVER_TRAINING_DATASET_H_
