// A real Prometheus server (Debian's `prometheus`) scrapes a real loracle server; promtool checks
// the exposition format.

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <sstream>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "client/cli.h"
#include "loracle/v1/inference.grpc.pb.h"
#include "nlohmann/json.hpp"
#include "server/adapters/adapter_files.h"
#include "server/adapters/store.h"
#include "server/app/loracle_server.h"
#include "server/calibration/calibration.h"
#include "tests/support/test_server.h"
#include "tests/support/test_util.h"

namespace loracle {
namespace {

bool Installed(const char* tool) {
  return std::system(absl::StrCat("command -v ", tool, " >/dev/null 2>&1").c_str()) == 0;
}

// The value of the first sample in a Prometheus instant-query answer ("value":[time,"v"]).
double QueryValue(const std::string& answer) {
  const size_t body = answer.find("\r\n\r\n");
  const nlohmann::json j =
      nlohmann::json::parse(answer.substr(body == std::string::npos ? 0 : body + 4), nullptr,
                            /*allow_exceptions=*/false);
  if (!j.is_object() || j["data"]["result"].empty()) return std::nan("");
  return std::stod(j["data"]["result"][0]["value"][1].get<std::string>());
}

class PrometheusTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!Installed("prometheus") || !Installed("promtool")) {
      GTEST_SKIP()
          << "Debian's prometheus package is not installed (deploy/install-deps.sh installs it)";
    }
    test_server_ =
        testing::TestServer::Start({{"spam", testing::TinyAdapterSpec({"ham", "spam"}, 2, 1)}});
    ASSERT_NE(test_server_, nullptr);
    server_ = &test_server_->server();
    std::ostringstream out, err;
    ASSERT_EQ(client::RunCli({absl::StrCat("--server=127.0.0.1:", server_->grpc_port()), "predict",
                              "--adapter=spam", "free money", "see you at the meeting"},
                             out, err),
              0)
        << err.str();
    // Predictions with feedback, and the offline ECE of what the server returned.
    auto stub = loracle::v1::Inference::NewStub(test_server_->NewChannel());
    loracle::v1::PredictRequest req;
    req.set_adapter("spam");
    for (int i = 0; i < 24; ++i) req.add_inputs(absl::StrCat("message number ", i, " free money"));
    loracle::v1::PredictResponse resp;
    grpc::ClientContext ctx;
    ASSERT_TRUE(stub->Predict(&ctx, req, &resp).ok());
    loracle::v1::FeedbackRequest feedback;
    std::vector<std::vector<double>> probs;
    std::vector<int> labels;
    for (int i = 0; i < resp.predictions_size(); ++i) {
      probs.emplace_back(resp.predictions(i).probs().begin(), resp.predictions(i).probs().end());
      labels.push_back(i % 3 == 0 ? 0 : 1);
      auto* item = feedback.add_items();
      item->set_prediction_id(resp.predictions(i).prediction_id());
      item->set_true_label(resp.labels(labels.back()));
    }
    grpc::ClientContext fctx;
    loracle::v1::FeedbackResponse fresp;
    ASSERT_TRUE(stub->Feedback(&fctx, feedback, &fresp).ok());
    ASSERT_EQ(fresp.recorded(), 24u);
    offline_ = *calibration::Evaluate(probs, labels);
  }

  calibration::CalibrationReport offline_;
  testing::TempDir prom_dir_;
  std::unique_ptr<testing::TestServer> test_server_;
  app::LoracleServer* server_ = nullptr;
};

TEST_F(PrometheusTest, PromtoolAcceptsTheExposition) {
  const std::string body = testing::HttpGet(server_->metrics_port(), "/metrics");
  const size_t start = body.find("\r\n\r\n");
  ASSERT_NE(start, std::string::npos) << body;
  testing::WriteFile(prom_dir_ / "metrics.txt", body.substr(start + 4));
  const std::string cmd = absl::StrCat("promtool check metrics < ", prom_dir_ / "metrics.txt",
                                       " > ", prom_dir_ / "out.txt", " 2>&1");
  EXPECT_EQ(std::system(cmd.c_str()), 0) << testing::ReadFile(prom_dir_ / "out.txt");
}

TEST_F(PrometheusTest, ARealPrometheusServerScrapesIt) {
  const int prom_port = testing::FreePort();
  testing::WriteFile(prom_dir_ / "prometheus.yml",
                     absl::StrCat("global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
                                  "scrape_configs:\n  - job_name: loracle\n    static_configs:\n"
                                  "      - targets: ['127.0.0.1:",
                                  server_->metrics_port(), "']\n"));
  const pid_t pid = ::fork();
  if (pid == 0) {
    std::freopen((prom_dir_ / "prometheus.log").c_str(), "w", stderr);
    const std::string config = "--config.file=" + (prom_dir_ / "prometheus.yml");
    const std::string storage = "--storage.tsdb.path=" + (prom_dir_ / "data");
    const std::string listen = absl::StrCat("--web.listen-address=127.0.0.1:", prom_port);
    ::execlp("prometheus", "prometheus", config.c_str(), storage.c_str(), listen.c_str(),
             static_cast<char*>(nullptr));
    std::_Exit(127);
  }
  // Poll Prometheus' own query API until it has scraped loracle (bounded: 60 s).
  std::string up, ready, predictions, ece, accuracy, bins;
  const absl::Time end = absl::Now() + absl::Seconds(60);
  while (absl::Now() < end) {
    up = testing::HttpGet(prom_port, "/api/v1/query?query=up");
    ready = testing::HttpGet(prom_port, "/api/v1/query?query=loracle_model_ready");
    predictions = testing::HttpGet(prom_port, "/api/v1/query?query=loracle_predictions_total");
    ece = testing::HttpGet(prom_port,
                           "/api/v1/query?query=loracle_online_ece%7Bwindow%3D%22since_load%22%7D");
    accuracy = testing::HttpGet(
        prom_port, "/api/v1/query?query=loracle_online_accuracy%7Bwindow%3D%22since_load%22%7D");
    bins = testing::HttpGet(
        prom_port,
        "/api/v1/query?query=sum(loracle_online_bin_predictions%7Bwindow%3D%22since_load%22%7D)");
    if (ready.find("\"1\"]") != std::string::npos &&
        predictions.find("\"26\"]") != std::string::npos &&
        ece.find("\"adapter\":\"spam\"") != std::string::npos &&
        bins.find("\"24\"]") != std::string::npos)
      break;
    absl::SleepFor(absl::Milliseconds(250));
  }
  ::kill(pid, SIGTERM);
  ::waitpid(pid, nullptr, 0);
  EXPECT_NE(up.find("\"job\":\"loracle\""), std::string::npos)
      << up << testing::ReadFile(prom_dir_ / "prometheus.log");
  EXPECT_NE(up.find("\"1\"]"), std::string::npos) << "target is up: " << up;
  EXPECT_NE(ready.find("\"1\"]"), std::string::npos) << ready;
  EXPECT_NE(predictions.find("\"adapter\":\"spam\""), std::string::npos) << predictions;
  EXPECT_NE(predictions.find("\"26\"]"), std::string::npos)
      << "26 inputs classified: " << predictions;
  // The online metrics read back through Prometheus's query API equal the offline report of the
  // same probabilities and labels (to the exposition's precision).
  EXPECT_NEAR(QueryValue(ece), offline_.ece, 1e-6) << ece;
  EXPECT_NEAR(QueryValue(accuracy), offline_.accuracy, 1e-6) << accuracy;
  EXPECT_NE(bins.find("\"24\"]"), std::string::npos)
      << "the reliability bins hold all 24: " << bins;
}

}  // namespace
}  // namespace loracle
