#include "server/training/dataset.h"

#include <limits.h>
#include <stdlib.h>
#include <sys/stat.h>

#include <algorithm>
#include <map>
#include <random>
#include <set>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "nlohmann/json.hpp"
#include "server/util/file_util.h"

namespace loracle::training {

absl::Status CheckDataLimits(const std::vector<Example>& examples,
                             const std::vector<std::string>& requested, const DataLimits& limits) {
  if (static_cast<int64_t>(examples.size()) > limits.max_examples) {
    return absl::InvalidArgumentError(absl::StrCat(examples.size(), " examples; the limit is ",
                                                   limits.max_examples,
                                                   " per job (--max_examples_per_job)"));
  }
  int64_t bytes = 0;
  for (const Example& e : examples) bytes += e.text.size() + e.text_pair.size() + e.label.size();
  if (bytes > limits.max_bytes) {
    return absl::InvalidArgumentError(absl::StrCat("the examples hold ", bytes,
                                                   " bytes of text and labels; the limit is ",
                                                   limits.max_bytes, " (--max_dataset_bytes)"));
  }
  auto label_error = [&](absl::string_view label) -> absl::Status {
    if (static_cast<int64_t>(label.size()) <= limits.max_label_bytes) return absl::OkStatus();
    return absl::InvalidArgumentError(absl::StrCat("label \"", label.substr(0, 32), "...\" is ",
                                                   label.size(), " bytes; the limit is ",
                                                   limits.max_label_bytes, " (--max_label_bytes)"));
  };
  auto count_error = [&](absl::string_view what) {
    return absl::InvalidArgumentError(absl::StrCat("more than ", limits.max_labels, " ", what,
                                                   "; the limit is ", limits.max_labels,
                                                   " classes (--max_labels)"));
  };
  if (!requested.empty()) {
    if (static_cast<int64_t>(requested.size()) > limits.max_labels) return count_error("labels");
    for (const std::string& l : requested) {
      if (absl::Status s = label_error(l); !s.ok()) return s;
    }
    return absl::OkStatus();
  }
  std::set<absl::string_view> distinct;
  for (const Example& e : examples) {
    if (absl::Status s = label_error(e.label); !s.ok()) return s;
    distinct.insert(e.label);
    if (static_cast<int64_t>(distinct.size()) > limits.max_labels) {
      return count_error("distinct labels in the examples");
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> ResolveDataPath(const std::string& data_dir, const std::string& path,
                                            absl::string_view flag) {
  if (data_dir.empty()) {
    return absl::PermissionDeniedError(
        absl::StrCat("server-side data files are disabled; start the server with ", flag,
                     " to allow files under that directory, or send the examples inline"));
  }
  for (absl::string_view part : absl::StrSplit(path, '/')) {
    if (part == "..") {
      return absl::PermissionDeniedError(
          absl::StrCat("data path \"", path, "\" contains \"..\"; paths must stay inside ", flag));
    }
  }
  char root[PATH_MAX];
  if (realpath(data_dir.c_str(), root) == nullptr) {
    return absl::FailedPreconditionError(
        absl::StrCat(flag, "=", data_dir, " does not exist or cannot be read"));
  }
  const std::string joined = !path.empty() && path[0] == '/' ? path : data_dir + "/" + path;
  char resolved[PATH_MAX];
  if (realpath(joined.c_str(), resolved) == nullptr) {
    return absl::NotFoundError(absl::StrCat("data file \"", path, "\" not found under ", flag));
  }
  const std::string r = resolved, base = root;
  if (r != base && !absl::StartsWith(r, base == "/" ? base : base + "/")) {
    return absl::PermissionDeniedError(absl::StrCat("data path \"", path, "\" resolves outside ",
                                                    flag, "=", data_dir, " (to ", r, ")"));
  }
  return r;
}

absl::StatusOr<std::vector<std::string>> ResolveLabels(const std::vector<Example>& examples,
                                                       const std::vector<std::string>& requested) {
  if (examples.empty()) return absl::InvalidArgumentError("no training examples");
  std::vector<std::string> labels = requested;
  if (labels.empty()) {
    std::set<std::string> distinct;
    for (const Example& e : examples) distinct.insert(e.label);
    labels.assign(distinct.begin(), distinct.end());
  }
  std::map<std::string, int64_t> counts;
  for (const std::string& l : labels) {
    if (l.empty()) return absl::InvalidArgumentError("a label is empty");
    if (!counts.emplace(l, 0).second) {
      return absl::InvalidArgumentError(absl::StrCat("label \"", l, "\" is listed twice"));
    }
  }
  if (labels.size() < 2) {
    return absl::InvalidArgumentError(absl::StrCat("a classifier needs at least two classes; got ",
                                                   labels.size(), ": ",
                                                   absl::StrJoin(labels, ", ")));
  }
  for (size_t i = 0; i < examples.size(); ++i) {
    auto it = counts.find(examples[i].label);
    if (it == counts.end()) {
      return absl::InvalidArgumentError(
          absl::StrCat("example ", i, " has label \"", examples[i].label,
                       "\", which is not one of the labels: ", absl::StrJoin(labels, ", ")));
    }
    ++it->second;
  }
  for (const auto& [label, n] : counts) {
    if (n == 0) {
      return absl::InvalidArgumentError(absl::StrCat("class \"", label, "\" has no examples"));
    }
  }
  return labels;
}

Split StratifiedSplit(const std::vector<int>& label_ids, double fraction, uint64_t seed) {
  std::map<int, std::vector<size_t>> by_class;
  for (size_t i = 0; i < label_ids.size(); ++i) by_class[label_ids[i]].push_back(i);
  std::mt19937_64 rng(seed);
  Split split;
  for (auto& [label, idx] : by_class) {
    std::shuffle(idx.begin(), idx.end(), rng);
    size_t n_val = static_cast<size_t>(fraction * static_cast<double>(idx.size()) + 0.5);
    if (fraction > 0 && idx.size() >= 2) n_val = std::max<size_t>(n_val, 1);
    n_val = std::min(n_val, idx.size() - 1);  // every class keeps a training example
    split.validation.insert(split.validation.end(), idx.begin(), idx.begin() + n_val);
    split.train.insert(split.train.end(), idx.begin() + n_val, idx.end());
  }
  std::sort(split.train.begin(), split.train.end());
  std::sort(split.validation.begin(), split.validation.end());
  return split;
}

}  // namespace loracle::training
