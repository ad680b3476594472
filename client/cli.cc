#include "client/cli.h"

#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <string>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "client/bench.h"
#include "loracle/v1/adapters.grpc.pb.h"
#include "loracle/v1/inference.grpc.pb.h"
#include "nlohmann/json.hpp"

namespace loracle::client {
namespace {

constexpr char kUsage[] = R"(usage: loracle [--server=HOST:PORT] COMMAND [options]

commands:
  predict --adapter=NAME [--mc_samples=N] [--seed=S] [--members] [--json] TEXT...
          classify TEXTs (or lines of stdin when TEXT is -) with an adapter or ensemble
  adapters [list | get NAME]
          list the adapters the server holds, or show one
  bench --adapters=A[,B...] [--concurrency=8 | --rate=R] [--duration_s=10] [--warmup_s=1]
        [--input_tokens=128] [--inputs=1] [--mc_samples=N] [--json_out=FILE]
          load-test Predict: throughput, p50/p90/p99 latency, errors by status code
  help    show this message

options:
  --server=HOST:PORT   server address (default localhost:50051, or $LORACLE_SERVER)
  --timeout_ms=MS      per-call deadline (default 30000)
  --json               machine-readable output
)";

struct Args {
  std::map<std::string, std::string> flags;
  std::vector<std::string> positional;
};

const char* const kBoolFlags[] = {"json", "members", "help"};

bool IsBool(const std::string& name) {
  for (const char* b : kBoolFlags)
    if (name == b) return true;
  return false;
}

bool Parse(const std::vector<std::string>& argv, Args* args, std::ostream& err) {
  for (size_t i = 0; i < argv.size(); ++i) {
    const std::string& a = argv[i];
    if (a.size() > 2 && a.compare(0, 2, "--") == 0) {
      std::string name = a.substr(2), value;
      const size_t eq = name.find('=');
      if (eq != std::string::npos) {
        value = name.substr(eq + 1);
        name = name.substr(0, eq);
      } else if (IsBool(name)) {
        value = "true";
      } else if (i + 1 < argv.size()) {
        value = argv[++i];
      } else {
        err << "loracle: flag --" << name << " needs a value\n";
        return false;
      }
      args->flags[name] = value;
    } else {
      args->positional.push_back(a);
    }
  }
  return true;
}

std::string Flag(const Args& args, const std::string& name, const std::string& def = "") {
  auto it = args.flags.find(name);
  return it == args.flags.end() ? def : it->second;
}

int Fail(std::ostream& err, const grpc::Status& s) {
  err << "loracle: " << CodeName(s.error_code()) << ": " << s.error_message() << "\n";
  return 1;
}

void SetDeadline(grpc::ClientContext* ctx, const Args& args) {
  int64_t ms = 30000;
  if (!absl::SimpleAtoi(Flag(args, "timeout_ms", "30000"), &ms)) ms = 30000;
  ctx->set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(ms));
}

std::string Shorten(const std::string& text, size_t n) {
  std::string one_line;
  for (char c : text) one_line.push_back(c == '\n' || c == '\t' ? ' ' : c);
  if (one_line.size() <= n) return one_line;
  size_t cut = n - 3;
  while (cut > 0 && (static_cast<unsigned char>(one_line[cut]) & 0xC0) == 0x80) --cut;  // UTF-8
  return one_line.substr(0, cut) + "...";
}

int Predict(const Args& args, const std::shared_ptr<grpc::Channel>& channel, std::ostream& out,
            std::ostream& err) {
  loracle::v1::PredictRequest req;
  req.set_adapter(Flag(args, "adapter"));
  if (req.adapter().empty()) {
    err << "loracle predict: --adapter=NAME is required\n";
    return 2;
  }
  std::vector<std::string> texts(args.positional.begin() + 1, args.positional.end());
  if (texts.size() == 1 && texts[0] == "-") {
    texts.clear();
    for (std::string line; std::getline(std::cin, line);) {
      if (!line.empty()) texts.push_back(line);
    }
  }
  if (texts.empty()) {
    err << "loracle predict: give at least one TEXT (or - to read lines from stdin)\n";
    return 2;
  }
  for (const std::string& t : texts) req.add_inputs(t);
  if (std::string v = Flag(args, "mc_samples"); !v.empty()) {
    uint32_t n;
    if (!absl::SimpleAtoi(v, &n)) {
      err << "loracle predict: --mc_samples must be a positive integer\n";
      return 2;
    }
    req.set_mc_samples(n);
  }
  if (std::string v = Flag(args, "seed"); !v.empty()) {
    uint64_t seed;
    if (!absl::SimpleAtoi(v, &seed)) {
      err << "loracle predict: --seed must be an integer\n";
      return 2;
    }
    req.set_seed(seed);
  }
  req.set_return_members(Flag(args, "members") == "true");
  auto stub = loracle::v1::Inference::NewStub(channel);
  grpc::ClientContext ctx;
  SetDeadline(&ctx, args);
  loracle::v1::PredictResponse resp;
  grpc::Status s = stub->Predict(&ctx, req, &resp);
  if (!s.ok()) return Fail(err, s);

  if (Flag(args, "json") == "true") {
    nlohmann::json j;
    j["adapter"] = resp.adapter();
    j["version"] = resp.version();
    j["labels"] = std::vector<std::string>(resp.labels().begin(), resp.labels().end());
    j["members"] = resp.members();
    j["mc_samples"] = resp.mc_samples();
    j["predictions"] = nlohmann::json::array();
    for (int i = 0; i < resp.predictions_size(); ++i) {
      const auto& p = resp.predictions(i);
      const auto& u = p.uncertainty();
      nlohmann::json pj = {
          {"text", texts[static_cast<size_t>(i)]},
          {"prediction_id", p.prediction_id()},
          {"label", p.label()},
          {"label_index", p.label_index()},
          {"probs", std::vector<float>(p.probs().begin(), p.probs().end())},
          {"uncertainty",
           {{"predictive_entropy", u.predictive_entropy()},
            {"expected_entropy", u.expected_entropy()},
            {"mutual_information", u.mutual_information()},
            {"confidence", u.confidence()},
            {"prob_std", std::vector<float>(u.prob_std().begin(), u.prob_std().end())}}},
          {"abstained", p.abstained()},
          {"truncated", p.truncated()},
          {"num_tokens", p.num_tokens()},
      };
      if (p.members_size() > 0) {
        pj["members"] = nlohmann::json::array();
        for (const auto& m : p.members()) {
          pj["members"].push_back(
              {{"member", m.member()},
               {"sample", m.sample()},
               {"probs", std::vector<float>(m.probs().begin(), m.probs().end())}});
        }
      }
      j["predictions"].push_back(pj);
    }
    out << j.dump(2) << "\n";
    return 0;
  }
  out << absl::StrFormat("adapter %s (version %d), %d member(s) x %d sample(s)\n", resp.adapter(),
                         resp.version(), resp.members(), resp.mc_samples());
  out << absl::StrFormat("%-3s %-12s %-6s %-7s %-7s %-7s %-28s %s\n", "#", "label", "conf",
                         "entropy", "mi", "flags", "probs", "text");
  for (int i = 0; i < resp.predictions_size(); ++i) {
    const auto& p = resp.predictions(i);
    std::vector<std::string> probs;
    for (int c = 0; c < p.probs_size(); ++c) {
      probs.push_back(absl::StrFormat("%s=%.3f", resp.labels(c), p.probs(c)));
    }
    std::vector<std::string> flags;
    if (p.abstained()) flags.push_back("abstain");
    if (p.truncated()) flags.push_back("trunc");
    out << absl::StrFormat("%-3d %-12s %-6.3f %-7.4f %-7.4f %-7s %-28s %s\n", i, p.label(),
                           p.uncertainty().confidence(), p.uncertainty().predictive_entropy(),
                           p.uncertainty().mutual_information(),
                           flags.empty() ? "-" : absl::StrJoin(flags, ","),
                           absl::StrJoin(probs, " "), Shorten(texts[static_cast<size_t>(i)], 40));
    for (const auto& m : p.members()) {
      std::vector<std::string> mp;
      for (float v : m.probs()) mp.push_back(absl::StrFormat("%.3f", v));
      out << absl::StrFormat("      member %d sample %d: %s\n", m.member(), m.sample(),
                             absl::StrJoin(mp, " "));
    }
  }
  return 0;
}

const char* StateName(loracle::v1::AdapterState s) {
  switch (s) {
    case loracle::v1::ADAPTER_STATE_LOADING:
      return "LOADING";
    case loracle::v1::ADAPTER_STATE_READY:
      return "READY";
    case loracle::v1::ADAPTER_STATE_UNLOADING:
      return "UNLOADING";
    case loracle::v1::ADAPTER_STATE_FAILED:
      return "FAILED";
    default:
      return "UNSPECIFIED";
  }
}

nlohmann::json AdapterJson(const loracle::v1::AdapterInfo& a) {
  return {{"name", a.name()},
          {"version", a.version()},
          {"state", StateName(a.state())},
          {"error", a.error()},
          {"labels", std::vector<std::string>(a.labels().begin(), a.labels().end())},
          {"members", a.members()},
          {"mc_samples", a.mc_samples()},
          {"temperature", a.temperature()},
          {"rank", a.rank()},
          {"lora_alpha", a.lora_alpha()},
          {"path", a.path()}};
}

int Adapters(const Args& args, const std::shared_ptr<grpc::Channel>& channel, std::ostream& out,
             std::ostream& err) {
  auto stub = loracle::v1::Adapters::NewStub(channel);
  const std::string sub = args.positional.size() > 1 ? args.positional[1] : "list";
  const bool json = Flag(args, "json") == "true";
  grpc::ClientContext ctx;
  SetDeadline(&ctx, args);
  if (sub == "list") {
    loracle::v1::ListAdaptersResponse resp;
    grpc::Status s = stub->List(&ctx, loracle::v1::ListAdaptersRequest(), &resp);
    if (!s.ok()) return Fail(err, s);
    if (json) {
      nlohmann::json j = nlohmann::json::array();
      for (const auto& a : resp.adapters()) j.push_back(AdapterJson(a));
      out << j.dump(2) << "\n";
      return 0;
    }
    out << absl::StrFormat("%-24s %-8s %-8s %-8s %-5s %s\n", "name", "version", "state", "members",
                           "rank", "labels");
    for (const auto& a : resp.adapters()) {
      out << absl::StrFormat("%-24s %-8d %-8s %-8d %-5d %s%s\n", a.name(), a.version(),
                             StateName(a.state()), a.members(), a.rank(),
                             absl::StrJoin(a.labels(), ","),
                             a.error().empty() ? "" : "  error: " + a.error());
    }
    return 0;
  }
  if (sub == "get" && args.positional.size() == 3) {
    loracle::v1::GetAdapterRequest req;
    req.set_name(args.positional[2]);
    loracle::v1::AdapterInfo resp;
    grpc::Status s = stub->Get(&ctx, req, &resp);
    if (!s.ok()) return Fail(err, s);
    out << AdapterJson(resp).dump(2) << "\n";
    return 0;
  }
  err << "loracle adapters: expected 'list' or 'get NAME'\n";
  return 2;
}

int Bench(const Args& args, const std::shared_ptr<grpc::Channel>& channel, std::ostream& out,
          std::ostream& err) {
  BenchOptions o;
  std::string adapters = Flag(args, "adapters", Flag(args, "adapter"));
  for (absl::string_view a : absl::StrSplit(adapters, ',', absl::SkipEmpty()))
    o.adapters.emplace_back(a);
  if (o.adapters.empty()) {
    err << "loracle bench: --adapters=NAME[,NAME...] is required\n";
    return 2;
  }
  struct IntFlag {
    const char* name;
    int* value;
    int min;
  };
  for (IntFlag f :
       {IntFlag{"concurrency", &o.concurrency, 1}, IntFlag{"input_tokens", &o.input_tokens, 3},
        IntFlag{"inputs", &o.inputs_per_request, 1}, IntFlag{"mc_samples", &o.mc_samples, 0},
        IntFlag{"timeout_ms", &o.timeout_ms, 1}}) {
    if (std::string v = Flag(args, f.name);
        !v.empty() && (!absl::SimpleAtoi(v, f.value) || *f.value < f.min)) {
      err << "loracle bench: --" << f.name << " must be an integer >= " << f.min << "\n";
      return 2;
    }
  }
  struct DoubleFlag {
    const char* name;
    double* value;
  };
  for (DoubleFlag f : {DoubleFlag{"rate", &o.rate}, DoubleFlag{"duration_s", &o.duration_s},
                       DoubleFlag{"warmup_s", &o.warmup_s}}) {
    if (std::string v = Flag(args, f.name);
        !v.empty() && (!absl::SimpleAtod(v, f.value) || *f.value < 0)) {
      err << "loracle bench: --" << f.name << " must be a number >= 0\n";
      return 2;
    }
  }
  if (o.duration_s <= 0) {
    err << "loracle bench: --duration_s must be > 0\n";
    return 2;
  }
  const BenchResult r = RunBench(channel, o);
  if (Flag(args, "json") == "true") {
    out << BenchJson(o, r);
  } else {
    PrintBench(o, r, out);
  }
  if (std::string path = Flag(args, "json_out"); !path.empty()) {
    std::ofstream f(path);
    f << BenchJson(o, r);
    if (!f) {
      err << "loracle bench: cannot write " << path << "\n";
      return 1;
    }
  }
  return r.ok > 0 ? 0 : 1;
}

}  // namespace

int RunCli(const std::vector<std::string>& argv, std::ostream& out, std::ostream& err) {
  Args args;
  if (!Parse(argv, &args, err)) return 2;
  if (args.positional.empty() || args.positional[0] == "help" || Flag(args, "help") == "true") {
    (args.positional.empty() ? err : out) << kUsage;
    return args.positional.empty() ? 2 : 0;
  }
  std::string server = Flag(args, "server");
  if (server.empty()) {
    const char* env = std::getenv("LORACLE_SERVER");
    server = env != nullptr && *env ? env : "localhost:50051";
  }
  grpc::ChannelArguments channel_args;
  channel_args.SetMaxReceiveMessageSize(64 << 20);
  auto channel =
      grpc::CreateCustomChannel(server, grpc::InsecureChannelCredentials(), channel_args);
  const std::string& cmd = args.positional[0];
  if (cmd == "predict") return Predict(args, channel, out, err);
  if (cmd == "adapters") return Adapters(args, channel, out, err);
  if (cmd == "bench") return Bench(args, channel, out, err);
  err << "loracle: unknown command '" << cmd << "'\n" << kUsage;
  return 2;
}

}  // namespace loracle::client
