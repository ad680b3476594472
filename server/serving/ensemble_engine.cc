#include "server/serving/ensemble_engine.h"

#include <algorithm>
#include <utility>

#include "server/model/backbone.h"
#include "server/model/checkpoint.h"

namespace loracle::serving {

PackedRows PackRows(const EnsembleLayout& layout,
                    const std::function<const text::Encoding&(const RowRef&)>& encoding,
                    int64_t pad_id) {
  const int64_t n = static_cast<int64_t>(layout.rows.size());
  int64_t seq = 1;
  for (const RowRef& row : layout.rows) {
    seq = std::max<int64_t>(seq, static_cast<int64_t>(encoding(row).input_ids.size()));
  }
  PackedRows p;
  p.ids = torch::full({n, seq}, pad_id, torch::kInt64);
  p.mask = torch::zeros({n, seq}, torch::kInt64);
  p.types = torch::zeros({n, seq}, torch::kInt64);
  auto ids = p.ids.accessor<int64_t, 2>();
  auto mask = p.mask.accessor<int64_t, 2>();
  auto types = p.types.accessor<int64_t, 2>();
  for (int64_t k = 0; k < n; ++k) {
    const text::Encoding& e = encoding(layout.rows[static_cast<size_t>(k)]);
    for (size_t t = 0; t < e.input_ids.size(); ++t) {
      ids[k][static_cast<int64_t>(t)] = e.input_ids[t];
      mask[k][static_cast<int64_t>(t)] = 1;
      types[k][static_cast<int64_t>(t)] = e.token_type_ids[t];
    }
  }
  return p;
}

model::LoraRouting Route(
    const EnsembleLayout& layout,
    const std::function<const std::vector<model::LoraMember>&(size_t item)>& members_of,
    const std::function<const model::DropoutSpec*(size_t item)>& dropout_of) {
  model::LoraRouting routing;
  routing.reserve(layout.groups.size());
  for (const RowGroup& g : layout.groups) {
    model::LoraGroup r;
    r.begin = g.begin;
    r.end = g.end;
    r.member = &members_of(g.item)[static_cast<size_t>(g.member)];
    if (g.sampled) {
      r.dropout = dropout_of(g.item);
      r.row_seeds = g.row_seeds;
    }
    routing.push_back(std::move(r));
  }
  return routing;
}

absl::StatusOr<std::vector<torch::Tensor>> ForwardLogits(const model::BaseModel& base,
                                                         const PackedRows& rows,
                                                         const model::LoraRouting& routing,
                                                         int parts) {
  model::Backbone backbone = base.backbone;  // a handle: forwards only read it
  absl::StatusOr<torch::Tensor> pooled =
      model::ForwardInParts(*backbone, rows.ids, rows.mask, rows.types, routing, parts);
  if (!pooled.ok()) return pooled.status();
  // Every group's logits, flattened into one tensor: one copy back to the host.
  std::vector<torch::Tensor> flat;
  std::vector<int64_t> classes;
  for (torch::Tensor& l : model::BackboneImpl::Classify(*pooled, routing)) {
    classes.push_back(l.size(1));
    flat.push_back(l.to(torch::kFloat64).reshape({-1}));
  }
  const torch::Tensor host = torch::cat(flat).to(torch::kCPU).contiguous();
  std::vector<torch::Tensor> logits;
  int64_t offset = 0;
  for (size_t g = 0; g < routing.size(); ++g) {
    const int64_t n = routing[g].end - routing[g].begin;
    logits.push_back(host.narrow(0, offset, n * classes[g]).view({n, classes[g]}));
    offset += n * classes[g];
  }
  return logits;
}

std::vector<std::vector<PassLogits>> GatherPasses(const EnsembleLayout& layout,
                                                  const std::vector<torch::Tensor>& group_logits,
                                                  const std::vector<std::vector<int>>& windows) {
  std::vector<const double*> data;
  std::vector<int64_t> classes;
  for (const torch::Tensor& l : group_logits) {
    data.push_back(l.data_ptr<double>());
    classes.push_back(l.size(1));
  }
  return GatherPasses(layout, data, classes, windows);
}

}  // namespace loracle::serving
