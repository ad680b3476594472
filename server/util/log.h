#ifndef LORACLE_SERVER_UTIL_LOG_H_
#define LORACLE_SERVER_UTIL_LOG_H_

// Leveled logging to stderr, one line per message, torch-free:
//
//   I1207 08:40:18.123456 watcher.cc:58] store watcher: no inotify (...); polling ...
//
// LORACLE_LOG(INFO|WARNING|ERROR, format, args...) formats with absl::StrFormat and writes when
// the severity is at least the minimum (SetMinLogLevel; main.cc's --minloglevel); LORACLE_VLOG(n,
// ...) writes at INFO when the verbosity (SetVerbosity; --v) is at least n. Thread-safe: a line
// is written with one call, so lines of concurrent threads never interleave.

#include "absl/strings/str_format.h"
#include "absl/strings/string_view.h"

namespace loracle::util {

enum class LogSeverity { kInfo = 0, kWarning = 1, kError = 2 };

void SetMinLogLevel(LogSeverity severity);
void SetVerbosity(int verbosity);
bool LogEnabled(LogSeverity severity);
int Verbosity();

// Writes one line (the message's trailing newline, if any, is dropped). Use the macros.
void LogLine(LogSeverity severity, const char* file, int line, absl::string_view message);

}  // namespace loracle::util

#define LORACLE_LOG_SEVERITY_INFO ::loracle::util::LogSeverity::kInfo
#define LORACLE_LOG_SEVERITY_WARNING ::loracle::util::LogSeverity::kWarning
#define LORACLE_LOG_SEVERITY_ERROR ::loracle::util::LogSeverity::kError

#define LORACLE_LOG(severity, ...)                                                  \
  do {                                                                              \
    if (::loracle::util::LogEnabled(LORACLE_LOG_SEVERITY_##severity)) {             \
      ::loracle::util::LogLine(LORACLE_LOG_SEVERITY_##severity, __FILE__, __LINE__, \
                               ::absl::StrFormat(__VA_ARGS__));                     \
    }                                                                               \
  } while (false)

#define LORACLE_VLOG(level, ...)                                                        \
  do {                                                                                  \
    if (::loracle::util::Verbosity() >= (level)) {                                      \
      ::loracle::util::LogLine(::loracle::util::LogSeverity::kInfo, __FILE__, __LINE__, \
                               ::absl::StrFormat(__VA_ARGS__));                         \
    }                                                                                   \
  } while (false)

#endif  // LORACLE_SERVER_UTIL_LOG_H_
