// loracle-ood-study: which features make a good out-of-distribution score for a fine-tuned
// adapter. For one adapter and one trust dataset (tests/bench/make_trust_sets.py), computes per
// text several feature kinds (each member's pass without dropout, averaged over members; "base" =
// the frozen model without the adapter), fits model::OodDetector on the training split's
// features (class-conditional, shared Ledoit-Wolf covariance; "marginal" = one class), scales by
// the validation 95% quantile, and prints the AUROC of separating near_ood.jsonl and
// far_ood.jsonl from test.jsonl, for each kind and for sums of two kinds' scaled scores.
//
//   loracle-ood-study ADAPTER_DIR DATASET_DIR [MODEL_DIR]
//
// A study tool, not a test: the server's choice (pooled features with the adapter) is
// documented in tests/bench/README.md with this tool's output.

#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_format.h"
#include "server/adapters/adapter_weights.h"
#include "server/data/examples.h"
#include "server/model/backbone.h"
#include "server/model/checkpoint.h"
#include "server/model/cpu_runtime.h"
#include "server/model/default_model.h"
#include "server/model/ood_detector.h"

namespace {

using loracle::model::OodDetector;

struct Split {
  std::vector<std::string> texts;
  std::vector<int> labels;
};

Split Read(const std::string& path, const std::vector<std::string>& labels) {
  Split s;
  auto ex = loracle::data::ReadExamples(path);
  if (!ex.ok()) return s;
  for (const auto& e : *ex) {
    s.texts.push_back(e.text);
    const auto it = std::find(labels.begin(), labels.end(), e.label);
    s.labels.push_back(it == labels.end() ? 0 : static_cast<int>(it - labels.begin()));
  }
  return s;
}

// kind -> [n, H] features of `texts`.
std::map<std::string, torch::Tensor> Features(const loracle::model::BaseModel& base,
                                              const loracle::adapters::Adapter& adapter,
                                              const std::vector<std::string>& texts) {
  torch::InferenceMode guard;
  std::map<std::string, std::vector<torch::Tensor>> parts;
  const auto& members = loracle::adapters::MembersOf(adapter);
  for (size_t start = 0; start < texts.size(); start += 64) {
    const size_t end = std::min(texts.size(), start + 64);
    std::vector<std::vector<int64_t>> rows;
    size_t seq = 1;
    for (size_t i = start; i < end; ++i) {
      auto ids = base.tokenizer->TokenizeToIds(texts[i]);
      auto w = base.tokenizer->Windows(*ids, 128, 1);
      rows.push_back((*w)[0].input_ids);
      seq = std::max(seq, rows.back().size());
    }
    const int64_t n = static_cast<int64_t>(rows.size());
    torch::Tensor ids =
        torch::full({n, static_cast<int64_t>(seq)}, base.tokenizer->pad_id(), torch::kInt64);
    torch::Tensor mask = torch::zeros({n, static_cast<int64_t>(seq)}, torch::kInt64);
    for (int64_t r = 0; r < n; ++r) {
      for (size_t t = 0; t < rows[static_cast<size_t>(r)].size(); ++t) {
        ids[r][static_cast<int64_t>(t)] = rows[static_cast<size_t>(r)][t];
        mask[r][static_cast<int64_t>(t)] = 1;
      }
    }
    const torch::Tensor types = torch::zeros_like(ids);
    const torch::Tensor m = mask.unsqueeze(2).to(torch::kFloat32);
    auto add = [&](const std::string& prefix, const loracle::model::LoraRouting* routing,
                   std::map<std::string, torch::Tensor>* sums) {
      loracle::model::Backbone backbone = base.backbone;  // a handle: forwards only read it
      const torch::Tensor pooled = backbone->forward(ids, mask, types, routing);
      const torch::Tensor h = backbone->HiddenStates(ids, mask, types, routing);
      const torch::Tensor mean = (h * m).sum(1) / m.sum(1);
      const torch::Tensor cls = h.select(1, 0);
      for (auto& [k, v] : std::vector<std::pair<std::string, torch::Tensor>>{
               {prefix + "pooled", pooled}, {prefix + "cls", cls}, {prefix + "mean", mean}}) {
        auto it = sums->find(k);
        if (it == sums->end()) {
          sums->emplace(k, v.to(torch::kFloat64));
        } else {
          it->second += v.to(torch::kFloat64);
        }
      }
    };
    std::map<std::string, torch::Tensor> sums;
    for (const auto& member : members) {
      loracle::model::LoraRouting routing(1);
      routing[0].begin = 0;
      routing[0].end = n;
      routing[0].member = &member;
      add("adapter_", &routing, &sums);
    }
    for (auto& [k, v] : sums) parts[k].push_back(v / static_cast<double>(members.size()));
    std::map<std::string, torch::Tensor> base_sums;
    add("base_", nullptr, &base_sums);
    for (auto& [k, v] : base_sums) parts[k].push_back(v);
  }
  std::map<std::string, torch::Tensor> out;
  for (auto& [k, v] : parts) out[k] = torch::cat(v);
  return out;
}

double Auroc(const torch::Tensor& pos, const torch::Tensor& neg) {
  std::vector<std::pair<double, int>> all;
  for (int64_t i = 0; i < pos.size(0); ++i) all.emplace_back(pos[i].item<double>(), 1);
  for (int64_t i = 0; i < neg.size(0); ++i) all.emplace_back(neg[i].item<double>(), 0);
  std::sort(all.begin(), all.end());
  double rank_sum = 0;
  for (size_t i = 0; i < all.size();) {
    size_t j = i;
    while (j < all.size() && all[j].first == all[i].first) ++j;
    const double avg = (static_cast<double>(i + j) + 1) / 2;
    for (size_t k = i; k < j; ++k) rank_sum += all[k].second ? avg : 0;
    i = j;
  }
  const double n1 = static_cast<double>(pos.size(0)), n0 = static_cast<double>(neg.size(0));
  return (rank_sum - n1 * (n1 + 1) / 2) / (n1 * n0);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: loracle-ood-study ADAPTER_DIR DATASET_DIR [MODEL_DIR]\n");
    return 2;
  }
  loracle::model::SetComputeThreads({2, 2});
  std::string model_dir = argc > 3 ? argv[3] : *loracle::model::BuiltinModelDir();
  auto base = loracle::model::LoadBaseModel(model_dir);
  if (!base.ok()) {
    std::fprintf(stderr, "%s\n", base.status().ToString().c_str());
    return 1;
  }
  auto adapter = loracle::adapters::LoadAdapter(argv[1], "study", 1, **base);
  if (!adapter.ok()) {
    std::fprintf(stderr, "%s\n", adapter.status().ToString().c_str());
    return 1;
  }
  const std::vector<std::string>& labels = (*adapter)->serving.labels;
  const std::string d = argv[2];
  std::map<std::string, Split> splits;
  for (const char* s : {"train", "validation", "test", "near_ood", "far_ood"}) {
    splits[s] = Read(d + "/" + s + ".jsonl", labels);
  }
  std::map<std::string, std::map<std::string, torch::Tensor>> feats;  // split -> kind -> [n, H]
  for (auto& [name, split] : splits) feats[name] = Features(**base, **adapter, split.texts);
  // kind -> split -> score (distance / validation 95% quantile)
  std::map<std::string, std::map<std::string, torch::Tensor>> scores;
  for (const auto& [kind, train] : feats["train"]) {
    for (bool marginal : {false, true}) {
      std::vector<int> y = splits["train"].labels;
      if (marginal) std::fill(y.begin(), y.end(), 0);
      auto det = OodDetector::Fit(train, y, static_cast<int>(labels.size()));
      if (!det.ok()) continue;
      const torch::Tensor v = det->Distances(feats["validation"][kind]);
      const double q = torch::quantile(v, 0.95).item<double>();
      const std::string name = kind + (marginal ? "/marginal" : "/classes");
      for (const char* s : {"test", "near_ood", "far_ood"}) {
        scores[name][s] = det->Distances(feats[s][kind]) / q;
      }
    }
  }
  std::printf("| score | near-OOD AUROC | far-OOD AUROC |\n|---|---|---|\n");
  auto row = [](const std::string& name, std::map<std::string, torch::Tensor>& s) {
    std::printf("| %s | %.3f | %.3f |\n", name.c_str(), Auroc(s["near_ood"], s["test"]),
                Auroc(s["far_ood"], s["test"]));
  };
  for (auto& [name, s] : scores) row(name, s);
  // Sums of two scaled scores.
  std::vector<std::string> names;
  for (auto& [name, s] : scores) names.push_back(name);
  std::vector<std::pair<double, std::string>> best;
  for (size_t a = 0; a < names.size(); ++a) {
    for (size_t b = a + 1; b < names.size(); ++b) {
      std::map<std::string, torch::Tensor> sum;
      for (const char* s : {"test", "near_ood", "far_ood"}) {
        sum[s] = scores[names[a]][s] + scores[names[b]][s];
      }
      const double near = Auroc(sum["near_ood"], sum["test"]);
      const double far = Auroc(sum["far_ood"], sum["test"]);
      best.emplace_back(std::min(near, far), names[a] + " + " + names[b] +
                                                 absl::StrFormat(" | %.3f | %.3f |", near, far));
    }
  }
  std::sort(best.rbegin(), best.rend());
  std::printf("\nbest sums by the worse of the two AUROCs:\n");
  for (size_t i = 0; i < std::min<size_t>(8, best.size()); ++i) {
    std::printf("| %s\n", best[i].second.c_str());
  }
  return 0;
}
