// loracle-bench-fixture: writes the benchmark's base model and adapter store.
//   loracle-bench-fixture OUT_DIR [LAYERS=4] [HIDDEN=512] [ADAPTERS=64]
// OUT_DIR/model: a random BERT (LAYERS x HIDDEN, FFN 4*HIDDEN, built-in vocabulary).
// OUT_DIR/adapters: a0..a{ADAPTERS-1} (rank 8 on query+value, 2 labels), ens8 (an 8-member
// ensemble of the same), base (a head only: no LoRA layers, the base model's cost).

#include <cstdio>
#include <cstdlib>
#include <string>

#include "absl/strings/str_cat.h"
#include "server/adapters/adapter_files.h"
#include "server/adapters/store.h"
#include "server/model/default_model.h"

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s OUT_DIR [LAYERS] [HIDDEN] [ADAPTERS]\n", argv[0]);
    return 2;
  }
  const std::string out = argv[1];
  loracle::model::ModelConfig config = loracle::model::DefaultModelConfig();
  config.num_hidden_layers = argc > 2 ? std::atoi(argv[2]) : 4;
  config.hidden_size = argc > 3 ? std::atoi(argv[3]) : 512;
  config.num_attention_heads = config.hidden_size / 64;
  config.intermediate_size = 4 * config.hidden_size;
  const int adapters = argc > 4 ? std::atoi(argv[4]) : 64;
  auto fail = [](const absl::Status& s) {
    std::fprintf(stderr, "loracle-bench-fixture: %s\n", s.ToString().c_str());
    return 1;
  };
  if (auto s = loracle::model::WriteRandomBertCheckpoint(out + "/model", config,
                                                         loracle::model::DefaultVocab(), 1);
      !s.ok()) {
    return fail(s);
  }
  auto store = loracle::adapters::Store::Create({out + "/adapters"});
  if (!store.ok()) return fail(store.status());
  auto publish = [&](const std::string& name, int members, std::vector<std::string> targets,
                     uint64_t seed) {
    loracle::adapters::RandomAdapterSpec spec;
    spec.serving.labels = {"ham", "spam"};
    spec.serving.members = members;
    spec.lora.rank = 8;
    spec.lora.lora_alpha = 16;
    spec.lora.target_modules = std::move(targets);
    spec.seed = seed;
    return (*store)
        ->Publish(name,
                  [&](const std::string& dir) {
                    return loracle::adapters::WriteRandomAdapter(dir, config, spec);
                  })
        .status();
  };
  for (int i = 0; i < adapters; ++i) {
    if (auto s = publish(absl::StrCat("a", i), 1, {"query", "value"}, 100 + i); !s.ok())
      return fail(s);
  }
  if (auto s = publish("ens8", 8, {"query", "value"}, 7); !s.ok()) return fail(s);
  if (auto s = publish("base", 1, {"no_such_module"}, 9); !s.ok()) return fail(s);
  std::printf("wrote %s/model (%lld layers, hidden %lld) and %d+2 adapters\n", out.c_str(),
              static_cast<long long>(config.num_hidden_layers),
              static_cast<long long>(config.hidden_size), adapters);
  return 0;
}
