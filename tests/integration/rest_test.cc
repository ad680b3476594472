// REST inference (rpc/rest_service.h) on a real server over loopback: the same answers as gRPC,
// every status mapped to its HTTP code, role tokens, feedback, health and metadata.

#include <arpa/inet.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "loracle/v1/inference.grpc.pb.h"
#include "nlohmann/json.hpp"
#include "server/calibration/conformal.h"
#include "server/calibration/error_score.h"
#include "server/rpc/rest_service.h"
#include "tests/support/test_server.h"
#include "tests/support/test_util.h"

namespace loracle {
namespace {

using nlohmann::json;

struct HttpReply {
  int status = 0;
  std::string headers;
  std::string body;
};

HttpReply Http(int port, const std::string& method, const std::string& path,
               const std::string& body = "", const std::string& extra_headers = "") {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  HttpReply r;
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    ::close(fd);
    return r;
  }
  const std::string req =
      absl::StrCat(method, " ", path, " HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n",
                   "Content-Type: application/json\r\nContent-Length: ", body.size(), "\r\n",
                   extra_headers, "\r\n", body);
  ::send(fd, req.data(), req.size(), MSG_NOSIGNAL);
  std::string out;
  char buf[8192];
  for (ssize_t n; (n = ::recv(fd, buf, sizeof(buf), 0)) > 0;)
    out.append(buf, static_cast<size_t>(n));
  ::close(fd);
  const size_t split = out.find("\r\n\r\n");
  if (out.size() < 12 || split == std::string::npos) return r;
  absl::SimpleAtoi(out.substr(9, 3), &r.status);
  r.headers = out.substr(0, split);
  r.body = out.substr(split + 4);
  return r;
}

json Infer(const std::vector<std::string>& texts, json parameters = json::object()) {
  json j = {
      {"inputs",
       {{{"name", "text"}, {"shape", {texts.size()}}, {"datatype", "BYTES"}, {"data", texts}}}}};
  if (!parameters.empty()) j["parameters"] = parameters;
  return j;
}

const json* Output(const json& reply, const std::string& name) {
  for (const json& o : reply["outputs"]) {
    if (o["name"] == name) return &o;
  }
  return nullptr;
}

class RestTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto spec = testing::TinyAdapterSpec({"neg", "pos"}, 3, 11);
    spec.serving.mc_samples = 2;
    auto sets = testing::TinyAdapterSpec({"x", "y", "z"}, 1, 13);
    sets.serving.conformal_scores = kScores;
    // 40 validation predictions by 1 - confidence: the lower half right, the upper half 50% wrong.
    sets.serving.error_score.name = "one_minus_confidence";
    for (int i = 0; i < 40; ++i) {
      sets.serving.error_score.scores.push_back(0.01 * i);
      sets.serving.error_score.wrong.push_back(i >= 20 && i % 2 == 0);
    }
    auto t =
        testing::TestServer::Start({{"sentiment", spec},
                                    {"single", testing::TinyAdapterSpec({"a", "b", "c"}, 1, 12)},
                                    {"sets", sets}},
                                   [](adapters::Store&, app::LoracleServer::Options& o) {
                                     o.http_address = "127.0.0.1:0";
                                     o.inference.max_inputs_per_request = 8;
                                   });
    ASSERT_NE(t, nullptr);
    server_ = t.release();
  }
  static void TearDownTestSuite() { delete server_; }
  static int port() { return server_->server().http_port(); }

  static testing::TestServer* server_;
  // The "sets" adapter's conformal calibration scores (as a fine-tune job keeps them).
  static inline const std::vector<double> kScores = {0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9};
};
testing::TestServer* RestTest::server_;

TEST_F(RestTest, InferGivesGrpcsAnswerForTheSameRequest) {
  const std::vector<std::string> texts = {"a fine day", "the worst film", "nothing much"};
  HttpReply r = Http(port(), "POST", "/v2/models/sentiment/infer",
                     Infer(texts, {{"seed", 7}, {"return_members", true}}).dump());
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_TRUE(absl::StrContains(r.headers, "Content-Type: application/json")) << r.headers;
  const json reply = json::parse(r.body);
  EXPECT_EQ(reply["model_name"], "sentiment");
  EXPECT_EQ(reply["model_version"], "1");
  EXPECT_EQ(reply["parameters"]["members"], 3);
  EXPECT_EQ(reply["parameters"]["mc_samples"], 2);

  loracle::v1::PredictRequest req;
  req.set_adapter("sentiment");
  for (const auto& t : texts) req.add_inputs(t);
  req.set_seed(7);
  req.set_return_members(true);
  loracle::v1::PredictResponse grpc_reply;
  grpc::ClientContext ctx;
  ASSERT_TRUE(
      loracle::v1::Inference::NewStub(server_->NewChannel())->Predict(&ctx, req, &grpc_reply).ok());

  const json* probs = Output(reply, "probabilities");
  ASSERT_NE(probs, nullptr);
  EXPECT_EQ((*probs)["shape"], json::array({3, 2}));
  EXPECT_EQ((*probs)["datatype"], "FP32");
  const json* mi = Output(reply, "mutual_information");
  const json* label = Output(reply, "label");
  const json* members = Output(reply, "member_probabilities");
  ASSERT_TRUE(mi != nullptr && label != nullptr && members != nullptr);
  EXPECT_EQ((*members)["shape"], json::array({3, 6, 2}));
  for (int i = 0; i < 3; ++i) {
    const auto& p = grpc_reply.predictions(i);
    for (int k = 0; k < 2; ++k) {
      EXPECT_EQ((*probs)["data"][i * 2 + k].get<float>(), p.probs(k)) << i << "," << k;
    }
    EXPECT_EQ((*mi)["data"][i].get<float>(), p.uncertainty().mutual_information());
    EXPECT_EQ((*label)["data"][i], p.label());
  }
  EXPECT_GT((*mi)["data"][0].get<float>(), 0.0f) << "an ensemble disagrees a little";
}

TEST_F(RestTest, EveryStatusHasItsHttpCode) {
  const json one = Infer({"x"});
  EXPECT_EQ(Http(port(), "POST", "/v2/models/missing/infer", one.dump()).status, 404);
  EXPECT_EQ(Http(port(), "POST", "/v2/models/sentiment/infer", "{not json").status, 400);
  EXPECT_EQ(Http(port(), "POST", "/v2/models/sentiment/infer", Infer({}).dump()).status, 400);
  HttpReply many = Http(port(), "POST", "/v2/models/sentiment/infer",
                        Infer(std::vector<std::string>(9, "x")).dump());
  EXPECT_EQ(many.status, 400);
  EXPECT_TRUE(absl::StrContains(json::parse(many.body)["error"].get<std::string>(), "limit"))
      << many.body;
  EXPECT_EQ(
      Http(port(), "POST", "/v2/models/sentiment/infer", Infer({"x"}, {{"mc_samples", 999}}).dump())
          .status,
      400);
  EXPECT_EQ(
      Http(port(), "POST", "/v2/models/sentiment/infer", Infer({"x"}, {{"unknown", 1}}).dump())
          .status,
      400);
  json bad_shape = one;
  bad_shape["inputs"][0]["shape"] = {2};
  EXPECT_EQ(Http(port(), "POST", "/v2/models/sentiment/infer", bad_shape.dump()).status, 400);
  EXPECT_EQ(Http(port(), "GET", "/v2/models/sentiment/infer").status, 405);
  EXPECT_EQ(Http(port(), "GET", "/v2/nothing").status, 404);
  // A deadline already past when the batch would run: 504.
  HttpReply late = Http(port(), "POST", "/v2/models/sentiment/infer",
                        Infer(std::vector<std::string>(8, std::string(3000, 'w')),
                              {{"timeout_ms", 1}, {"mc_samples", 32}})
                            .dump());
  EXPECT_EQ(late.status, 504) << late.body;
  for (absl::StatusCode code :
       {absl::StatusCode::kResourceExhausted, absl::StatusCode::kUnavailable,
        absl::StatusCode::kDeadlineExceeded, absl::StatusCode::kFailedPrecondition}) {
    EXPECT_EQ(rpc::HttpStatusFor(code), code == absl::StatusCode::kResourceExhausted  ? 429
                                        : code == absl::StatusCode::kUnavailable      ? 503
                                        : code == absl::StatusCode::kDeadlineExceeded ? 504
                                                                                      : 400);
  }
}

TEST_F(RestTest, HealthMetadataAndFeedback) {
  EXPECT_EQ(Http(port(), "GET", "/v2/health/live").status, 200);
  HttpReply ready = Http(port(), "GET", "/v2/health/ready");
  EXPECT_EQ(ready.status, 200);
  EXPECT_EQ(json::parse(ready.body)["ready"], true);
  HttpReply meta = Http(port(), "GET", "/v2/models/single");
  ASSERT_EQ(meta.status, 200) << meta.body;
  const json m = json::parse(meta.body);
  EXPECT_EQ(m["versions"], json::array({"1"}));
  EXPECT_EQ(m["parameters"]["labels"], json::array({"a", "b", "c"}));
  EXPECT_EQ(m["parameters"]["state"], "READY");
  // A random adapter written without a base fingerprint: served, marked unverified.
  EXPECT_EQ(m["parameters"]["base_fingerprint"], "");
  EXPECT_EQ(m["parameters"]["base_verified"], false);
  EXPECT_EQ(Http(port(), "GET", "/v2/models/single/ready").status, 200);
  EXPECT_EQ(Http(port(), "GET", "/v2/models/missing").status, 404);

  HttpReply r = Http(port(), "POST", "/v2/models/single/infer", Infer({"label me"}).dump());
  ASSERT_EQ(r.status, 200) << r.body;
  const std::string id = (*Output(json::parse(r.body), "prediction_id"))["data"][0];
  json fb = {{"items", {{{"prediction_id", id}, {"true_label", "b"}}}}};
  HttpReply f = Http(port(), "POST", "/v2/models/single/feedback", fb.dump());
  ASSERT_EQ(f.status, 200) << f.body;
  EXPECT_EQ(json::parse(f.body)["recorded"], 1);
  f = Http(port(), "POST", "/v2/models/single/feedback", fb.dump());
  EXPECT_EQ(json::parse(f.body)["duplicates"], 1);
  EXPECT_EQ(Http(port(), "POST", "/v2/models/single/feedback", "{}").status, 400);
  const std::string metrics = testing::HttpGet(server_->server().metrics_port(), "/metrics");
  EXPECT_TRUE(absl::StrContains(
      metrics, "loracle_requests_total{code=\"OK\",method=\"REST /v2/models/infer\"}"))
      << "REST calls are counted like gRPC's";
}

// A full batch queue sheds load over REST as over gRPC: 429, and the rest are answered.
TEST(RestLoadTest, AFullQueueIs429) {
  auto spec = testing::TinyAdapterSpec({"a", "b"}, 3, 5);
  spec.serving.mc_samples = 8;
  auto server = testing::TestServer::Start(
      {{"big", spec}}, [](adapters::Store&, app::LoracleServer::Options& o) {
        o.http_address = "127.0.0.1:0";
        o.batcher.max_queued_rows = 4;  // one request (4 inputs x 24 passes) fills it
      });
  ASSERT_NE(server, nullptr);
  const int port = server->server().http_port();
  const std::string body = Infer({"one", "two", "three", "four"}).dump();
  int shed = 0, ok = 0, other = 0;
  for (int attempt = 0; attempt < 5 && shed == 0; ++attempt) {
    std::vector<int> codes(8);
    std::vector<std::thread> threads;
    for (int t = 0; t < 8; ++t) {
      threads.emplace_back(
          [&, t] { codes[t] = Http(port, "POST", "/v2/models/big/infer", body).status; });
    }
    for (auto& t : threads) t.join();
    for (int c : codes) (c == 429 ? shed : c == 200 ? ok : other) += 1;
  }
  EXPECT_GT(shed, 0) << "8 concurrent requests against a 4-row queue";
  EXPECT_GT(ok, 0);
  EXPECT_EQ(other, 0);
}

TEST(RestAuthTest, RoleTokensAsBearerHeaders) {
  testing::TempDir dir;
  const std::string tokens = dir / "tokens";
  testing::WriteFile(tokens, "predict-token-0123456789 predict\ntrain-token-0123456789 train\n");
  auto server = testing::TestServer::Start({{"s", testing::TinyAdapterSpec({"a", "b"}, 1, 3)}},
                                           [&](adapters::Store&, app::LoracleServer::Options& o) {
                                             o.http_address = "127.0.0.1:0";
                                             o.auth_tokens_file = tokens;
                                           });
  ASSERT_NE(server, nullptr);
  const int port = server->server().http_port();
  const std::string body = Infer({"x"}).dump();
  EXPECT_EQ(Http(port, "POST", "/v2/models/s/infer", body).status, 401);
  EXPECT_EQ(Http(port, "POST", "/v2/models/s/infer", body,
                 "Authorization: Bearer wrong-token-0123456789\r\n")
                .status,
            401);
  EXPECT_EQ(Http(port, "POST", "/v2/models/s/infer", body,
                 "Authorization: Bearer train-token-0123456789\r\n")
                .status,
            403);
  EXPECT_EQ(Http(port, "POST", "/v2/models/s/infer", body,
                 "Authorization: Bearer predict-token-0123456789\r\n")
                .status,
            200);
  EXPECT_EQ(Http(port, "GET", "/v2/health/ready").status, 200) << "probes need no token";
}

}  // namespace
}  // namespace loracle

namespace loracle {
namespace {

// Split-conformal sets over gRPC and REST: the labels whose 1 - p is within the adapter's
// threshold for the coverage, the same either way, and precise errors.
TEST_F(RestTest, ConformalPredictionSetsOverGrpcAndRest) {
  const std::vector<std::string> texts = {"a fine day", "the worst film", "nothing much",
                                          "free money now"};
  auto stub = loracle::v1::Inference::NewStub(server_->NewChannel());
  auto predict = [&](const std::string& adapter, float coverage,
                     loracle::v1::PredictResponse* resp) {
    loracle::v1::PredictRequest req;
    req.set_adapter(adapter);
    for (const std::string& t : texts) req.add_inputs(t);
    req.set_coverage(coverage);
    grpc::ClientContext ctx;
    return stub->Predict(&ctx, req, resp);
  };
  for (float bad : {0.0f, 1.0f, -0.5f, 1.5f, std::nanf("")}) {
    loracle::v1::PredictResponse resp;
    const grpc::Status s = predict("sets", bad, &resp);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << bad;
    EXPECT_TRUE(absl::StrContains(s.error_message(), "coverage must be in (0, 1)"))
        << s.error_message();
  }
  {
    loracle::v1::PredictResponse resp;
    const grpc::Status s = predict("single", 0.9f, &resp);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
    EXPECT_TRUE(absl::StrContains(s.error_message(), "adapter single (version 1) has no conformal"))
        << s.error_message();
  }
  int sized = 0;
  for (float coverage : {0.5f, 0.8f}) {
    loracle::v1::PredictResponse resp;
    const grpc::Status s = predict("sets", coverage, &resp);
    ASSERT_TRUE(s.ok()) << s.error_message();
    const double q = calibration::ConformalThreshold(kScores, coverage);
    HttpReply r = Http(port(), "POST", "/v2/models/sets/infer",
                       Infer(texts, {{"coverage", coverage}}).dump());
    ASSERT_EQ(r.status, 200) << r.body;
    const json reply = json::parse(r.body);
    const json* mask = nullptr;
    for (const json& o : reply["outputs"]) {
      if (o["name"] == "prediction_set") mask = &o;
    }
    ASSERT_NE(mask, nullptr) << r.body;
    EXPECT_EQ((*mask)["datatype"], "BOOL");
    EXPECT_EQ((*mask)["shape"], json::array({4, 3}));
    for (int i = 0; i < resp.predictions_size(); ++i) {
      const loracle::v1::Prediction& p = resp.predictions(i);
      std::vector<std::string> want;
      std::vector<std::pair<float, std::string>> by_prob;
      for (int c = 0; c < 3; ++c) by_prob.push_back({p.probs(c), resp.labels(c)});
      std::stable_sort(by_prob.begin(), by_prob.end(),
                       [](const auto& a, const auto& b) { return a.first > b.first; });
      bool borderline = false;
      for (const auto& [prob, label] : by_prob) {
        borderline |= std::abs(1.0 - prob - q) < 1e-5;
        if (1.0 - prob <= q) want.push_back(label);
      }
      if (borderline) continue;  // float rounding of the reply could flip it
      EXPECT_EQ(std::vector<std::string>(p.prediction_set().begin(), p.prediction_set().end()),
                want)
          << coverage << " input " << i;
      sized += static_cast<int>(want.size());
      for (int c = 0; c < 3; ++c) {
        const bool in = std::find(want.begin(), want.end(), resp.labels(c)) != want.end();
        EXPECT_EQ((*mask)["data"][static_cast<size_t>(i * 3 + c)].get<bool>(), in);
      }
    }
  }
  EXPECT_GT(sized, 0) << "some set should hold a label";
  // Without coverage, no set; REST errors map to 400 with the same messages.
  HttpReply plain = Http(port(), "POST", "/v2/models/sets/infer", Infer(texts).dump());
  EXPECT_FALSE(absl::StrContains(plain.body, "prediction_set")) << plain.body;
  HttpReply bad =
      Http(port(), "POST", "/v2/models/sets/infer", Infer(texts, {{"coverage", 1.0}}).dump());
  EXPECT_EQ(bad.status, 400) << bad.body;
  EXPECT_TRUE(absl::StrContains(bad.body, "coverage must be in (0, 1)")) << bad.body;
  HttpReply unfit =
      Http(port(), "POST", "/v2/models/single/infer", Infer(texts, {{"coverage", 0.9}}).dump());
  EXPECT_EQ(unfit.status, 400) << unfit.body;
  EXPECT_TRUE(absl::StrContains(unfit.body, "has no conformal")) << unfit.body;
}

}  // namespace
}  // namespace loracle

namespace loracle {
namespace {

// abstain_risk over gRPC and REST: error_score is the adapter's chosen score (1 - confidence
// here; 0 for an adapter without one), and an input abstains when its score is above the
// threshold chosen on the adapter's validation predictions.
TEST_F(RestTest, AbstainRiskUsesTheAdaptersErrorScore) {
  const std::vector<std::string> texts = {"a fine day",     "the worst film",  "nothing much",
                                          "free money now", "see you at noon", "x"};
  auto stub = loracle::v1::Inference::NewStub(server_->NewChannel());
  auto predict = [&](const std::string& adapter, std::optional<float> risk,
                     loracle::v1::PredictResponse* resp) {
    loracle::v1::PredictRequest req;
    req.set_adapter(adapter);
    for (const std::string& t : texts) req.add_inputs(t);
    if (risk.has_value()) req.set_abstain_risk(*risk);
    grpc::ClientContext ctx;
    return stub->Predict(&ctx, req, resp);
  };
  for (float bad : {0.0f, 1.0f, -0.1f}) {
    loracle::v1::PredictResponse resp;
    const grpc::Status s = predict("sets", bad, &resp);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << bad;
    EXPECT_TRUE(absl::StrContains(s.error_message(), "abstain_risk must be in (0, 1)"));
  }
  {
    loracle::v1::PredictResponse resp;
    const grpc::Status s = predict("single", 0.1f, &resp);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
    EXPECT_TRUE(absl::StrContains(s.error_message(), "adapter single (version 1) has no error"))
        << s.error_message();
    ASSERT_TRUE(predict("single", std::nullopt, &resp).ok());
    EXPECT_EQ(resp.predictions(0).uncertainty().error_score(), 0.0f) << "none: documented as 0";
  }
  std::vector<double> scores;
  std::vector<bool> wrong;
  for (int i = 0; i < 40; ++i) {
    scores.push_back(0.01 * i);
    wrong.push_back(i >= 20 && i % 2 == 0);
  }
  for (float risk : {0.3f, 0.6f}) {
    loracle::v1::PredictResponse resp;
    ASSERT_TRUE(predict("sets", risk, &resp).ok());
    const double t = calibration::ThresholdForRisk(scores, wrong, risk).threshold;
    for (const loracle::v1::Prediction& p : resp.predictions()) {
      const float e = p.uncertainty().error_score();
      EXPECT_NEAR(e, 1 - p.uncertainty().confidence(), 1e-6);
      if (std::abs(e - t) > 1e-5) EXPECT_EQ(p.abstained(), e > t) << risk << " " << e << " " << t;
    }
  }
  // abstain_threshold compares the error score where the adapter has one, else mutual information.
  for (const auto& [adapter, uses_error_score] :
       std::vector<std::pair<std::string, bool>>{{"sets", true}, {"sentiment", false}}) {
    loracle::v1::PredictRequest req;
    req.set_adapter(adapter);
    for (const std::string& t : texts) req.add_inputs(t);
    loracle::v1::PredictResponse plain;
    {
      grpc::ClientContext ctx;
      ASSERT_TRUE(stub->Predict(&ctx, req, &plain).ok());
    }
    std::vector<double> values;
    for (const loracle::v1::Prediction& p : plain.predictions()) {
      values.push_back(uses_error_score ? p.uncertainty().error_score()
                                        : p.uncertainty().mutual_information());
    }
    std::vector<double> sorted = values;
    std::sort(sorted.begin(), sorted.end());
    const double t = (sorted[2] + sorted[3]) / 2;  // half the inputs above
    ASSERT_LT(sorted[2], sorted[3]) << adapter;
    req.set_abstain_threshold(static_cast<float>(t));
    loracle::v1::PredictResponse resp;
    grpc::ClientContext ctx;
    ASSERT_TRUE(stub->Predict(&ctx, req, &resp).ok());
    for (int i = 0; i < resp.predictions_size(); ++i) {
      EXPECT_EQ(resp.predictions(i).abstained(), values[static_cast<size_t>(i)] > t)
          << adapter << " " << i;
    }
  }
  // REST: the same parameter, the error_score output, the same errors.
  HttpReply r =
      Http(port(), "POST", "/v2/models/sets/infer", Infer(texts, {{"abstain_risk", 0.3}}).dump());
  ASSERT_EQ(r.status, 200) << r.body;
  bool has_error_score = false;
  const json reply = json::parse(r.body);
  for (const json& o : reply["outputs"]) has_error_score |= o["name"] == "error_score";
  EXPECT_TRUE(has_error_score) << r.body;
  // ood_score: an output of every reply; 0 for an adapter without an OOD detector (documented).
  const json* ood = Output(reply, "ood_score");
  ASSERT_NE(ood, nullptr) << r.body;
  ASSERT_EQ((*ood)["data"].size(), texts.size());
  for (const json& x : (*ood)["data"]) EXPECT_EQ(x.get<double>(), 0.0);
  HttpReply bad =
      Http(port(), "POST", "/v2/models/single/infer", Infer(texts, {{"abstain_risk", 0.3}}).dump());
  EXPECT_EQ(bad.status, 400) << bad.body;
}

}  // namespace
}  // namespace loracle
