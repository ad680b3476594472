// A real Prometheus server (Debian's `prometheus`) scrapes a real loracle server; promtool checks
// the exposition format.

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <map>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "client/cli.h"
#include "loracle/v1/adapters.grpc.pb.h"
#include "loracle/v1/inference.grpc.pb.h"
#include "loracle/v1/training.grpc.pb.h"
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

nlohmann::json ApiBody(const std::string& answer);

// The value of the first sample in a Prometheus instant-query answer ("value":[time,"v"]).
double QueryValue(const std::string& answer) {
  const nlohmann::json j = ApiBody(answer);
  if (!j.is_object() || j["data"]["result"].empty()) return std::nan("");
  return std::stod(j["data"]["result"][0]["value"][1].get<std::string>());
}

// `text` for a URL's query string.
std::string UrlEncode(const std::string& text) {
  std::string out;
  for (unsigned char c : text) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      out += static_cast<char>(c);
    } else {
      out += absl::StrFormat("%%%02X", c);
    }
  }
  return out;
}

// The JSON body of a Prometheus API answer (null when it is not JSON).
nlohmann::json ApiBody(const std::string& answer) {
  const size_t body = answer.find("\r\n\r\n");
  return nlohmann::json::parse(answer.substr(body == std::string::npos ? 0 : body + 4), nullptr,
                               /*allow_exceptions=*/false);
}

// Debian's prometheus, scraping `target_port` every second, on a free loopback port; stopped by
// the destructor.
class PrometheusProcess {
 public:
  PrometheusProcess(const testing::TempDir& dir, int target_port)
      : dir_(dir), port_(testing::FreePort()) {
    testing::WriteFile(dir_ / "prometheus.yml",
                       absl::StrCat("global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
                                    "scrape_configs:\n  - job_name: loracle\n    static_configs:\n"
                                    "      - targets: ['127.0.0.1:",
                                    target_port, "']\n"));
    pid_ = ::fork();
    if (pid_ == 0) {
      std::freopen((dir_ / "prometheus.log").c_str(), "w", stderr);
      const std::string config = "--config.file=" + (dir_ / "prometheus.yml");
      const std::string storage = "--storage.tsdb.path=" + (dir_ / "data");
      const std::string listen = absl::StrCat("--web.listen-address=127.0.0.1:", port_);
      ::execlp("prometheus", "prometheus", config.c_str(), storage.c_str(), listen.c_str(),
               static_cast<char*>(nullptr));
      std::_Exit(127);
    }
  }
  ~PrometheusProcess() {
    ::kill(pid_, SIGTERM);
    ::waitpid(pid_, nullptr, 0);
  }
  int port() const { return port_; }
  std::string log() const { return testing::ReadFile(dir_ / "prometheus.log"); }
  // An instant query's raw HTTP answer.
  std::string Query(const std::string& expr) const {
    return testing::HttpGet(port_, "/api/v1/query?query=" + UrlEncode(expr));
  }

 private:
  const testing::TempDir& dir_;
  const int port_;
  pid_t pid_;
};

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
  PrometheusProcess prometheus(prom_dir_, server_->metrics_port());
  const int prom_port = prometheus.port();
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
    // `up` was read before the others: a scrape landing in between leaves it empty this round.
    if (up.find("\"1\"]") != std::string::npos && ready.find("\"1\"]") != std::string::npos &&
        predictions.find("\"26\"]") != std::string::npos &&
        ece.find("\"adapter\":\"spam\"") != std::string::npos &&
        bins.find("\"24\"]") != std::string::npos)
      break;
    absl::SleepFor(absl::Milliseconds(250));
  }
  EXPECT_NE(up.find("\"job\":\"loracle\""), std::string::npos) << up << prometheus.log();
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

namespace loracle {
namespace {

// Every query of deploy/grafana/dashboards/loracle.json, with Grafana's variables filled in as
// Grafana would ($adapter = All).
std::vector<std::string> DashboardQueries(const nlohmann::json& dashboard) {
  std::vector<std::string> out;
  std::function<void(const nlohmann::json&)> walk = [&](const nlohmann::json& panels) {
    for (const nlohmann::json& p : panels) {
      if (p.contains("panels")) walk(p["panels"]);
      for (const nlohmann::json& t : p.value("targets", nlohmann::json::array())) {
        std::string expr = t.value("expr", "");
        for (auto [from, to] :
             {std::pair<std::string, std::string>{"$__rate_interval", "5s"}, {"$adapter", ".*"}}) {
          for (size_t at = expr.find(from); at != std::string::npos; at = expr.find(from, at)) {
            expr.replace(at, from.size(), to);
          }
        }
        out.push_back(expr);
      }
    }
  };
  walk(dashboard["panels"]);
  // The $adapter variable: label_values(METRIC, LABEL) reads METRIC's series.
  for (const nlohmann::json& v : dashboard["templating"]["list"]) {
    const std::string def = v.value("definition", "");
    const size_t open = def.find('('), comma = def.find(',');
    if (open != std::string::npos && comma != std::string::npos) {
      out.push_back(def.substr(open + 1, comma - open - 1));
    }
  }
  return out;
}

// A query "returns data" when it succeeds with at least one sample that is a number.
bool HasData(const std::string& answer, std::string* why) {
  const nlohmann::json j = ApiBody(answer);
  if (!j.is_object() || j.value("status", "") != "success") {
    *why = answer.substr(0, 400);
    return false;
  }
  for (const nlohmann::json& r : j["data"]["result"]) {
    const std::string v = r["value"][1].get<std::string>();
    if (v != "NaN") return true;
  }
  *why = "no sample (or only NaN)";
  return false;
}

// The provisioned Grafana dashboard cannot be rendered here (no Grafana); instead every panel's
// query runs against a real Prometheus scraping a real server that predicts, takes feedback,
// swaps an adapter and has run a fine-tune job, and must return data.
TEST_F(PrometheusTest, EveryGrafanaPanelQueryReturnsData) {
  const nlohmann::json dashboard = nlohmann::json::parse(testing::ReadFile(
      std::string(LORACLE_SOURCE_DIR) + "/deploy/grafana/dashboards/loracle.json"));
  const std::vector<std::string> queries = DashboardQueries(dashboard);
  ASSERT_GE(queries.size(), 30u);

  // A fine-tune job: its duration, the published version's validation gauges, its drift
  // reference.
  auto channel = test_server_->NewChannel();
  auto training = loracle::v1::Training::NewStub(channel);
  loracle::v1::SubmitRequest submit;
  submit.set_adapter("trained");
  for (int i = 0; i < 24; ++i) {
    auto* e = submit.add_examples();
    e->set_text(i % 2 == 0 ? absl::StrCat("win free money now ", i)
                           : absl::StrCat("see you at the meeting ", i));
    e->set_label(i % 2 == 0 ? "spam" : "ham");
  }
  submit.set_epochs(1);
  submit.set_batch_size(8);
  submit.mutable_lora()->set_rank(2);
  submit.set_seed(3);
  loracle::v1::Job job;
  {
    grpc::ClientContext ctx;
    ASSERT_TRUE(training->Submit(&ctx, submit, &job).ok());
  }
  const absl::Time job_deadline = absl::Now() + absl::Seconds(120);
  while (job.state() != loracle::v1::JOB_STATE_SUCCEEDED && absl::Now() < job_deadline) {
    ASSERT_NE(job.state(), loracle::v1::JOB_STATE_FAILED) << job.error();
    absl::SleepFor(absl::Milliseconds(100));
    grpc::ClientContext ctx;
    loracle::v1::GetJobRequest get;
    get.set_id(job.id());
    ASSERT_TRUE(training->Get(&ctx, get, &job).ok());
  }
  ASSERT_EQ(job.state(), loracle::v1::JOB_STATE_SUCCEEDED);

  auto inference = loracle::v1::Inference::NewStub(channel);
  auto adapters_stub = loracle::v1::Adapters::NewStub(channel);
  {
    loracle::v1::PredictRequest req;
    req.set_adapter("no-such-adapter");
    req.add_inputs("x");
    loracle::v1::PredictResponse resp;
    grpc::ClientContext ctx;
    ASSERT_EQ(inference->Predict(&ctx, req, &resp).error_code(), grpc::StatusCode::NOT_FOUND);
  }
  // Traffic while Prometheus scrapes: predictions on both adapters, labelled feedback on the
  // trained one, and a hot swap (a pinned reload of spam v1) every second.
  std::atomic<bool> stop{false};
  std::thread traffic([&] {
    for (int i = 0; !stop.load(); ++i) {
      for (const char* adapter : {"spam", "trained"}) {
        loracle::v1::PredictRequest req;
        req.set_adapter(adapter);
        req.add_inputs(absl::StrCat("message ", i, " free money"));
        req.add_inputs(absl::StrCat("message ", i, " the meeting"));
        loracle::v1::PredictResponse resp;
        grpc::ClientContext ctx;
        if (!inference->Predict(&ctx, req, &resp).ok() || adapter[0] != 't') continue;
        loracle::v1::FeedbackRequest feedback;
        for (int k = 0; k < resp.predictions_size(); ++k) {
          auto* item = feedback.add_items();
          item->set_prediction_id(resp.predictions(k).prediction_id());
          item->set_true_label(k == 0 ? "spam" : "ham");
        }
        grpc::ClientContext fctx;
        loracle::v1::FeedbackResponse fresp;
        inference->Feedback(&fctx, feedback, &fresp);
      }
      if (i % 20 == 0) {
        loracle::v1::LoadAdapterRequest load;
        load.set_name("spam");
        load.set_version(1);
        loracle::v1::AdapterInfo info;
        grpc::ClientContext ctx;
        adapters_stub->Load(&ctx, load, &info);
      }
      absl::SleepFor(absl::Milliseconds(50));
    }
  });

  PrometheusProcess prometheus(prom_dir_, server_->metrics_port());
  std::map<std::string, std::string> missing;
  const absl::Time end = absl::Now() + absl::Seconds(90);
  do {
    absl::SleepFor(absl::Seconds(1));
    missing.clear();
    for (const std::string& q : queries) {
      std::string why;
      if (!HasData(prometheus.Query(q), &why)) missing[q] = why;
    }
  } while (!missing.empty() && absl::Now() < end);
  stop = true;
  traffic.join();
  for (const auto& [query, why] : missing) ADD_FAILURE() << query << "\n  -> " << why;
  if (!missing.empty()) ADD_FAILURE() << prometheus.log();
}

}  // namespace
}  // namespace loracle
