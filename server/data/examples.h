#ifndef LORACLE_SERVER_DATA_EXAMPLES_H_
#define LORACLE_SERVER_DATA_EXAMPLES_H_

// Labelled example files, the format shared by the fine-tune RPC's server-side data and the CLI
// (torch-free). Every error names where it is: the file and line.
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

namespace loracle::data {

struct Example {
  std::string text;
  std::string text_pair;  // empty = a single text
  std::string label;
};

// INVALID_ARGUMENT "<source>:<line>: ..." for malformed lines or missing fields.
absl::StatusOr<std::vector<Example>> ParseJsonl(absl::string_view contents,
                                                absl::string_view source);
absl::StatusOr<std::vector<Example>> ParseCsv(absl::string_view contents, absl::string_view source);

// Reads `path` as JSONL (.jsonl, .json) or CSV (.csv). INVALID_ARGUMENT for another extension or
// a file larger than `max_bytes` (checked before reading); the file's own errors as above;
// NOT_FOUND when missing.
absl::StatusOr<std::vector<Example>> ReadExamples(const std::string& path,
                                                  int64_t max_bytes = INT64_MAX);

}  // namespace loracle::data

#endif  // LORACLE_SERVER_DATA_EXAMPLES_H_
