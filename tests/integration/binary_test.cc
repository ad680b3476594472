// The shipped binaries, as a user runs them: loracle-server with no model flags (the built-in
// pretrained model, with a fresh cache for its adapters and jobs), then the loracle CLI, then
// SIGTERM.

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/inotify.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <random>
#include <regex>
#include <string>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "nlohmann/json.hpp"
#include "server/adapters/adapter_files.h"
#include "server/adapters/adapter_weights.h"
#include "server/adapters/store.h"
#include "server/model/checkpoint.h"
#include "server/model/default_model.h"
#include "server/util/file_util.h"
#include "tests/support/test_util.h"

namespace loracle {
namespace {

std::string BinDir() {
  const char* d = std::getenv("LORACLE_BIN_DIR");
  return d != nullptr ? d : ".";
}

// Starts loracle-server with `args` and `env` (NAME=VALUE) added to the environment, stderr to
// `log`. Returns the pid.
pid_t Spawn(const std::vector<std::string>& args, const std::string& log,
            const std::vector<std::string>& env = {}) {
  const pid_t pid = ::fork();
  if (pid == 0) {
    std::freopen(log.c_str(), "w", stderr);
    for (const std::string& e : env) ::putenv(const_cast<char*>(e.c_str()));
    std::vector<char*> argv;
    std::string bin = BinDir() + "/loracle-server";
    argv.push_back(bin.data());
    std::string http = "--http_port=0";  // tests run side by side: not the default 8000
    argv.push_back(http.data());
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

// The built-in model's config (its adapters must match its shape).
model::ModelConfig BuiltinConfig() {
  absl::StatusOr<std::string> dir = model::BuiltinModelDir();
  EXPECT_TRUE(dir.ok()) << dir.status();
  absl::StatusOr<model::ModelConfig> c = model::ReadModelConfig(*dir + "/config.json");
  EXPECT_TRUE(c.ok()) << c.status();
  return *c;
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
                              return adapters::WriteRandomAdapter(dir, BuiltinConfig(), spec);
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
  // An open server says so once, as a leveled warning (server/util/log.h).
  EXPECT_TRUE(std::regex_search(
      testing::ReadFile(log),
      std::regex(
          R"((^|\n)W\d{4} [0-9:.]+ loracle_server\.cc:\d+\] no --auth_tokens_file: every caller)")))
      << testing::ReadFile(log);
  std::printf("built-in model loaded and SERVING after %.2f s\n", ready_s);

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

// Every flag is also LORACLE_<FLAG> in the environment (container platforms); the command line
// wins; a bad value exits 2 naming the variable; a LORACLE_* that is no flag is warned about.
TEST(BinaryTest, FlagsComeFromTheEnvironmentAndTheCommandLineWins) {
  testing::TempDir dir;
  const std::vector<std::string> args = {"--grpc_port=0", "--metrics_port=-1",
                                         "--grpc_host=127.0.0.1", "--spam_demo=false"};
  const std::string log = dir / "server.log";
  // The environment's --device reaches the server: it refuses it at start, before loading.
  pid_t pid = Spawn(args, log, {"LORACLE_DEVICE=tpu", "LORACLE_CACHE_DIR=" + (dir / "cache")});
  EXPECT_EQ(WaitExit(pid, absl::Seconds(30)), 1);
  EXPECT_NE(testing::ReadFile(log).find("expected cpu, cuda or cuda:N"), std::string::npos)
      << testing::ReadFile(log);

  pid = Spawn(args, log, {"LORACLE_THREADS=many"});
  EXPECT_EQ(WaitExit(pid, absl::Seconds(30)), 2);
  EXPECT_NE(testing::ReadFile(log).find("LORACLE_THREADS=many"), std::string::npos)
      << testing::ReadFile(log);

  // --device on the command line beats LORACLE_DEVICE; LORACLE_CACHE_DIR places the store.
  std::vector<std::string> cpu = args;
  cpu.push_back("--device=cpu");
  pid = Spawn(cpu, log,
              {"LORACLE_DEVICE=tpu", "LORACLE_CACHE_DIR=" + (dir / "cache"), "LORACLE_THREDS=2"});
  EXPECT_FALSE(WaitForLog(log, "SERVING", absl::Seconds(60)).empty()) << testing::ReadFile(log);
  EXPECT_TRUE(util::IsDirectory(dir / "cache/adapters"))
      << "the adapter store defaults to LORACLE_CACHE_DIR/adapters";
  EXPECT_NE(testing::ReadFile(log).find("LORACLE_THREDS in the environment is not a flag"),
            std::string::npos);
  ::kill(pid, SIGTERM);
  EXPECT_EQ(WaitExit(pid, absl::Seconds(30)), 0);
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
  EXPECT_EQ(testing::ReadFile(log).find("no --auth_tokens_file"), std::string::npos);

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

// Replicas sharing one store (issue 14): A trains through the Training RPC (the CLI's finetune)
// and publishes; B, a serving-only replica polling the store as on a network volume, serves the
// new version within its interval with A's probabilities; deleting it from the store unloads it
// on B.
TEST(BinaryTest, ReplicasSharingAStoreServeWhatEitherPublishes) {
  testing::TempDir dir;
  const std::string store = dir / "adapters";
  auto start = [&](const std::string& who, std::vector<std::string> extra, std::string* port) {
    std::vector<std::string> args = {"--grpc_port=0",
                                     "--metrics_port=-1",
                                     "--grpc_host=127.0.0.1",
                                     "--cache_dir=" + (dir / ("cache-" + who)),
                                     "--adapters_dir=" + store,
                                     "--spam_demo=false",
                                     "--threads=1"};
    args.insert(args.end(), extra.begin(), extra.end());
    const std::string log = dir / (who + ".log");
    const pid_t pid = Spawn(args, log);
    *port = WaitForLog(log, "gRPC on port ([0-9]+)", absl::Seconds(60));
    EXPECT_FALSE(WaitForLog(log, "SERVING", absl::Seconds(60)).empty()) << testing::ReadFile(log);
    return pid;
  };
  std::string port_a, port_b;
  const pid_t trainer = start("a", {"--training_workers=1"}, &port_a);
  const pid_t replica =
      start("b", {"--training_workers=0", "--store_poll_s=1", "--store_inotify=false"}, &port_b);
  struct KillOnFailure {  // a failed ASSERT must not leave the two servers running
    std::vector<pid_t> pids;
    ~KillOnFailure() {
      for (pid_t pid : pids) {
        if (::kill(pid, SIGKILL) == 0) ::waitpid(pid, nullptr, 0);
      }
    }
  } guard{{trainer, replica}};
  ASSERT_FALSE(port_a.empty());
  ASSERT_FALSE(port_b.empty());
  const std::string cli_a = absl::StrCat(BinDir(), "/loracle --server=127.0.0.1:", port_a);
  const std::string cli_b = absl::StrCat(BinDir(), "/loracle --server=127.0.0.1:", port_b);

  // 40 mails from the bundled training split, uploaded with the job.
  std::string data;
  {
    const std::string all = testing::ReadFile(std::string(LORACLE_SOURCE_DIR) +
                                              "/tests/data/spam-assassin/train.jsonl");
    size_t at = 0;
    for (int i = 0; i < 40 && at != std::string::npos; ++i) at = all.find('\n', at + 1);
    data = all.substr(0, at + 1);
  }
  testing::WriteFile(dir / "train.jsonl", data);
  const std::string job =
      RunCommand(absl::StrCat(cli_a, " finetune --name=shared --data=", dir / "train.jsonl",
                              " --epochs=1 --max_steps=4 --json 2>&1"));
  ASSERT_NE(job.find("SUCCEEDED"), std::string::npos) << job;
  const absl::Time published = absl::Now();

  // B serves it within its poll interval (1 s), plus the load.
  std::string on_b;
  while (absl::Now() - published < absl::Seconds(20)) {
    on_b = RunCommand(cli_b + " adapters get shared 2>&1");
    if (on_b.find("READY") != std::string::npos) break;
    absl::SleepFor(absl::Milliseconds(100));
  }
  const double seen_s = absl::ToDoubleSeconds(absl::Now() - published);
  ASSERT_NE(on_b.find("READY"), std::string::npos) << on_b << testing::ReadFile(dir / "b.log");
  EXPECT_LT(seen_s, 5.0) << "a 1 s poll";
  std::printf("published by A, READY on B after %.2f s\n", seen_s);
  const std::string text = " --json 'Free money!!! Click now to win'";
  auto a =
      nlohmann::json::parse(RunCommand(cli_a + " predict --adapter=shared" + text), nullptr, false);
  auto b =
      nlohmann::json::parse(RunCommand(cli_b + " predict --adapter=shared" + text), nullptr, false);
  ASSERT_FALSE(a.is_discarded());
  ASSERT_FALSE(b.is_discarded());
  EXPECT_EQ(a["version"], b["version"]);
  ASSERT_EQ(a["predictions"][0]["probs"].size(), 2u) << a.dump();
  for (int k = 0; k < 2; ++k) {
    EXPECT_NEAR(a["predictions"][0]["probs"][k].get<double>(),
                b["predictions"][0]["probs"][k].get<double>(), 1e-6);
  }

  // Retired from the store: gone from B within the interval.
  ASSERT_EQ(std::system(("rm -rf " + store + "/shared").c_str()), 0);
  const absl::Time deleted = absl::Now();
  while (absl::Now() - deleted < absl::Seconds(20) &&
         RunCommand(cli_b + " adapters get shared 2>&1").find("NOT_FOUND") == std::string::npos) {
    absl::SleepFor(absl::Milliseconds(100));
  }
  EXPECT_NE(RunCommand(cli_b + " adapters get shared 2>&1").find("NOT_FOUND"), std::string::npos);
  EXPECT_LT(absl::Now() - deleted, absl::Seconds(5));

  for (pid_t pid : {trainer, replica}) {
    ::kill(pid, SIGTERM);
    EXPECT_EQ(WaitExit(pid, absl::Seconds(30)), 0);
  }
  guard.pids.clear();
}

// Store-root events for the publish test: the staging directory's creation and its rename into
// place. Returns the first event in `mask` on a `.tmp-` name within `timeout` (0 when none).
uint32_t NextStagingEvent(int fd, uint32_t mask, absl::Duration timeout, std::string* name) {
  const absl::Time end = absl::Now() + timeout;
  alignas(inotify_event) char buf[16384];
  while (absl::Now() < end) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(absl::ToInt64Milliseconds(end - absl::Now())) + 1) <= 0) {
      continue;
    }
    const ssize_t n = ::read(fd, buf, sizeof(buf));
    for (ssize_t at = 0; n > 0 && at < n;) {
      const auto* e = reinterpret_cast<const inotify_event*>(buf + at);
      at += sizeof(inotify_event) + e->len;
      const std::string entry = e->len > 0 ? e->name : "";
      if ((e->mask & mask) != 0 && entry.rfind(".tmp-", 0) == 0) {
        *name = entry;
        return e->mask & mask;
      }
    }
  }
  return 0;
}

// SIGKILL at random points of a publish (a fine-tune job writing its version), 20 times, on the
// real binary; each restart must list and serve only complete versions, the newest of them.
// LORACLE_SIGKILL_ROUNDS overrides the 20 (the ASan build runs fewer: a round is a server start).
TEST(BinaryTest, SigkillDuringPublishLeavesOnlyCompleteVersionsAndServesTheLast) {
  const char* env_rounds = std::getenv("LORACLE_SIGKILL_ROUNDS");
  const int rounds = env_rounds != nullptr ? std::atoi(env_rounds) : 20;
  testing::TempDir dir;
  const std::string store = dir / "adapters";
  const std::string cache = dir / "cache";
  ASSERT_TRUE(adapters::Store::Create({store}).ok());
  std::string data;
  {
    const std::string all = testing::ReadFile(std::string(LORACLE_SOURCE_DIR) +
                                              "/tests/data/spam-assassin/train.jsonl");
    size_t at = 0;
    for (int i = 0; i < 24 && at != std::string::npos; ++i) at = all.find('\n', at + 1);
    data = all.substr(0, at + 1);
  }
  testing::WriteFile(dir / "train.jsonl", data);
  const int fd = ::inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
  ASSERT_GE(fd, 0);
  ASSERT_GE(::inotify_add_watch(fd, store.c_str(), IN_CREATE | IN_MOVED_FROM | IN_ONLYDIR), 0);

  pid_t pid = -1;
  struct KillOnFailure {
    pid_t* pid;
    int fd;
    ~KillOnFailure() {
      if (*pid > 0 && ::kill(*pid, SIGKILL) == 0) ::waitpid(*pid, nullptr, 0);
      ::close(fd);
    }
  } guard{&pid, fd};
  std::string port;
  auto start = [&](int round) {
    const std::string log = dir / absl::StrCat("server-", round, ".log");
    pid = Spawn(
        {"--grpc_port=0", "--metrics_port=-1", "--grpc_host=127.0.0.1", "--cache_dir=" + cache,
         "--adapters_dir=" + store, "--spam_demo=false", "--threads=1", "--training_workers=1"},
        log);
    port = WaitForLog(log, "gRPC on port ([0-9]+)", absl::Seconds(60));
    return !port.empty() && !WaitForLog(log, "SERVING", absl::Seconds(60)).empty();
  };
  auto cli = [&](const std::string& args) {
    return RunCommand(absl::StrCat(BinDir(), "/loracle --server=127.0.0.1:", port, " ", args));
  };
  auto submit = [&] {
    return cli(absl::StrCat("finetune --name=crash --data=", dir / "train.jsonl",
                            " --epochs=1 --max_steps=2 --members=4 --rank=16 --detach 2>&1"));
  };
  // What a restarted server must show: every version directory loads, none is half-written, and
  // the one served is the newest.
  std::unique_ptr<model::BaseModel> base;
  auto check_restart = [&](int round) {
    SCOPED_TRACE(absl::StrCat("restart after round ", round));
    absl::StatusOr<std::vector<std::string>> entries = util::ListDir(store + "/crash");
    int64_t newest = 0;
    for (const std::string& e : entries.ok() ? *entries : std::vector<std::string>{}) {
      int64_t v = 0;
      ASSERT_TRUE(absl::SimpleAtoi(e, &v)) << "only versions under the name: " << e;
      auto loaded = adapters::LoadAdapter(store + "/crash/" + e, "crash", v, *base);
      EXPECT_TRUE(loaded.ok()) << "version " << v << ": " << loaded.status();
      newest = std::max(newest, v);
    }
    auto list = nlohmann::json::parse(cli("adapters list --json"), nullptr, false);
    ASSERT_TRUE(list.is_array()) << list;
    if (newest == 0) {
      EXPECT_TRUE(list.empty()) << list.dump();
      return;
    }
    ASSERT_EQ(list.size(), 1u) << "nothing staged is listed: " << list.dump();
    EXPECT_EQ(list[0]["name"], "crash");
    EXPECT_EQ(list[0]["state"], "READY") << list.dump();
    EXPECT_EQ(list[0]["version"].get<int64_t>(), newest) << list.dump();
    auto p = nlohmann::json::parse(cli("predict --adapter=crash --json 'Free money!!!'"), nullptr,
                                   false);
    ASSERT_FALSE(p.is_discarded());
    EXPECT_EQ(p["version"].get<int64_t>(), newest);
  };

  // Round 0 publishes without a kill, to time a publish (staging created -> renamed into place).
  ASSERT_TRUE(start(0));
  {
    auto model_dir = model::BuiltinModelDir();
    ASSERT_TRUE(model_dir.ok());
    auto loaded = model::LoadBaseModel(*model_dir);
    ASSERT_TRUE(loaded.ok()) << loaded.status();
    base = *std::move(loaded);
  }
  ASSERT_NE(submit().find("submitted"), std::string::npos);
  std::string staged, renamed;
  ASSERT_EQ(NextStagingEvent(fd, IN_CREATE, absl::Seconds(120), &staged), IN_CREATE);
  const absl::Time created = absl::Now();
  ASSERT_EQ(NextStagingEvent(fd, IN_MOVED_FROM, absl::Seconds(30), &renamed), IN_MOVED_FROM);
  const absl::Duration publish = absl::Now() - created;
  EXPECT_EQ(renamed, staged);

  std::mt19937_64 rng(absl::ToUnixNanos(absl::Now()));
  int in_staging = 0;
  for (int round = 1; round <= rounds; ++round) {
    ::kill(pid, SIGKILL);
    ::waitpid(pid, nullptr, 0);
    pid = -1;
    ASSERT_TRUE(start(round)) << testing::ReadFile(dir / absl::StrCat("server-", round, ".log"));
    check_restart(round - 1);
    if (::testing::Test::HasFatalFailure()) return;
    ASSERT_NE(submit().find("submitted"), std::string::npos);
    ASSERT_EQ(NextStagingEvent(fd, IN_CREATE, absl::Seconds(120), &staged), IN_CREATE);
    // Anywhere from the staging directory's creation to past the rename (publishes vary).
    const absl::Duration delay = publish * 1.5 * std::uniform_real_distribution<double>(0, 1)(rng);
    absl::SleepFor(delay);
    ::kill(pid, SIGKILL);
    const bool was_renamed =
        NextStagingEvent(fd, IN_MOVED_FROM, absl::Milliseconds(200), &renamed) != 0;
    if (!was_renamed) ++in_staging;
    std::printf("round %d: killed %.2f ms after staging, %s\n", round,
                absl::ToDoubleMilliseconds(delay), was_renamed ? "renamed" : "staged");
  }
  ::kill(pid, SIGKILL);
  ::waitpid(pid, nullptr, 0);
  pid = -1;
  ASSERT_TRUE(start(rounds + 1));
  check_restart(rounds);
  std::printf("%d SIGKILLs in a publish of %.1f ms: %d before the rename, %d after it\n", rounds,
              absl::ToDoubleMilliseconds(publish), in_staging, rounds - in_staging);
  ::kill(pid, SIGTERM);
  EXPECT_EQ(WaitExit(pid, absl::Seconds(30)), 0);
  pid = -1;
}

}  // namespace
}  // namespace loracle
