// The shipped binaries, as a user runs them: loracle-server with no model flags (the built-in
// model, generated into a fresh cache), then the loracle CLI, then SIGTERM.

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <regex>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "nlohmann/json.hpp"
#include "server/adapters/adapter_files.h"
#include "server/adapters/store.h"
#include "server/model/default_model.h"
#include "tests/support/test_util.h"

namespace loracle {
namespace {

std::string BinDir() {
  const char* d = std::getenv("LORACLE_BIN_DIR");
  return d != nullptr ? d : ".";
}

// Starts loracle-server with `args`, stderr to `log`. Returns the pid.
pid_t Spawn(const std::vector<std::string>& args, const std::string& log) {
  const pid_t pid = ::fork();
  if (pid == 0) {
    std::freopen(log.c_str(), "w", stderr);
    std::vector<char*> argv;
    std::string bin = BinDir() + "/loracle-server";
    argv.push_back(bin.data());
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    ::execv(bin.c_str(), argv.data());
    std::_Exit(127);
  }
  return pid;
}

// Waits for `pattern` in the log; returns the first capture group (or "" on timeout / exit).
std::string WaitForLog(const std::string& log, const std::string& pattern, absl::Duration timeout) {
  const std::regex re(pattern);
  const absl::Time end = absl::Now() + timeout;
  while (absl::Now() < end) {
    std::smatch m;
    const std::string text = testing::ReadFile(log);
    if (std::regex_search(text, m, re)) return m.size() > 1 ? m[1].str() : m[0].str();
    absl::SleepFor(absl::Milliseconds(50));
  }
  return "";
}

int WaitExit(pid_t pid, absl::Duration timeout) {
  const absl::Time end = absl::Now() + timeout;
  while (absl::Now() < end) {
    int status = 0;
    if (::waitpid(pid, &status, WNOHANG) == pid)
      return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    absl::SleepFor(absl::Milliseconds(50));
  }
  ::kill(pid, SIGKILL);
  ::waitpid(pid, nullptr, 0);
  return -2;
}

std::string RunCommand(const std::string& cmd) {
  std::string out;
  FILE* p = ::popen(cmd.c_str(), "r");
  char buf[4096];
  for (size_t n; (n = std::fread(buf, 1, sizeof(buf), p)) > 0;) out.append(buf, n);
  ::pclose(p);
  return out;
}

TEST(BinaryTest, StartsOnTheBuiltInModelServesAndDrainsOnSigterm) {
  testing::TempDir cache;
  // A random 4-member ensemble for the built-in model, for the CLI to predict with at once.
  auto store = adapters::Store::Create({cache / "adapters"});
  ASSERT_TRUE(store.ok());
  adapters::RandomAdapterSpec spec;
  spec.serving.labels = {"ham", "spam"};
  spec.serving.members = 4;
  ASSERT_TRUE((*store)
                  ->Publish("clf",
                            [&](const std::string& dir) {
                              return adapters::WriteRandomAdapter(dir, model::DefaultModelConfig(),
                                                                  spec);
                            })
                  .ok());
  const std::string log = cache / "server.log";
  const absl::Time start = absl::Now();
  const pid_t pid = Spawn({"--grpc_port=0", "--metrics_port=0", "--grpc_host=127.0.0.1",
                           "--cache_dir=" + cache.path(), "--threads=2"},
                          log);
  const std::string port = WaitForLog(log, "gRPC on port ([0-9]+)", absl::Seconds(30));
  ASSERT_FALSE(port.empty()) << testing::ReadFile(log);
  ASSERT_FALSE(WaitForLog(log, "SERVING", absl::Seconds(60)).empty()) << testing::ReadFile(log);
  const double ready_s = absl::ToDoubleSeconds(absl::Now() - start);
  EXPECT_LT(ready_s, 30.0) << "SERVING within seconds";
  std::printf("built-in model generated, loaded and SERVING after %.2f s\n", ready_s);

  auto channel = grpc::CreateChannel("127.0.0.1:" + port, grpc::InsecureChannelCredentials());
  auto health = grpc::health::v1::Health::NewStub(channel);
  grpc::ClientContext ctx;
  grpc::health::v1::HealthCheckResponse resp;
  ASSERT_TRUE(health->Check(&ctx, {}, &resp).ok());
  EXPECT_EQ(resp.status(), grpc::health::v1::HealthCheckResponse::SERVING);

  // The ensemble through the real CLI binary.
  const std::string cli = absl::StrCat(BinDir(), "/loracle --server=127.0.0.1:", port);
  const std::string json = RunCommand(absl::StrCat(
      cli,
      " predict --adapter=clf --json 'Free money!!! Click now to win' 'See you at the meeting'"));
  auto j = nlohmann::json::parse(json, nullptr, false);
  ASSERT_FALSE(j.is_discarded()) << json;
  EXPECT_EQ(j["members"], 4);
  ASSERT_EQ(j["predictions"].size(), 2u);
  EXPECT_GT(j["predictions"][0]["uncertainty"]["mutual_information"].get<double>(), 0.0);

  // The first start queued the spam ensemble's fine-tune as an ordinary job.
  const std::string jobs = RunCommand(cli + " jobs list");
  EXPECT_NE(jobs.find(" spam "), std::string::npos) << jobs;
  EXPECT_TRUE(jobs.find("QUEUED") != std::string::npos || jobs.find("RUNNING") != std::string::npos)
      << jobs;

  // SIGTERM while it trains: the job goes back to the queue and the server stops cleanly.
  ::kill(pid, SIGTERM);
  EXPECT_EQ(WaitExit(pid, absl::Seconds(30)), 0);
  EXPECT_NE(testing::ReadFile(log).find("stopped"), std::string::npos);
}

TEST(BinaryTest, BadModelDirectoryExitsWithTheReason) {
  testing::TempDir dir;
  testing::WriteFile(dir / "config.json", R"({"model_type": "bert", "vocab_size": 10})");
  const std::string log = dir / "server.log";
  const pid_t pid = Spawn({"--grpc_port=0", "--metrics_port=-1", "--grpc_host=127.0.0.1",
                           "--model_dir=" + dir.path(), "--adapters_dir=" + (dir / "adapters")},
                          log);
  EXPECT_EQ(WaitExit(pid, absl::Seconds(30)), 1);
  const std::string text = testing::ReadFile(log);
  EXPECT_NE(text.find("hidden_size"), std::string::npos) << text;
  EXPECT_NE(text.find(dir.path() + "/config.json"), std::string::npos) << text;
}

TEST(BinaryTest, ADeviceOrTypeThisBuildCannotUseExitsAtStartWithTheReason) {
  testing::TempDir cache;
  // cuda:99: a CPU-only LibTorch says so (FAILED_PRECONDITION); a CUDA build counts its GPUs.
  for (const auto& [flags, reason] : std::vector<std::pair<std::vector<std::string>, std::string>>{
           {{"--device=cuda:99"}, "--device=cuda:99"},
           {{"--device=cpu", "--dtype=float16"}, "--dtype=bfloat16"},
           {{"--device=tpu"}, "expected cpu, cuda or cuda:N"}}) {
    const std::string log = cache / "server.log";
    std::vector<std::string> args = {"--grpc_port=0", "--metrics_port=-1", "--grpc_host=127.0.0.1",
                                     "--cache_dir=" + cache.path()};
    args.insert(args.end(), flags.begin(), flags.end());
    const absl::Time start = absl::Now();
    const pid_t pid = Spawn(args, log);
    EXPECT_EQ(WaitExit(pid, absl::Seconds(30)), 1);
    EXPECT_LT(absl::Now() - start, absl::Seconds(10)) << "fails before loading anything";
    const std::string text = testing::ReadFile(log);
    EXPECT_NE(text.find(reason), std::string::npos) << text;
    EXPECT_EQ(text.find("loading model"), std::string::npos) << text;
  }
}

TEST(BinaryTest, SighupReloadsTheTokensFileAndABrokenOneIsLoggedAndIgnored) {
  testing::TempDir dir;
  testing::WriteTinyModel(dir / "model");
  auto store = adapters::Store::Create({dir / "adapters"});
  ASSERT_TRUE(store.ok());
  ASSERT_TRUE((*store)
                  ->Publish("one",
                            [&](const std::string& d) {
                              return adapters::WriteRandomAdapter(
                                  d, testing::TinyConfig(),
                                  testing::TinyAdapterSpec({"neg", "pos"}, 1, 1));
                            })
                  .ok());
  const std::string tokens = dir / "tokens";
  testing::WriteFile(tokens, "first-token-0123456789 predict\n");
  const std::string log = dir / "server.log";
  const pid_t pid = Spawn(
      {"--grpc_port=0", "--metrics_port=0", "--metrics_host=127.0.0.1", "--grpc_host=127.0.0.1",
       "--model_dir=" + (dir / "model"), "--adapters_dir=" + (dir / "adapters"),
       "--training_workers=0", "--auth_tokens_file=" + tokens, "--threads=1"},
      log);
  const std::string port = WaitForLog(log, "gRPC on port ([0-9]+)", absl::Seconds(30));
  ASSERT_FALSE(port.empty()) << testing::ReadFile(log);
  ASSERT_FALSE(WaitForLog(log, "SERVING", absl::Seconds(60)).empty()) << testing::ReadFile(log);
  EXPECT_EQ(testing::ReadFile(log).find("WARNING: no --auth_tokens_file"), std::string::npos);

  const std::string cli = absl::StrCat(BinDir(), "/loracle --server=127.0.0.1:", port,
                                       " predict --adapter=one hello 2>&1; echo rc=$?");
  auto predict_as = [&](const std::string& token) {
    return RunCommand("LORACLE_TOKEN=" + token + " " + cli);
  };
  EXPECT_NE(predict_as("first-token-0123456789").find("rc=0"), std::string::npos);
  EXPECT_NE(predict_as("second-token-0123456789").find("UNAUTHENTICATED"), std::string::npos);

  testing::WriteFile(tokens, "second-token-0123456789 predict\n");
  ::kill(pid, SIGHUP);
  ASSERT_FALSE(WaitForLog(log, "SIGHUP: reloaded", absl::Seconds(10)).empty())
      << testing::ReadFile(log);
  EXPECT_NE(predict_as("second-token-0123456789").find("rc=0"), std::string::npos);
  EXPECT_NE(predict_as("first-token-0123456789").find("UNAUTHENTICATED"), std::string::npos);

  testing::WriteFile(tokens, "second-token-0123456789 predict,everything\n");
  ::kill(pid, SIGHUP);
  ASSERT_FALSE(
      WaitForLog(log, "SIGHUP: kept the previous tokens: .*everything", absl::Seconds(10)).empty())
      << testing::ReadFile(log);
  EXPECT_NE(predict_as("second-token-0123456789").find("rc=0"), std::string::npos);

  ::kill(pid, SIGTERM);
  EXPECT_EQ(WaitExit(pid, absl::Seconds(30)), 0) << testing::ReadFile(log);
}

}  // namespace
}  // namespace loracle
