#include "server/util/log.h"

#include <gtest/gtest.h>

#include <regex>
#include <string>

namespace loracle::util {
namespace {

class LogTest : public ::testing::Test {
 protected:
  void TearDown() override {
    SetMinLogLevel(LogSeverity::kInfo);
    SetVerbosity(0);
  }
};

TEST_F(LogTest, WritesOneLeveledLinePerMessageAtOrAboveTheMinimum) {
  ::testing::internal::CaptureStderr();
  LORACLE_LOG(INFO, "loaded %d adapters", 3);
  LORACLE_LOG(WARNING, "store watcher: no inotify (%s)\n", "ENOSYS");
  SetMinLogLevel(LogSeverity::kWarning);
  LORACLE_LOG(INFO, "not written");
  LORACLE_LOG(ERROR, "adapter %s failed to load", "spam");
  const std::string out = ::testing::internal::GetCapturedStderr();
  const std::regex line(
      R"(I\d{4} \d\d:\d\d:\d\d\.\d{6} log_test\.cc:\d+\] loaded 3 adapters
W\d{4} \d\d:\d\d:\d\d\.\d{6} log_test\.cc:\d+\] store watcher: no inotify \(ENOSYS\)
E\d{4} \d\d:\d\d:\d\d\.\d{6} log_test\.cc:\d+\] adapter spam failed to load
)");
  EXPECT_TRUE(std::regex_match(out, line)) << out;
}

TEST_F(LogTest, VerboseLinesNeedTheirLevel) {
  ::testing::internal::CaptureStderr();
  LORACLE_VLOG(1, "hidden");
  SetVerbosity(2);
  LORACLE_VLOG(2, "shown %s", "at 2");
  LORACLE_VLOG(3, "hidden");
  const std::string out = ::testing::internal::GetCapturedStderr();
  EXPECT_EQ(out.find("hidden"), std::string::npos) << out;
  EXPECT_NE(out.find("] shown at 2\n"), std::string::npos) << out;
}

}  // namespace
}  // namespace loracle::util
