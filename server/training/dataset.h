#ifndef LORACLE_SERVER_TRAINING_DATASET_H_
#define LORACLE_SERVER_TRAINING_DATASET_H_

// Fine-tune data policy (torch-free): the bounds on a job's data, server-side paths confined to a
// data directory, the label set, and a stratified train/validation split. The file format is
// server/data/examples.h.

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "server/data/examples.h"

namespace loracle::training {

using data::Example;
using data::ReadExamples;

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
