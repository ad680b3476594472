#include "client/cli.h"

#include <grpcpp/grpcpp.h>

#include <cstdlib>
#include <string>
#include <vector>

#include "absl/algorithm/container.h"
#include "absl/strings/string_view.h"
#include "client/args.h"
#include "client/channel.h"
#include "client/commands.h"

namespace loracle::client {
namespace {

constexpr char kUsage[] = R"(usage: loracle [--server=HOST:PORT] COMMAND [options]

commands:
  predict --adapter=NAME [--mc_samples=N] [--seed=S] [--coverage=C] [--abstain_risk=R]
          [--members] [--json] TEXT...
          classify TEXTs (or lines of stdin when TEXT is -) with an adapter or ensemble
  adapters [list | get NAME | load NAME [--version=V | --path=DIR] | unload NAME]
          list the adapters the server holds, show one, or (admin) load the newest or a
          given version from the store, or unload one
  bench --adapters=A[,B...] [--concurrency=8 | --rate=R] [--duration_s=10] [--warmup_s=1]
        [--input_tokens=128] [--inputs=1] [--mc_samples=N] [--feedback] [--json_out=FILE]
        [--zipf_s=S] [--check_versions] [--rest=HOST:PORT]
          load-test Predict: throughput, p50/p90/p99 latency, errors by status code; requests
          cycle through the adapters, or pick them Zipf(S)-distributed (the first the hottest);
          --check_versions: every answer must be one version's (for deterministic adapters);
          --rest: the same load over the REST port (POST /v2/models/{adapter}/infer)
  finetune --name=ADAPTER (--data=FILE | --server_data=PATH)
        [--validation=FILE | --server_validation=PATH | --validation_split=F]
        [--members=M] [--dropout=none|input|lora_dropout|hiddenkey] [--rate=P]
        [--dropkey_rate=P --hiddencut_rate=P --kl_weight=L] [--mc_samples=N] [--epochs=E]
        [--max_steps=S] [--lr=LR] [--warmup=F] [--weight_decay=W] [--patience=E]
        [--batch_size=B] [--max_length=T] [--max_windows=W] [--train_windows=W1]
        [--rank=R] [--alpha=A] [--targets=q,v] [--rslora] [--labels=a,b] [--seed=S]
        [--detach] [--json]
          train an adapter (or ensemble) on a JSONL/CSV file; shows progress, then the
          validation report (per member, ensemble, calibrated); --max_windows=W reads long
          texts in up to W windows of T tokens (logits averaged) instead of cutting them;
          --train_windows=1 trains on the first window only (validation and serving read W)
  jobs [list | get ID | watch ID | cancel ID]
          the server's fine-tune jobs
  feedback PREDICTION_ID LABEL | feedback --file=F.jsonl
          report true labels of earlier predictions ({"prediction_id", "label"} per line)
  calibration ADAPTER
          the adapter's online calibration from feedback, with a reliability diagram
  help    show this message

options:
  --server=HOST:PORT   server address (default localhost:50051, or $LORACLE_SERVER)
  --timeout_ms=MS      per-call deadline (default 30000)
  --tls                TLS, trusting the system's CA certificates
  --tls_ca=FILE        TLS, trusting this PEM CA bundle
  --tls_cert=FILE --tls_key=FILE
                       a client certificate, for servers that require one (mutual TLS)
  --token_file=FILE    bearer token for servers with role tokens (default $LORACLE_TOKEN)
  --json               machine-readable output
)";

// Flags every command takes.
constexpr absl::string_view kCommonFlags[] = {"server", "timeout_ms", "json",    "help",      "tls",
                                              "tls_ca", "tls_cert",   "tls_key", "token_file"};

struct Command {
  const char* name;
  int (*run)(const Args&, const Channel&, std::ostream&, std::ostream&);
  std::vector<absl::string_view> flags;  // besides kCommonFlags
};

const std::vector<Command>& Commands() {
  static const std::vector<Command>* commands = new std::vector<Command>{
      {"predict",
       PredictCommand,
       {"adapter", "mc_samples", "members", "seed", "coverage", "abstain_risk"}},
      {"adapters", AdaptersCommand, {"path", "version"}},
      {"bench",
       BenchCommand,
       {"adapter", "adapters", "check_versions", "concurrency", "duration_s", "feedback",
        "input_tokens", "inputs", "rest", "json_out", "mc_samples", "rate", "warmup_s", "zipf_s"}},
      {"finetune",
       FinetuneCommand,
       {"alpha",        "batch_size",    "data",        "detach",
        "dropkey_rate", "dropout",       "epochs",      "hiddencut_rate",
        "kl_weight",    "labels",        "lr",          "max_length",
        "max_steps",    "max_windows",   "mc_samples",  "members",
        "name",         "patience",      "rank",        "rate",
        "rslora",       "seed",          "server_data", "server_validation",
        "targets",      "train_windows", "validation",  "validation_split",
        "warmup",       "weight_decay"}},
      {"jobs", JobsCommand, {}},
      {"feedback", FeedbackCommand, {"file"}},
      {"calibration", CalibrationCommand, {}},
  };
  return *commands;
}

// False, naming the flag, when `args` has one that `command` does not take: a typo must not
// silently fall back to a default.
bool CheckFlags(const Args& args, const Command& command, std::ostream& err) {
  for (const auto& [name, value] : args.flags) {
    if (absl::c_linear_search(kCommonFlags, name) || absl::c_linear_search(command.flags, name)) {
      continue;
    }
    err << "loracle " << command.name << ": unknown flag --" << name << " (see loracle help)\n";
    return false;
  }
  return true;
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
  const std::string& cmd = args.positional[0];
  for (const Command& command : Commands()) {
    if (cmd != command.name) continue;
    if (!CheckFlags(args, command, err)) return 2;
    const std::shared_ptr<grpc::Channel> channel = MakeChannel(server, args, err);
    if (channel == nullptr) return 2;
    return command.run(args, channel, out, err);
  }
  err << "loracle: unknown command '" << cmd << "'\n" << kUsage;
  return 2;
}

}  // namespace loracle::client
