// TLS, mutual TLS and role tokens over real gRPC on loopback. Certificates are made in the test
// by Debian's openssl; no private key is committed.

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <chrono>
#include <cstdlib>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "client/cli.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "loracle/v1/adapters.grpc.pb.h"
#include "loracle/v1/inference.grpc.pb.h"
#include "loracle/v1/training.grpc.pb.h"
#include "server/rpc/auth.h"
#include "tests/support/test_server.h"
#include "tests/support/test_util.h"

namespace loracle {
namespace {

// A CA, a server certificate for 127.0.0.1/localhost and a client certificate it signed, and a
// second ("rogue") CA with its own client certificate. False when openssl is missing or fails.
bool MakeCertificates(const std::string& dir) {
  const std::string ec = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
  const std::string cmd = absl::StrCat(
      "set -e; cd '", dir, "'; exec 2>openssl.log\n",
      "printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\\n' > server.ext\n",
      "printf 'extendedKeyUsage=clientAuth\\n' > client.ext\n", "for ca in ca rogue; do\n",
      "  openssl req -x509 ", ec,
      " -keyout $ca.key -out $ca.pem -days 2 -subj /CN=$ca >/dev/null\n", "done\n",
      "sign() {  # NAME CA EXT CN\n", "  openssl req ", ec,
      " -keyout $1.key -out $1.csr -subj /CN=$4 >/dev/null\n",
      "  openssl x509 -req -in $1.csr -CA $2.pem -CAkey $2.key -CAcreateserial -out $1.pem ",
      "-days 2 -extfile $3 >/dev/null\n", "}\n", "sign server ca server.ext localhost\n",
      "sign client ca client.ext client\n", "sign rogue_client rogue client.ext client\n");
  return std::system(cmd.c_str()) == 0;
}

std::shared_ptr<grpc::Channel> TlsChannel(const std::string& address, const std::string& dir,
                                          const std::string& client = "") {
  grpc::SslCredentialsOptions ssl;
  ssl.pem_root_certs = testing::ReadFile(dir + "/ca.pem");
  if (!client.empty()) {
    ssl.pem_cert_chain = testing::ReadFile(dir + "/" + client + ".pem");
    ssl.pem_private_key = testing::ReadFile(dir + "/" + client + ".key");
  }
  return grpc::CreateChannel(address, grpc::SslCredentials(ssl));
}

grpc::Status Predict(const std::shared_ptr<grpc::Channel>& channel, const std::string& token = "") {
  v1::PredictRequest r;
  r.set_adapter("one");
  r.add_inputs("a text");
  v1::PredictResponse resp;
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  if (!token.empty()) ctx.AddMetadata("authorization", token);
  return v1::Inference::NewStub(channel)->Predict(&ctx, r, &resp);
}

int Cli(const std::vector<std::string>& argv, std::string* err_text = nullptr) {
  std::ostringstream out, err;
  const int rc = client::RunCli(argv, out, err);
  if (err_text != nullptr) *err_text = err.str();
  return rc;
}

std::unique_ptr<testing::TestServer> StartServer(
    const std::function<void(app::LoracleServer::Options&)>& configure) {
  return testing::TestServer::Start({{"one", testing::TinyAdapterSpec({"neg", "pos"}, 1, 1)}},
                                    [&](adapters::Store&, app::LoracleServer::Options& o) {
                                      o.spam_demo = false;
                                      configure(o);
                                    });
}

class TlsTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_TRUE(MakeCertificates(pki_.path())) << pki_.path(); }
  testing::TempDir pki_;
};

TEST_F(TlsTest, PlaintextClientsAreRefusedAndClientsTrustingTheCaPredict) {
  auto server = StartServer([&](app::LoracleServer::Options& o) {
    o.tls_cert_file = pki_ / "server.pem";
    o.tls_key_file = pki_ / "server.key";
  });
  ASSERT_NE(server, nullptr);
  EXPECT_EQ(Predict(server->NewChannel()).error_code(), grpc::StatusCode::UNAVAILABLE);
  const grpc::Status tls = Predict(TlsChannel(server->address(), pki_.path()));
  EXPECT_TRUE(tls.ok()) << tls.error_message();

  const std::string at = "--server=" + server->address();
  std::string err;
  EXPECT_EQ(Cli({at, "--tls_ca=" + (pki_ / "ca.pem"), "predict", "--adapter=one", "hi"}, &err), 0)
      << err;
  EXPECT_NE(Cli({at, "predict", "--adapter=one", "hi"}, &err), 0);
  EXPECT_EQ(Cli({at, "--tls_ca=" + (pki_ / "missing.pem"), "predict", "--adapter=one", "hi"}, &err),
            2);
  EXPECT_NE(err.find("missing.pem"), std::string::npos) << err;
}

TEST_F(TlsTest, MutualTlsAcceptsOnlyClientCertificatesItsCaSigned) {
  auto server = StartServer([&](app::LoracleServer::Options& o) {
    o.tls_cert_file = pki_ / "server.pem";
    o.tls_key_file = pki_ / "server.key";
    o.tls_client_ca_file = pki_ / "ca.pem";
  });
  ASSERT_NE(server, nullptr);
  EXPECT_FALSE(Predict(TlsChannel(server->address(), pki_.path())).ok());
  EXPECT_FALSE(Predict(TlsChannel(server->address(), pki_.path(), "rogue_client")).ok());
  const grpc::Status ok = Predict(TlsChannel(server->address(), pki_.path(), "client"));
  EXPECT_TRUE(ok.ok()) << ok.error_message();
  std::string err;
  EXPECT_EQ(Cli({"--server=" + server->address(), "--tls_ca=" + (pki_ / "ca.pem"),
                 "--tls_cert=" + (pki_ / "client.pem"), "--tls_key=" + (pki_ / "client.key"),
                 "predict", "--adapter=one", "hi"},
                &err),
            0)
      << err;
}

TEST_F(TlsTest, BadTlsOptionsFailAtStartNamingTheFlag) {
  app::LoracleServer::Options o;
  o.adapters_dir = pki_.path();
  o.model_dir = pki_.path();
  o.training_workers = 0;
  o.grpc_address = "127.0.0.1:0";
  o.metrics_address = "";
  struct Case {
    std::string cert, key, client_ca, says;
  };
  for (const Case& c : std::vector<Case>{
           {pki_ / "server.pem", "", "", "--tls_cert and --tls_key go together"},
           {"", "", pki_ / "ca.pem", "--tls_client_ca needs --tls_cert"},
           {pki_ / "missing.pem", pki_ / "server.key", "", "--tls_cert"},
           {pki_ / "server.pem", pki_ / "server.pem", "", "--tls_key"},  // a cert, not a key
           {pki_ / "server.key", pki_ / "server.key", "", "--tls_cert"}}) {
    o.tls_cert_file = c.cert;
    o.tls_key_file = c.key;
    o.tls_client_ca_file = c.client_ca;
    auto server = app::LoracleServer::Create(o);
    ASSERT_FALSE(server.ok()) << c.says;
    EXPECT_EQ(server.status().code(), absl::StatusCode::kInvalidArgument) << server.status();
    EXPECT_NE(server.status().message().find(c.says), std::string::npos) << server.status();
  }
}

TEST(TokenFileTest, ParsesTokensAndDigestsAndNamesTheBadLine) {
  const std::string digest = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
  EXPECT_EQ(rpc::Sha256("test")[0], 0x9f);
  auto ok = rpc::ParseTokens(absl::StrCat("# comment\n\nsha256:", digest,
                                          "  predict,feedback\nops-token-0123456789\tadmin\n"),
                             "t");
  ASSERT_TRUE(ok.ok()) << ok.status();
  ASSERT_EQ(ok->size(), 2u);
  EXPECT_EQ((*ok)[0].roles, rpc::kPredictRole | rpc::kFeedbackRole);
  EXPECT_EQ((*ok)[0].digest, rpc::Sha256("test"));
  EXPECT_EQ((*ok)[1].digest, rpc::Sha256("ops-token-0123456789"));
  for (const auto& [contents, says] : std::vector<std::pair<std::string, std::string>>{
           {"", "no tokens"},
           {"short predict\n", "t:1: a token must be at least 16 bytes"},
           {"\nops-token-0123456789 predict,root\n", "t:2: unknown role \"root\""},
           {"ops-token-0123456789\n", "t:1: expected a token"},
           {"sha256:abc predict\n", "64 hex digits"},
           {absl::StrCat("sha256:", digest, " predict\ntest-but-longer-xx predict\nsha256:", digest,
                         " admin\n"),
            "t:3: this token is listed twice"}}) {
    auto bad = rpc::ParseTokens(contents, "t");
    ASSERT_FALSE(bad.ok()) << contents;
    EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(bad.status().message().find(says), std::string::npos) << bad.status();
  }
}

class AuthTest : public ::testing::Test {
 protected:
  static constexpr char kPredict[] = "predict-token-0123456789";
  static constexpr char kFeedback[] = "feedback-token-0123456789";
  static constexpr char kTrain[] = "trainer-token-0123456789";
  static constexpr char kAdmin[] = "admin-token-0123456789";

  void SetUp() override {
    tokens_ = dir_ / "tokens";
    testing::WriteFile(tokens_,
                       absl::StrCat("sha256:", Hex(rpc::Sha256(kPredict)), " predict\n", kFeedback,
                                    " feedback\n", kTrain, " train\n", kAdmin, " admin,predict\n"));
    server_ = StartServer([&](app::LoracleServer::Options& o) { o.auth_tokens_file = tokens_; });
    ASSERT_NE(server_, nullptr);
    channel_ = server_->NewChannel();
  }
  static std::string Hex(const rpc::Sha256Digest& d) {
    std::string out;
    for (uint8_t b : d) absl::StrAppend(&out, absl::Hex(b, absl::kZeroPad2));
    return out;
  }
  static std::string Bearer(const std::string& token) { return "Bearer " + token; }
  grpc::Status Load(const std::string& token) {
    v1::LoadAdapterRequest r;
    r.set_name("one");
    v1::AdapterInfo info;
    grpc::ClientContext ctx;
    ctx.AddMetadata("authorization", Bearer(token));
    return v1::Adapters::NewStub(channel_)->Load(&ctx, r, &info);
  }
  grpc::Status ListAdapters(const std::string& token) {
    v1::ListAdaptersResponse resp;
    grpc::ClientContext ctx;
    ctx.AddMetadata("authorization", Bearer(token));
    return v1::Adapters::NewStub(channel_)->List(&ctx, {}, &resp);
  }
  grpc::Status Feedback(const std::string& token) {
    v1::FeedbackRequest r;
    r.set_prediction_id("no-such-prediction");
    r.set_true_label("pos");
    v1::FeedbackResponse resp;
    grpc::ClientContext ctx;
    ctx.AddMetadata("authorization", Bearer(token));
    return v1::Inference::NewStub(channel_)->Feedback(&ctx, r, &resp);
  }
  grpc::Status ListJobs(const std::string& token) {
    v1::ListJobsResponse resp;
    grpc::ClientContext ctx;
    ctx.AddMetadata("authorization", Bearer(token));
    return v1::Training::NewStub(channel_)->List(&ctx, {}, &resp);
  }
  grpc::Status Watch(const std::string& token) {
    grpc::ClientContext ctx;
    ctx.AddMetadata("authorization", Bearer(token));
    v1::GetJobRequest r;
    r.set_id("no-such-job");
    auto reader = v1::Training::NewStub(channel_)->Watch(&ctx, r);
    v1::Job j;
    while (reader->Read(&j)) {
    }
    return reader->Finish();
  }

  testing::TempDir dir_;
  std::string tokens_;
  std::unique_ptr<testing::TestServer> server_;
  std::shared_ptr<grpc::Channel> channel_;
};

TEST_F(AuthTest, MissingOrUnknownTokensAreUnauthenticatedAndHealthStaysOpen) {
  using grpc::StatusCode;
  EXPECT_EQ(Predict(channel_).error_code(), StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(Predict(channel_, Bearer("not-a-known-token-at-all")).error_code(),
            StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(Predict(channel_, "Basic " + std::string(kPredict)).error_code(),
            StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(Predict(channel_, Bearer(std::string(kPredict) + "x")).error_code(),
            StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(ListAdapters("").error_code(), StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(ListJobs("nope-nope-nope-nope").error_code(), StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(Watch("").error_code(), StatusCode::UNAUTHENTICATED);

  grpc::health::v1::HealthCheckResponse health;
  grpc::ClientContext ctx;
  ASSERT_TRUE(grpc::health::v1::Health::NewStub(channel_)->Check(&ctx, {}, &health).ok());
  EXPECT_EQ(health.status(), grpc::health::v1::HealthCheckResponse::SERVING);
}

TEST_F(AuthTest, EachRoleReachesItsMethodsAndOnlyThem) {
  using grpc::StatusCode;
  // predict (stored as its digest)
  EXPECT_TRUE(Predict(channel_, Bearer(kPredict)).ok());
  EXPECT_TRUE(Predict(channel_, "bearer  " + std::string(kPredict)).ok());  // scheme any case
  EXPECT_TRUE(ListAdapters(kPredict).ok());
  EXPECT_EQ(Feedback(kPredict).error_code(), StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(ListJobs(kPredict).error_code(), StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(Watch(kPredict).error_code(), StatusCode::PERMISSION_DENIED);
  const grpc::Status denied = Load(kPredict);
  EXPECT_EQ(denied.error_code(), StatusCode::PERMISSION_DENIED);
  EXPECT_NE(denied.error_message().find("admin"), std::string::npos) << denied.error_message();
  // feedback: past the check, the unknown prediction id is NOT_FOUND
  EXPECT_EQ(Feedback(kFeedback).error_code(), StatusCode::NOT_FOUND);
  EXPECT_EQ(Predict(channel_, Bearer(kFeedback)).error_code(), StatusCode::PERMISSION_DENIED);
  // train
  EXPECT_TRUE(ListJobs(kTrain).ok());
  EXPECT_EQ(Watch(kTrain).error_code(), StatusCode::NOT_FOUND);
  EXPECT_EQ(Load(kTrain).error_code(), StatusCode::PERMISSION_DENIED);
  // admin (with predict)
  const grpc::Status load = Load(kAdmin);
  EXPECT_TRUE(load.ok()) << load.error_message();
  EXPECT_TRUE(Predict(channel_, Bearer(kAdmin)).ok());
  EXPECT_EQ(ListJobs(kAdmin).error_code(), StatusCode::PERMISSION_DENIED);
}

TEST_F(AuthTest, ReloadSwapsTheTokensAndABrokenFileKeepsTheOldOnes) {
  testing::WriteFile(tokens_, "new-predict-token-0123456789 predict\n");
  ASSERT_TRUE(server_->server().ReloadAuthTokens().ok());
  EXPECT_EQ(Predict(channel_, Bearer(kPredict)).error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_TRUE(Predict(channel_, Bearer("new-predict-token-0123456789")).ok());

  testing::WriteFile(tokens_, "new-predict-token-0123456789 predict,superuser\n");
  const absl::Status broken = server_->server().ReloadAuthTokens();
  EXPECT_EQ(broken.code(), absl::StatusCode::kInvalidArgument) << broken;
  EXPECT_TRUE(Predict(channel_, Bearer("new-predict-token-0123456789")).ok());
}

TEST_F(AuthTest, TheCliSendsTheTokenFromAFileOrTheEnvironment) {
  const std::string at = "--server=" + server_->address();
  std::string err;
  ::unsetenv("LORACLE_TOKEN");
  EXPECT_EQ(Cli({at, "predict", "--adapter=one", "hi"}, &err), 1);
  EXPECT_NE(err.find("UNAUTHENTICATED"), std::string::npos) << err;
  testing::WriteFile(dir_ / "token", std::string(kPredict) + "\n");
  EXPECT_EQ(Cli({at, "--token_file=" + (dir_ / "token"), "predict", "--adapter=one", "hi"}, &err),
            0)
      << err;
  ::setenv("LORACLE_TOKEN", kPredict, 1);
  EXPECT_EQ(Cli({at, "predict", "--adapter=one", "hi"}, &err), 0) << err;
  EXPECT_EQ(Cli({at, "jobs", "list"}, &err), 1);
  EXPECT_NE(err.find("PERMISSION_DENIED"), std::string::npos) << err;
  EXPECT_EQ(Cli({at, "adapters", "unload", "one"}, &err), 1);
  EXPECT_NE(err.find("PERMISSION_DENIED"), std::string::npos) << err;

  // An admin loads a version published into the store, then unloads the adapter.
  ASSERT_TRUE(server_->store()
                  .Publish("one",
                           [](const std::string& dir) {
                             return adapters::WriteRandomAdapter(
                                 dir, testing::TinyConfig(),
                                 testing::TinyAdapterSpec({"neg", "pos"}, 1, 2));
                           })
                  .ok());
  ::setenv("LORACLE_TOKEN", kAdmin, 1);
  std::ostringstream out, err_stream;
  EXPECT_EQ(client::RunCli({at, "adapters", "load", "one"}, out, err_stream), 0)
      << err_stream.str();
  EXPECT_EQ(out.str(), "loaded one version 2\n");
  EXPECT_EQ(Cli({at, "adapters", "load", "one", "--version=zero"}, &err), 2);
  EXPECT_EQ(Cli({at, "adapters", "unload", "one"}, &err), 0) << err;
  EXPECT_EQ(Predict(channel_, Bearer(kAdmin)).error_code(), grpc::StatusCode::NOT_FOUND);
  ::unsetenv("LORACLE_TOKEN");
}

}  // namespace
}  // namespace loracle
