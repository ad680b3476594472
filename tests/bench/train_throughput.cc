// loracle-train-throughput: training examples/s of the Trainer on a model directory, for M = 1
// and for M members in one job, as row groups of one forward (kOneForward) and one after the
// other in each step (kSequential, the default). Each line reports examples x members per second.
// THREADS is TrainerOptions::threads (the trainer's shards; BLAS is single-threaded in training).
//   loracle-train-throughput MODEL_DIR [MEMBERS=4] [STEPS=12] [BATCH=16] [TOKENS=128] [THREADS=2]
//                            [DROPOUT=lora_dropout|none] [DEVICE=cpu] [DTYPE=float32]
// (DEVICE, DTYPE: as the server's --device and --dtype.)
// (MODEL_DIR: e.g. the model loracle-bench-fixture writes.) Synthetic inputs of TOKENS tokens;
// rank 8 on query and value; LORA_DROPOUT p = 0.1 unless DROPOUT is none (the setting that does
// the same arithmetic as tests/bench/train_throughput_torch.py).

#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "server/model/checkpoint.h"
#include "server/model/cpu_runtime.h"
#include "server/training/trainer.h"

namespace {

using loracle::training::EncodedData;
using loracle::training::Trainer;
using loracle::training::TrainerOptions;

EncodedData Synthetic(const loracle::model::BaseModel& base, int n, int tokens) {
  EncodedData d;
  for (int i = 0; i < n; ++i) {
    loracle::text::Encoding e;
    for (int t = 0; t < tokens; ++t) {
      e.input_ids.push_back(t == 0 ? 2 : 5 + (i * 31 + t * 7) % (base.config.vocab_size - 5));
      e.token_type_ids.push_back(0);
    }
    d.inputs.push_back(e);
    d.labels.push_back(i % 2);
  }
  return d;
}

// Seconds for one Train call of `steps` steps (validation kept tiny so it is not measured much).
double Run(const loracle::model::BaseModel& base, const EncodedData& train, const EncodedData& val,
           TrainerOptions o) {
  const absl::Time start = absl::Now();
  auto r = Trainer::Train(base, {"a", "b"}, train, val, o, nullptr, nullptr);
  if (!r.ok()) {
    std::fprintf(stderr, "train: %s\n", r.status().ToString().c_str());
    std::exit(1);
  }
  return absl::ToDoubleSeconds(absl::Now() - start);
}

}  // namespace

int main(int argc, char** argv) {
  loracle::model::KeepFreedMemory();
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s MODEL_DIR [MEMBERS] [STEPS] [BATCH] [TOKENS] [THREADS]\n",
                 argv[0]);
    return 2;
  }
  const int members = argc > 2 ? std::atoi(argv[2]) : 4;
  const int steps = argc > 3 ? std::atoi(argv[3]) : 12;
  const int batch = argc > 4 ? std::atoi(argv[4]) : 16;
  const int tokens = argc > 5 ? std::atoi(argv[5]) : 128;
  const int threads = argc > 6 ? std::atoi(argv[6]) : 2;
  loracle::model::SetComputeThreads({1, 1});
  auto placement =
      loracle::model::ResolvePlacement(argc > 8 ? argv[8] : "cpu", argc > 9 ? argv[9] : "float32");
  if (!placement.ok()) {
    std::fprintf(stderr, "%s\n", placement.status().ToString().c_str());
    return 2;
  }
  auto base = loracle::model::LoadBaseModel(argv[1], *placement);
  if (!base.ok()) {
    std::fprintf(stderr, "%s\n", base.status().ToString().c_str());
    return 1;
  }
  const EncodedData train = Synthetic(**base, steps * batch, tokens);
  const EncodedData val = Synthetic(**base, 2, tokens);
  TrainerOptions o;
  if (argc <= 7 || std::string(argv[7]) != "none") {
    o.dropout = {loracle::model::DropoutMethod::kLoraDropout, 0.1};
  }
  o.epochs = 1;
  o.batch_size = batch;
  o.threads = threads;
  const double examples = static_cast<double>(steps * batch);
  Run(**base, train, val, o);  // warm-up
  const double one = Run(**base, train, val, o);
  o.members = members;
  o.member_schedule = TrainerOptions::MemberSchedule::kOneForward;
  const double together = Run(**base, train, val, o);
  o.member_schedule = TrainerOptions::MemberSchedule::kSequential;
  const double apart = Run(**base, train, val, o);
  std::printf("M=1: %.2f examples/s (%.2f s for %d steps of %d x %d tokens on %s, %s)\n",
              examples / one, one, steps, batch, tokens, placement->DeviceName().c_str(),
              placement->DTypeName().c_str());
  std::printf("M=%d in one forward: %.2f examples x members/s (%.2fx M=1)\n", members,
              examples * members / together, one * members / together);
  std::printf("M=%d one after another: %.2f examples x members/s (%.2fx M=1)\n", members,
              examples * members / apart, one * members / apart);
  return 0;
}
