// `loracle feedback ID LABEL` or `loracle feedback --file=F.jsonl`, and `loracle calibration
// ADAPTER`: the online calibration report with a text reliability diagram.

#include <google/protobuf/util/json_util.h>

#include <fstream>
#include <string>

#include "absl/strings/str_format.h"
#include "client/commands.h"
#include "loracle/v1/inference.grpc.pb.h"
#include "nlohmann/json.hpp"

namespace loracle::client {
namespace {

// Reads `{"prediction_id": ..., "label": ...}` lines (true_label is accepted for label). False,
// with the file and line on `err`, on a bad line.
bool ReadFeedbackFile(const std::string& path, loracle::v1::FeedbackRequest* req,
                      std::ostream& err) {
  std::ifstream in(path);
  if (!in) {
    err << "loracle feedback: cannot read " << path << "\n";
    return false;
  }
  int n = 0;
  for (std::string line; std::getline(in, line);) {
    ++n;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    const nlohmann::json j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    const char* label_key = j.is_object() && j.contains("true_label") ? "true_label" : "label";
    if (!j.is_object() || !j.contains("prediction_id") || !j["prediction_id"].is_string() ||
        !j.contains(label_key) || !j[label_key].is_string()) {
      err << "loracle feedback: " << path << ":" << n
          << ": expected {\"prediction_id\": \"...\", \"label\": \"...\"}\n";
      return false;
    }
    loracle::v1::FeedbackItem* item = req->add_items();
    item->set_prediction_id(j["prediction_id"].get<std::string>());
    item->set_true_label(j[label_key].get<std::string>());
  }
  return true;
}

void PrintReport(const char* title, const loracle::v1::OnlineReport& r, std::ostream& out) {
  out << absl::StrFormat(
      "  %-11s labelled %llu  accuracy %.4f  ECE %.4f  MCE %.4f  NLL %.4f  "
      "Brier %.4f\n",
      title, static_cast<unsigned long long>(r.labelled()), r.accuracy(), r.ece(), r.mce(), r.nll(),
      r.brier());
}

// One row per non-empty bin: accuracy as a bar, '|' at the bin's mean confidence (a calibrated
// bin's bar ends at its '|').
void PrintDiagram(const loracle::v1::OnlineReport& r, std::ostream& out) {
  constexpr int kWidth = 40;
  out << "  confidence bin   count  mean conf  accuracy\n";
  for (const loracle::v1::ReliabilityBin& b : r.bins()) {
    if (b.count() == 0) continue;
    std::string bar(kWidth, ' ');
    const int filled = static_cast<int>(b.accuracy() * kWidth + 0.5f);
    for (int i = 0; i < filled && i < kWidth; ++i) bar[static_cast<size_t>(i)] = '#';
    const int mark = std::min(kWidth - 1, static_cast<int>(b.mean_confidence() * kWidth));
    bar[static_cast<size_t>(mark)] = '|';
    out << absl::StrFormat("  (%.3f, %.3f] %7llu  %9.3f  %8.3f  %s\n", b.upper() - 1.0f / 15,
                           b.upper(), static_cast<unsigned long long>(b.count()),
                           b.mean_confidence(), b.accuracy(), bar);
  }
}

}  // namespace

int FeedbackCommand(const Args& args, const Channel& channel, std::ostream& out,
                    std::ostream& err) {
  loracle::v1::FeedbackRequest req;
  const std::string file = Flag(args, "file");
  if (!file.empty()) {
    if (!ReadFeedbackFile(file, &req, err)) return 2;
  } else if (args.positional.size() == 3) {
    req.set_prediction_id(args.positional[1]);
    req.set_true_label(args.positional[2]);
  } else {
    err << "usage: loracle feedback PREDICTION_ID LABEL | loracle feedback --file=F.jsonl\n";
    return 2;
  }
  auto stub = loracle::v1::Inference::NewStub(channel);
  grpc::ClientContext ctx;
  SetDeadline(&ctx, args);
  loracle::v1::FeedbackResponse resp;
  const grpc::Status s = stub->Feedback(&ctx, req, &resp);
  if (!s.ok()) return Fail(err, s);
  if (Flag(args, "json") == "true") {
    std::string json;
    google::protobuf::util::JsonPrintOptions o;
    o.preserve_proto_field_names = true;
    (void)google::protobuf::util::MessageToJsonString(resp, &json, o);
    out << json << "\n";
  } else {
    out << "recorded " << resp.recorded() << ", duplicates " << resp.duplicates() << "\n";
  }
  int failed = 0;
  for (const loracle::v1::FeedbackResult& r : resp.results()) {
    if (r.code() == 0) continue;
    ++failed;
    err << r.prediction_id() << ": " << r.message() << "\n";
  }
  return failed > 0 ? 1 : 0;
}

int CalibrationCommand(const Args& args, const Channel& channel, std::ostream& out,
                       std::ostream& err) {
  if (args.positional.size() != 2) {
    err << "usage: loracle calibration ADAPTER\n";
    return 2;
  }
  auto stub = loracle::v1::Inference::NewStub(channel);
  grpc::ClientContext ctx;
  SetDeadline(&ctx, args);
  loracle::v1::OnlineCalibrationRequest req;
  req.set_adapter(args.positional[1]);
  loracle::v1::OnlineCalibrationResponse resp;
  const grpc::Status s = stub->OnlineCalibration(&ctx, req, &resp);
  if (!s.ok()) return Fail(err, s);
  if (Flag(args, "json") == "true") {
    std::string json;
    google::protobuf::util::JsonPrintOptions o;
    o.add_whitespace = true;
    o.preserve_proto_field_names = true;
    (void)google::protobuf::util::MessageToJsonString(resp, &json, o);
    out << json;
    return 0;
  }
  if (resp.versions().empty()) {
    out << "adapter " << resp.adapter() << ": no predictions yet\n";
    return 0;
  }
  for (const loracle::v1::VersionCalibration& v : resp.versions()) {
    out << "adapter " << resp.adapter() << " version " << v.version()
        << " (duplicates ignored: " << v.duplicates() << ")\n";
    out << "  predictions " << v.predictions();
    if (v.has_psi_confidence()) {
      out << absl::StrFormat("  drift PSI: confidence %.3f, mutual information %.3f (vs %s)",
                             v.psi_confidence(), v.psi_mutual_information(), v.drift_reference());
    } else {
      out << "  drift: no reference yet";
    }
    out << "\n";
    PrintReport("since load", v.since_load(), out);
    PrintReport("recent", v.recent(), out);
    out << "  reliability since load ('#' accuracy, '|' mean confidence):\n";
    PrintDiagram(v.since_load(), out);
  }
  return 0;
}

}  // namespace loracle::client
