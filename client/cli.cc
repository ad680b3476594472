#include "client/cli.h"

#include <grpcpp/grpcpp.h>

#include <cstdlib>
#include <string>

#include "client/args.h"
#include "client/commands.h"

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
  finetune --name=ADAPTER (--data=FILE | --server_data=PATH) [--validation=FILE]
        [--members=M] [--dropout=none|input|lora_dropout|hiddenkey] [--rate=P]
        [--dropkey_rate=P --hiddencut_rate=P --kl_weight=L] [--mc_samples=N] [--epochs=E]
        [--max_steps=S] [--lr=LR] [--batch_size=B] [--rank=R] [--alpha=A] [--targets=q,v]
        [--rslora] [--labels=a,b] [--seed=S] [--detach] [--json]
          train an adapter (or ensemble) on a JSONL/CSV file; shows progress, then the
          validation report (per member, ensemble, calibrated)
  jobs [list | get ID | watch ID | cancel ID]
          the server's fine-tune jobs
  help    show this message

options:
  --server=HOST:PORT   server address (default localhost:50051, or $LORACLE_SERVER)
  --timeout_ms=MS      per-call deadline (default 30000)
  --json               machine-readable output
)";

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
  if (cmd == "predict") return PredictCommand(args, channel, out, err);
  if (cmd == "adapters") return AdaptersCommand(args, channel, out, err);
  if (cmd == "bench") return BenchCommand(args, channel, out, err);
  if (cmd == "finetune") return FinetuneCommand(args, channel, out, err);
  if (cmd == "jobs") return JobsCommand(args, channel, out, err);
  err << "loracle: unknown command '" << cmd << "'\n" << kUsage;
  return 2;
}

}  // namespace loracle::client
