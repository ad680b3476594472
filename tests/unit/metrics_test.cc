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
  MethodSeries* predict = (*m)->Method("Predict");
  EXPECT_EQ((*m)->Method("Predict"), predict);
  predict->Record(0, "OK", 0.003);
  predict->Record(0, "OK", 0.004);
  predict->Record(5, "NOT_FOUND", 0.001);
  (*m)->RecordBatch(12, 3, 0.01);
  std::shared_ptr<AdapterSeries> spam = (*m)->NewAdapterSeries("spam", 3, 1.5, nullptr);
  spam->RecordPrediction(true, 0.55, 0.2, 0.6);
  (*m)->SetModelReady(true);
  const std::string body = testing::HttpGet((*m)->port(), "/metrics");
  EXPECT_NE(body.find("200 OK"), std::string::npos) << body.substr(0, 200);
  EXPECT_NE(body.find("loracle_requests_total{code=\"OK\",method=\"Predict\"} 2"),
            std::string::npos)
      << body;
  EXPECT_NE(body.find("loracle_requests_total{code=\"NOT_FOUND\",method=\"Predict\"} 1"),
            std::string::npos);
  EXPECT_NE(body.find("loracle_abstained_total{adapter=\"spam\",version=\"3\"} 1"),
            std::string::npos)
      << body;
  EXPECT_NE(body.find("loracle_adapter_temperature{adapter=\"spam\",version=\"3\"} 1.5"),
            std::string::npos);
  EXPECT_NE(body.find("loracle_prediction_entropy_sum{adapter=\"spam\",version=\"3\"} 0.6"),
            std::string::npos);
  EXPECT_NE(body.find("process_resident_memory_bytes "), std::string::npos);
  EXPECT_NE(body.find("loracle_build_info{version=\"unknown\"} 1"), std::string::npos);
  EXPECT_NE(body.find("loracle_batch_rows_sum 12"), std::string::npos);
  EXPECT_NE(body.find("loracle_model_ready 1"), std::string::npos);
  // The same exposition as Scrape() (up to the process series, read afresh each time).
  auto registry_part = [](const std::string& text) {
    return text.substr(0, text.find("# HELP process_"));
  };
  EXPECT_EQ(registry_part(body.substr(body.find("\r\n\r\n") + 4)), registry_part((*m)->Scrape()));
}

int CountLines(const std::string& text, const std::string& needle) {
  int n = 0;
  for (size_t at = text.find(needle); at != std::string::npos; at = text.find(needle, at + 1)) ++n;
  return n;
}

TEST(MetricsTest, AdapterSeriesLiveExactlyAsLongAsTheirVersion) {
  auto m = Metrics::Create({});
  ASSERT_TRUE(m.ok());
  const ValidationGauges validation{200, 0.9, 0.03, 0.2, 0.3, 0.08};
  std::shared_ptr<AdapterSeries> v1 = (*m)->NewAdapterSeries("spam", 1, 1.2, &validation);
  // A second handle on the same version (a pinned reload) shares the series...
  std::shared_ptr<AdapterSeries> v1_again = (*m)->NewAdapterSeries("spam", 1, 1.2, &validation);
  v1->RecordPrediction(false, 0.9, 0.01, 0.3);
  v1_again->RecordPrediction(false, 0.8, 0.02, 0.4);
  std::string body = (*m)->Scrape();
  EXPECT_NE(body.find("loracle_predictions_total{adapter=\"spam\",version=\"1\"} 2"),
            std::string::npos)
      << body;
  EXPECT_NE(body.find("loracle_adapter_validation_ece{adapter=\"spam\",version=\"1\"} 0.03"),
            std::string::npos);
  // ...and they stay until the last handle goes.
  v1.reset();
  v1_again->RecordPrediction(true, 0.5, 0.3, 0.69);
  body = (*m)->Scrape();
  EXPECT_NE(body.find("loracle_predictions_total{adapter=\"spam\",version=\"1\"} 3"),
            std::string::npos)
      << body;
  v1_again.reset();
  body = (*m)->Scrape();
  EXPECT_EQ(body.find("adapter=\"spam\""), std::string::npos) << body;
  // Many versions come and go: the exposition ends as it began.
  const std::string before = (*m)->Scrape();
  for (int v = 2; v < 1002; ++v) {
    auto s = (*m)->NewAdapterSeries("churn", v, 1.0, nullptr);
    s->RecordPrediction(false, 0.7, 0.1, 0.5);
  }
  const std::string after = (*m)->Scrape();
  EXPECT_EQ(CountLines(after, "\n"), CountLines(before, "\n"));
  EXPECT_EQ(after.find("churn"), std::string::npos);
}

TEST(MetricsTest, LoadsSwapsUnloadsQueueAndJobs) {
  auto m = Metrics::Create({});
  ASSERT_TRUE(m.ok());
  (*m)->RecordAdapterLoad(true, false, 0.02);
  (*m)->RecordAdapterLoad(true, true, 0.03);
  (*m)->RecordAdapterLoad(false, false, 0.001);
  (*m)->RecordAdapterUnload();
  (*m)->RecordAdapterEvictions(3);
  (*m)->RecordAdapterEvictions(0);
  (*m)->RecordAdapterReload(true, 0.002);
  (*m)->RecordAdapterReload(false, 0.001);
  (*m)->SetAdapterResidentBytes(123456);
  (*m)->RecordDequeued(0.004, 8);
  (*m)->SetQueued(3, 40);
  (*m)->RecordJobEnded("FAILED", 12);
  const std::string body = (*m)->Scrape();
  for (const char* line :
       {"loracle_adapter_loads_total{result=\"ok\"} 2",
        "loracle_adapter_loads_total{result=\"error\"} 1", "loracle_adapter_swaps_total 1",
        "loracle_adapter_unloads_total 1", "loracle_adapter_load_seconds_count 3",
        "loracle_adapter_evictions_total 3", "loracle_adapter_reloads_total{result=\"ok\"} 1",
        "loracle_adapter_reloads_total{result=\"error\"} 1",
        "loracle_adapter_reload_seconds_count 2", "loracle_adapter_resident_bytes 123456",
        "loracle_queue_wait_seconds_count 1", "loracle_request_passes_sum 8",
        "loracle_queued_requests 3", "loracle_queued_rows 40",
        "loracle_training_job_duration_seconds_count{state=\"FAILED\"} 1"}) {
    EXPECT_NE(body.find(line), std::string::npos) << line << "\n" << body;
  }
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
