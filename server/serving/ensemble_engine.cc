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
                                                         int parts, torch::Tensor* features) {
  model::Backbone backbone = base.backbone;  // a handle: forwards only read it
  absl::StatusOr<torch::Tensor> pooled =
      model::ForwardInParts(*backbone, rows.ids, rows.mask, rows.types, routing, parts);
  if (!pooled.ok()) return pooled.status();
  if (features != nullptr) *features = *pooled;
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

std::vector<torch::Tensor> MeanFeatures(const EnsembleLayout& layout,
                                        const torch::Tensor& row_features,
                                        const std::vector<std::vector<int>>& windows,
                                        const std::vector<bool>& wanted) {
  const size_t items = windows.size();
  // Every item's encoding -> input index, and each item's input count.
  std::vector<std::vector<int64_t>> input_of(items);
  std::vector<int64_t> inputs(items, 0);
  auto want = [&](size_t item) { return wanted.empty() || wanted[item]; };
  for (size_t item = 0; item < items; ++item) {
    if (!want(item) || windows[item].empty()) continue;
    for (int w : windows[item]) {
      input_of[item].insert(input_of[item].end(), static_cast<size_t>(w), inputs[item]);
      ++inputs[item];
    }
  }
  std::vector<std::vector<int64_t>> rows(items), targets(items);
  for (size_t r = 0; r < layout.rows.size(); ++r) {
    const RowRef& row = layout.rows[r];
    if (!want(row.item)) continue;
    const int64_t input = input_of[row.item].empty()
                              ? row.encoding
                              : input_of[row.item][static_cast<size_t>(row.encoding)];
    if (windows[row.item].empty()) inputs[row.item] = std::max(inputs[row.item], input + 1);
    rows[row.item].push_back(static_cast<int64_t>(r));
    targets[row.item].push_back(input);
  }
  const torch::Tensor host = row_features.detach().to(torch::kCPU, torch::kFloat32);
  std::vector<torch::Tensor> out(items);
  for (size_t item = 0; item < items; ++item) {
    if (rows[item].empty()) continue;
    const torch::Tensor target = torch::tensor(targets[item], torch::kInt64);
    const torch::Tensor picked = host.index_select(0, torch::tensor(rows[item], torch::kInt64));
    torch::Tensor sum = torch::zeros({inputs[item], host.size(1)}, torch::kFloat32);
    sum.index_add_(0, target, picked);
    torch::Tensor count = torch::zeros({inputs[item]}, torch::kFloat32);
    count.index_add_(0, target, torch::ones({target.size(0)}, torch::kFloat32));
    out[item] = sum / count.clamp_min(1.0).unsqueeze(1);
  }
  return out;
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
