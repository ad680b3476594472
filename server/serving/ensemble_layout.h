#ifndef LORACLE_SERVER_SERVING_ENSEMBLE_LAYOUT_H_
#define LORACLE_SERVER_SERVING_ENSEMBLE_LAYOUT_H_

// The ensemble engine's torch-free phases, shared by serving (EnsembleRunner), the trainer's
// validation report, its temperature fit and drift's reference, and the training loop's masks:
//
//   layout     LayOut: items (a Predict request, or a chunk of examples) -> forward rows and
//              row groups, each group one (adapter, member) with the dropout seed of every row.
//              The ONLY place per-pass dropout masks are seeded (PassSeed, ExampleSeed).
//   pack       ensemble_engine.h: the rows' tokens as tensors (torch)
//   forward    ensemble_engine.h: one forward of every row, each group's logits (torch)
//   summarise  GatherPasses: each input's K = members x samples pass logits, averaged over its
//              windows; Summarise: softmax at the temperature, the uncertainty summary, abstain.
//
// Pure functions; thread-safe.

#include <cstddef>
#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "server/serving/uncertainty.h"

namespace loracle::serving {

// The seed of pass (member, sample) under `seed`: with no example keys, every input of the pass
// draws its masks from it (one mask set per pass, as Predict's `seed` promises: the same request
// and seed give the same answer, whatever else is in the batch).
uint64_t PassSeed(uint64_t seed, int member, int sample);
// With example keys (training): example `example` of the pass draws its own masks, so masks
// depend neither on how examples are split into batches or shards nor on the window.
uint64_t ExampleSeed(uint64_t pass_seed, int64_t example);

// One unit of rows: members x samples passes over `encodings` encodings (input windows).
struct LayoutItem {
  const void* adapter = nullptr;  // items with the same adapter share row groups
  int first_member = 0;           // passes use members [first_member, first_member + members)
  int members = 1;
  int samples = 1;
  bool sampled = false;  // draw dropout masks (else the rows run without dropout)
  uint64_t seed = 0;
  int64_t encodings = 0;
  // Optional, one per encoding: encoding e draws ExampleSeed(pass seed, example_keys[e]).
  const std::vector<int64_t>* example_keys = nullptr;
};

struct RowRef {
  size_t item = 0;
  int64_t encoding = 0;
  int member = 0;  // absolute member index
  int sample = 0;
};

// Rows [begin, end) use member `member` of item `item`'s adapter (the adapter's first item);
// with `sampled`, row begin + i draws its masks from row_seeds[i].
struct RowGroup {
  int64_t begin = 0, end = 0;
  size_t item = 0;
  int member = 0;
  bool sampled = false;
  std::vector<uint64_t> row_seeds;
};

struct EnsembleLayout {
  std::vector<RowRef> rows;
  std::vector<RowGroup> groups;
};

// Items grouped by adapter in order of first appearance; within an adapter, member-major; within
// a member, the unsampled items' rows, then the sampled items' (two groups); within a group, item,
// sample, encoding. One item alone is therefore pass-major (member, sample), then encoding.
EnsembleLayout LayOut(const std::vector<LayoutItem>& items);

// Pass logits of one input: K = members x samples vectors of C logits, member-major.
using PassLogits = std::vector<std::vector<double>>;

// Each item's inputs' pass logits from the forward's logits: `group_logits[g]` is group g's
// row-major [rows, C] (C = `group_classes[g]`). `windows[item]` holds each input's window count
// (consecutive encodings; empty = one each); an input's pass logits are its windows' mean.
std::vector<std::vector<PassLogits>> GatherPasses(const EnsembleLayout& layout,
                                                  const std::vector<const double*>& group_logits,
                                                  const std::vector<int64_t>& group_classes,
                                                  const std::vector<std::vector<int>>& windows);

// Each pass's softmax at `temperature`, then the uncertainty summary (uncertainty.h).
absl::StatusOr<UncertaintySummary> Summarise(
    const PassLogits& passes, double temperature,
    std::vector<std::vector<double>>* pass_probs = nullptr);

}  // namespace loracle::serving

#endif  // LORACLE_SERVER_SERVING_ENSEMBLE_LAYOUT_H_
