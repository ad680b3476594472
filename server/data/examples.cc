#include "server/data/examples.h"

#include <sys/stat.h>

#include <algorithm>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "nlohmann/json.hpp"
#include "server/util/file_util.h"

namespace loracle::data {
namespace {

absl::Status LineError(absl::string_view source, int64_t line, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(source, ":", line, ": ", what));
}

// A JSON string field; empty when absent and !required.
absl::Status StringField(const nlohmann::json& j, const char* key, bool required,
                         absl::string_view source, int64_t line, std::string* out) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) {
    if (!required) return absl::OkStatus();
    return LineError(source, line, absl::StrCat("missing field \"", key, "\""));
  }
  if (!it->is_string()) {
    return LineError(source, line, absl::StrCat("field \"", key, "\" must be a string"));
  }
  *out = it->get<std::string>();
  return absl::OkStatus();
}

// One CSV record starting at `*pos`; advances past its line end. `*line` counts physical lines.
absl::StatusOr<std::vector<std::string>> CsvRecord(absl::string_view s, size_t* pos, int64_t* line,
                                                   absl::string_view source) {
  std::vector<std::string> fields(1);
  const int64_t start_line = *line;
  bool quoted = false, was_quoted = false;
  size_t i = *pos;
  for (; i < s.size(); ++i) {
    const char c = s[i];
    if (quoted) {
      if (c == '"') {
        if (i + 1 < s.size() && s[i + 1] == '"') {
          fields.back().push_back('"');
          ++i;
        } else {
          quoted = false;
        }
      } else {
        if (c == '\n') ++*line;
        fields.back().push_back(c);
      }
      continue;
    }
    if (c == '"') {
      if (!fields.back().empty() || was_quoted) {
        return LineError(source, *line, "a quote inside an unquoted field (quote the field)");
      }
      quoted = was_quoted = true;
    } else if (c == ',') {
      fields.emplace_back();
      was_quoted = false;
    } else if (c == '\n' || c == '\r') {
      if (c == '\r' && i + 1 < s.size() && s[i + 1] == '\n') ++i;
      ++i;
      break;
    } else {
      if (was_quoted) return LineError(source, *line, "text after a closing quote");
      fields.back().push_back(c);
    }
  }
  if (quoted) return LineError(source, start_line, "unterminated quoted field");
  ++*line;
  *pos = i;
  return fields;
}

}  // namespace

absl::StatusOr<std::vector<Example>> ParseJsonl(absl::string_view contents,
                                                absl::string_view source) {
  std::vector<Example> out;
  int64_t line = 0;
  size_t pos = 0;
  while (pos < contents.size()) {
    size_t end = contents.find('\n', pos);
    if (end == absl::string_view::npos) end = contents.size();
    absl::string_view text = contents.substr(pos, end - pos);
    pos = end + 1;
    ++line;
    if (!text.empty() && text.back() == '\r') text.remove_suffix(1);
    if (text.find_first_not_of(" \t") == absl::string_view::npos) continue;
    nlohmann::json j =
        nlohmann::json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded()) return LineError(source, line, "not valid JSON");
    if (!j.is_object()) return LineError(source, line, "expected a JSON object");
    Example e;
    if (absl::Status s = StringField(j, "text", true, source, line, &e.text); !s.ok()) return s;
    if (absl::Status s = StringField(j, "text_pair", false, source, line, &e.text_pair); !s.ok()) {
      return s;
    }
    if (absl::Status s = StringField(j, "label", true, source, line, &e.label); !s.ok()) return s;
    out.push_back(std::move(e));
  }
  return out;
}

absl::StatusOr<std::vector<Example>> ParseCsv(absl::string_view contents,
                                              absl::string_view source) {
  if (absl::StartsWith(contents, "\xEF\xBB\xBF")) contents.remove_prefix(3);  // UTF-8 BOM
  size_t pos = 0;
  int64_t line = 1;
  absl::StatusOr<std::vector<std::string>> header = CsvRecord(contents, &pos, &line, source);
  if (!header.ok()) return header.status();
  int text = -1, pair = -1, label = -1;
  for (size_t k = 0; k < header->size(); ++k) {
    const std::string& name = (*header)[k];
    if (name == "text") text = static_cast<int>(k);
    if (name == "text_pair") pair = static_cast<int>(k);
    if (name == "label") label = static_cast<int>(k);
  }
  if (text < 0 || label < 0) {
    return LineError(source, 1,
                     absl::StrCat("the header must name columns \"text\" and \"label\" (and "
                                  "optionally \"text_pair\"); got: ",
                                  absl::StrJoin(*header, ",")));
  }
  std::vector<Example> out;
  while (pos < contents.size()) {
    const int64_t record_line = line;
    absl::StatusOr<std::vector<std::string>> fields = CsvRecord(contents, &pos, &line, source);
    if (!fields.ok()) return fields.status();
    if (fields->size() == 1 && (*fields)[0].empty()) continue;  // a blank line
    if (fields->size() != header->size()) {
      return LineError(
          source, record_line,
          absl::StrCat("has ", fields->size(), " fields; the header has ", header->size()));
    }
    Example e;
    e.text = (*fields)[static_cast<size_t>(text)];
    e.label = (*fields)[static_cast<size_t>(label)];
    if (pair >= 0) e.text_pair = (*fields)[static_cast<size_t>(pair)];
    out.push_back(std::move(e));
  }
  return out;
}

absl::StatusOr<std::vector<Example>> ReadExamples(const std::string& path, int64_t max_bytes) {
  const bool jsonl = absl::EndsWith(path, ".jsonl") || absl::EndsWith(path, ".json");
  const bool csv = absl::EndsWith(path, ".csv");
  if (!jsonl && !csv) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": unknown data format (expected a .jsonl or .csv file)"));
  }
  struct stat st;
  if (::stat(path.c_str(), &st) == 0 && st.st_size > max_bytes) {
    return absl::InvalidArgumentError(absl::StrCat(path, " is ", st.st_size,
                                                   " bytes; the limit is ", max_bytes,
                                                   " per dataset (--max_dataset_bytes)"));
  }
  absl::StatusOr<std::string> contents = util::ReadFileToString(path);
  if (!contents.ok()) return contents.status();
  return jsonl ? ParseJsonl(*contents, path) : ParseCsv(*contents, path);
}

}  // namespace loracle::data
