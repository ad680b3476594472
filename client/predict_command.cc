#include <cstdio>
#include <fstream>
#include <iostream>
#include <map>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "client/commands.h"
#include "loracle/v1/inference.grpc.pb.h"
#include "nlohmann/json.hpp"

namespace loracle::client {
namespace {

std::string Shorten(const std::string& text, size_t n) {
  std::string one_line;
  for (char c : text) one_line.push_back(c == '\n' || c == '\t' ? ' ' : c);
  if (one_line.size() <= n) return one_line;
  size_t cut = n - 3;
  while (cut > 0 && (static_cast<unsigned char>(one_line[cut]) & 0xC0) == 0x80) --cut;  // UTF-8
  return one_line.substr(0, cut) + "...";
}

}  // namespace

int PredictCommand(const Args& args, const Channel& channel, std::ostream& out, std::ostream& err) {
  loracle::v1::PredictRequest req;
  req.set_adapter(Flag(args, "adapter"));
  if (req.adapter().empty()) {
    err << "loracle predict: --adapter=NAME is required\n";
    return 2;
  }
  std::vector<std::string> texts(args.positional.begin() + 1, args.positional.end());
  if (texts.size() == 1 && texts[0] == "-") {
    texts.clear();
    for (std::string line; std::getline(std::cin, line);) {
      if (!line.empty()) texts.push_back(line);
    }
  }
  if (texts.empty()) {
    err << "loracle predict: give at least one TEXT (or - to read lines from stdin)\n";
    return 2;
  }
  for (const std::string& t : texts) req.add_inputs(t);
  if (std::string v = Flag(args, "mc_samples"); !v.empty()) {
    uint32_t n;
    if (!absl::SimpleAtoi(v, &n)) {
      err << "loracle predict: --mc_samples must be a positive integer\n";
      return 2;
    }
    req.set_mc_samples(n);
  }
  if (std::string v = Flag(args, "seed"); !v.empty()) {
    uint64_t seed;
    if (!absl::SimpleAtoi(v, &seed)) {
      err << "loracle predict: --seed must be an integer\n";
      return 2;
    }
    req.set_seed(seed);
  }
  if (std::string v = Flag(args, "abstain_risk"); !v.empty()) {
    float r;
    if (!absl::SimpleAtof(v, &r)) {
      err << "loracle predict: --abstain_risk must be a number in (0, 1), e.g. 0.1\n";
      return 2;
    }
    req.set_abstain_risk(r);  // the server checks the range
  }
  if (std::string v = Flag(args, "coverage"); !v.empty()) {
    float c;
    if (!absl::SimpleAtof(v, &c)) {
      err << "loracle predict: --coverage must be a number in (0, 1), e.g. 0.9\n";
      return 2;
    }
    req.set_coverage(c);  // the server checks the range
  }
  req.set_return_members(Flag(args, "members") == "true");
  auto stub = loracle::v1::Inference::NewStub(channel);
  grpc::ClientContext ctx;
  SetDeadline(&ctx, args);
  loracle::v1::PredictResponse resp;
  grpc::Status s = stub->Predict(&ctx, req, &resp);
  if (!s.ok()) return Fail(err, s);

  if (Flag(args, "json") == "true") {
    nlohmann::json j;
    j["adapter"] = resp.adapter();
    j["version"] = resp.version();
    j["labels"] = std::vector<std::string>(resp.labels().begin(), resp.labels().end());
    j["members"] = resp.members();
    j["mc_samples"] = resp.mc_samples();
    j["predictions"] = nlohmann::json::array();
    for (int i = 0; i < resp.predictions_size(); ++i) {
      const auto& p = resp.predictions(i);
      const auto& u = p.uncertainty();
      nlohmann::json pj = {
          {"text", texts[static_cast<size_t>(i)]},
          {"prediction_id", p.prediction_id()},
          {"label", p.label()},
          {"label_index", p.label_index()},
          {"probs", std::vector<float>(p.probs().begin(), p.probs().end())},
          {"uncertainty",
           {{"predictive_entropy", u.predictive_entropy()},
            {"expected_entropy", u.expected_entropy()},
            {"mutual_information", u.mutual_information()},
            {"confidence", u.confidence()},
            {"error_score", u.error_score()},
            {"ood_score", u.ood_score()},
            {"prob_std", std::vector<float>(u.prob_std().begin(), u.prob_std().end())}}},
          {"abstained", p.abstained()},
          {"truncated", p.truncated()},
          {"num_tokens", p.num_tokens()},
          {"windows", p.windows()},
      };
      if (req.has_coverage()) {
        pj["prediction_set"] =
            std::vector<std::string>(p.prediction_set().begin(), p.prediction_set().end());
      }
      if (p.members_size() > 0) {
        pj["members"] = nlohmann::json::array();
        for (const auto& m : p.members()) {
          pj["members"].push_back(
              {{"member", m.member()},
               {"sample", m.sample()},
               {"probs", std::vector<float>(m.probs().begin(), m.probs().end())}});
        }
      }
      j["predictions"].push_back(pj);
    }
    out << j.dump(2) << "\n";
    return 0;
  }
  out << absl::StrFormat("adapter %s (version %d), %d member(s) x %d sample(s)\n", resp.adapter(),
                         resp.version(), resp.members(), resp.mc_samples());
  out << absl::StrFormat("%-3s %-12s %-6s %-7s %-7s %-7s %-28s %s\n", "#", "label", "conf",
                         "entropy", "mi", "flags", "probs", "text");
  for (int i = 0; i < resp.predictions_size(); ++i) {
    const auto& p = resp.predictions(i);
    std::vector<std::string> probs;
    for (int c = 0; c < p.probs_size(); ++c) {
      probs.push_back(absl::StrFormat("%s=%.3f", resp.labels(c), p.probs(c)));
    }
    std::vector<std::string> flags;
    if (p.abstained()) flags.push_back("abstain");
    if (p.truncated()) flags.push_back("trunc");
    out << absl::StrFormat("%-3d %-12s %-6.3f %-7.4f %-7.4f %-7s %-28s %s\n", i, p.label(),
                           p.uncertainty().confidence(), p.uncertainty().predictive_entropy(),
                           p.uncertainty().mutual_information(),
                           flags.empty() ? "-" : absl::StrJoin(flags, ","),
                           absl::StrJoin(probs, " "), Shorten(texts[static_cast<size_t>(i)], 40));
    if (req.has_coverage()) {
      out << absl::StrFormat("      %.0f%% set: {%s}\n", 100 * req.coverage(),
                             absl::StrJoin(p.prediction_set(), ", "));
    }
    for (const auto& m : p.members()) {
      std::vector<std::string> mp;
      for (float v : m.probs()) mp.push_back(absl::StrFormat("%.3f", v));
      out << absl::StrFormat("      member %d sample %d: %s\n", m.member(), m.sample(),
                             absl::StrJoin(mp, " "));
    }
  }
  return 0;
}

}  // namespace loracle::client
