#include "server/util/log.h"

#include <sys/time.h>

#include <atomic>
#include <cstdio>
#include <ctime>
#include <string>

namespace loracle::util {
namespace {

std::atomic<int> min_level{static_cast<int>(LogSeverity::kInfo)};
std::atomic<int> verbosity{0};

char Letter(LogSeverity s) {
  switch (s) {
    case LogSeverity::kInfo:
      return 'I';
    case LogSeverity::kWarning:
      return 'W';
    case LogSeverity::kError:
      return 'E';
  }
  return '?';
}

}  // namespace

void SetMinLogLevel(LogSeverity severity) {
  min_level.store(static_cast<int>(severity), std::memory_order_relaxed);
}
void SetVerbosity(int v) { verbosity.store(v, std::memory_order_relaxed); }
bool LogEnabled(LogSeverity severity) {
  return static_cast<int>(severity) >= min_level.load(std::memory_order_relaxed);
}
int Verbosity() { return verbosity.load(std::memory_order_relaxed); }

void LogLine(LogSeverity severity, const char* file, int line, absl::string_view message) {
  timeval now;
  gettimeofday(&now, nullptr);
  std::tm tm;
  localtime_r(&now.tv_sec, &tm);
  absl::string_view base = file;
  if (const size_t slash = base.rfind('/'); slash != absl::string_view::npos) {
    base.remove_prefix(slash + 1);
  }
  if (!message.empty() && message.back() == '\n') message.remove_suffix(1);
  const std::string out = absl::StrFormat(
      "%c%02d%02d %02d:%02d:%02d.%06d %s:%d] %s\n", Letter(severity), tm.tm_mon + 1, tm.tm_mday,
      tm.tm_hour, tm.tm_min, tm.tm_sec, static_cast<int>(now.tv_usec), base, line, message);
  std::fwrite(out.data(), 1, out.size(), stderr);
}

}  // namespace loracle::util
