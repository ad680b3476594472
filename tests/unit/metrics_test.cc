#include "server/metrics/metrics.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <string>

#include "tests/support/test_util.h"

namespace loracle::metrics {
namespace {

TEST(MetricsTest, ServesRecordedSeriesOverHttp) {
  auto m = Metrics::Create({"127.0.0.1:0"});
  ASSERT_TRUE(m.ok()) << m.status();
  ASSERT_GT((*m)->port(), 0);
  (*m)->RecordRpc("Predict", "OK", 0.003);
  (*m)->RecordRpc("Predict", "OK", 0.004);
  (*m)->RecordRpc("Predict", "NOT_FOUND", 0.001);
  (*m)->RecordBatch(12, 3, 0.01);
  (*m)->RecordPrediction("spam", true, 0.55, 0.2);
  (*m)->SetModelReady(true);
  const std::string body = testing::HttpGet((*m)->port(), "/metrics");
  EXPECT_NE(body.find("200 OK"), std::string::npos) << body.substr(0, 200);
  EXPECT_NE(body.find("loracle_requests_total{code=\"OK\",method=\"Predict\"} 2"),
            std::string::npos)
      << body;
  EXPECT_NE(body.find("loracle_requests_total{code=\"NOT_FOUND\",method=\"Predict\"} 1"),
            std::string::npos);
  EXPECT_NE(body.find("loracle_abstained_total{adapter=\"spam\"} 1"), std::string::npos);
  EXPECT_NE(body.find("loracle_batch_rows_sum 12"), std::string::npos);
  EXPECT_NE(body.find("loracle_model_ready 1"), std::string::npos);
  EXPECT_EQ(body.substr(body.find("\r\n\r\n") + 4), (*m)->Scrape());
}

TEST(MetricsTest, BusyPortIsUnavailable) {
  auto first = Metrics::Create({"127.0.0.1:0"});
  ASSERT_TRUE(first.ok());
  auto second = Metrics::Create({"127.0.0.1:" + std::to_string((*first)->port())});
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), absl::StatusCode::kUnavailable);
}

}  // namespace
}  // namespace loracle::metrics
