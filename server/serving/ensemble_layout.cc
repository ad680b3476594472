#include "server/serving/ensemble_layout.h"

#include <algorithm>
#include <utility>

#include "server/model/dropout.h"

namespace loracle::serving {

uint64_t PassSeed(uint64_t seed, int member, int sample) {
  return model::MixSeed(seed, static_cast<uint64_t>(member), static_cast<uint64_t>(sample));
}

uint64_t ExampleSeed(uint64_t pass_seed, int64_t example) {
  return model::MixSeed(pass_seed, static_cast<uint64_t>(example));
}

EnsembleLayout LayOut(const std::vector<LayoutItem>& items) {
  // Adapters in order of first appearance, each with its items.
  std::vector<std::vector<size_t>> by_adapter;
  std::vector<const void*> adapters;
  for (size_t i = 0; i < items.size(); ++i) {
    size_t a = 0;
    while (a < adapters.size() && adapters[a] != items[i].adapter) ++a;
    if (a == adapters.size()) {
      adapters.push_back(items[i].adapter);
      by_adapter.emplace_back();
    }
    by_adapter[a].push_back(i);
  }
  EnsembleLayout out;
  for (const std::vector<size_t>& group_items : by_adapter) {
    int first = items[group_items[0]].first_member, last = first;
    for (size_t i : group_items) {
      first = std::min(first, items[i].first_member);
      last = std::max(last, items[i].first_member + items[i].members);
    }
    for (int m = first; m < last; ++m) {
      for (const bool sampled : {false, true}) {
        RowGroup g;
        g.begin = static_cast<int64_t>(out.rows.size());
        g.item = group_items[0];
        g.member = m;
        g.sampled = sampled;
        for (size_t i : group_items) {
          const LayoutItem& it = items[i];
          if (it.sampled != sampled || m < it.first_member || m >= it.first_member + it.members) {
            continue;
          }
          for (int s = 0; s < it.samples; ++s) {
            const uint64_t pass = PassSeed(it.seed, m, s);
            for (int64_t e = 0; e < it.encodings; ++e) {
              out.rows.push_back({i, e, m, s});
              if (sampled) {
                g.row_seeds.push_back(
                    it.example_keys == nullptr ? pass : ExampleSeed(pass, (*it.example_keys)[e]));
              }
            }
          }
        }
        g.end = static_cast<int64_t>(out.rows.size());
        if (g.end > g.begin) out.groups.push_back(std::move(g));
      }
    }
  }
  return out;
}

std::vector<std::vector<PassLogits>> GatherPasses(const EnsembleLayout& layout,
                                                  const std::vector<const double*>& group_logits,
                                                  const std::vector<int64_t>& group_classes,
                                                  const std::vector<std::vector<int>>& windows) {
  // Every encoding's K logit vectors (rows of one encoding come member-major, then sample).
  std::vector<std::vector<PassLogits>> encodings(windows.size());
  for (const RowRef& row : layout.rows) {
    std::vector<PassLogits>& e = encodings[row.item];
    if (static_cast<int64_t>(e.size()) <= row.encoding) e.resize(row.encoding + 1);
  }
  for (size_t g = 0; g < layout.groups.size(); ++g) {
    const RowGroup& group = layout.groups[g];
    const int64_t classes = group_classes[g];
    for (int64_t k = group.begin; k < group.end; ++k) {
      const RowRef& row = layout.rows[static_cast<size_t>(k)];
      const double* p = group_logits[g] + (k - group.begin) * classes;
      encodings[row.item][static_cast<size_t>(row.encoding)].emplace_back(p, p + classes);
    }
  }
  // Each input's windows averaged, pass by pass.
  std::vector<std::vector<PassLogits>> out(windows.size());
  for (size_t item = 0; item < windows.size(); ++item) {
    std::vector<PassLogits>& enc = encodings[item];
    const size_t inputs = windows[item].empty() ? enc.size() : windows[item].size();
    size_t first = 0;
    for (size_t i = 0; i < inputs; ++i) {
      const size_t count = windows[item].empty() ? 1 : static_cast<size_t>(windows[item][i]);
      PassLogits sum = std::move(enc[first]);
      for (size_t w = 1; w < count; ++w) {
        const PassLogits& more = enc[first + w];
        for (size_t k = 0; k < sum.size(); ++k) {
          for (size_t c = 0; c < sum[k].size(); ++c) sum[k][c] += more[k][c];
        }
      }
      if (count > 1) {
        for (std::vector<double>& pass : sum) {
          for (double& v : pass) v /= static_cast<double>(count);
        }
      }
      out[item].push_back(std::move(sum));
      first += count;
    }
  }
  return out;
}

absl::StatusOr<UncertaintySummary> Summarise(const PassLogits& passes, double temperature,
                                             std::vector<std::vector<double>>* pass_probs) {
  std::vector<std::vector<double>> probs;
  probs.reserve(passes.size());
  for (const std::vector<double>& pass : passes) probs.push_back(Softmax(pass, temperature));
  absl::StatusOr<UncertaintySummary> s = Summarize(probs);
  if (s.ok() && pass_probs != nullptr) *pass_probs = std::move(probs);
  return s;
}

}  // namespace loracle::serving
