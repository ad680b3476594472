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
#include "client/commands.h"
#include "loracle/v1/adapters.grpc.pb.h"
#include "nlohmann/json.hpp"

namespace loracle::client {
namespace {

const char* StateName(loracle::v1::AdapterState s) {
  switch (s) {
    case loracle::v1::ADAPTER_STATE_LOADING:
      return "LOADING";
    case loracle::v1::ADAPTER_STATE_READY:
      return "READY";
    case loracle::v1::ADAPTER_STATE_UNLOADING:
      return "UNLOADING";
    case loracle::v1::ADAPTER_STATE_FAILED:
      return "FAILED";
    default:
      return "UNSPECIFIED";
  }
}

nlohmann::json AdapterJson(const loracle::v1::AdapterInfo& a) {
  return {{"name", a.name()},
          {"version", a.version()},
          {"state", StateName(a.state())},
          {"error", a.error()},
          {"labels", std::vector<std::string>(a.labels().begin(), a.labels().end())},
          {"members", a.members()},
          {"mc_samples", a.mc_samples()},
          {"temperature", a.temperature()},
          {"max_windows", a.max_windows()},
          {"window_length", a.window_length()},
          {"rank", a.rank()},
          {"lora_alpha", a.lora_alpha()},
          {"path", a.path()},
          {"resident", a.resident()},
          {"memory_bytes", a.memory_bytes()},
          {"base_fingerprint", a.base_fingerprint()},
          {"base_verified", a.base_verified()}};
}

}  // namespace

int AdaptersCommand(const Args& args, const Channel& channel, std::ostream& out,
                    std::ostream& err) {
  auto stub = loracle::v1::Adapters::NewStub(channel);
  const std::string sub = args.positional.size() > 1 ? args.positional[1] : "list";
  const bool json = Flag(args, "json") == "true";
  grpc::ClientContext ctx;
  SetDeadline(&ctx, args);
  if (sub == "list") {
    loracle::v1::ListAdaptersResponse resp;
    grpc::Status s = stub->List(&ctx, loracle::v1::ListAdaptersRequest(), &resp);
    if (!s.ok()) return Fail(err, s);
    if (json) {
      nlohmann::json j = nlohmann::json::array();
      for (const auto& a : resp.adapters()) j.push_back(AdapterJson(a));
      out << j.dump(2) << "\n";
      return 0;
    }
    out << absl::StrFormat("%-24s %-8s %-8s %-8s %-5s %-10s %s\n", "name", "version", "state",
                           "members", "rank", "memory", "labels");
    for (const auto& a : resp.adapters()) {
      // Evicted under --adapter_memory_bytes: served, reloaded on the next request.
      const std::string memory = a.state() != loracle::v1::ADAPTER_STATE_READY ? "-"
                                 : a.resident()
                                     ? absl::StrFormat("%.1f MiB", a.memory_bytes() / 1048576.0)
                                     : "evicted";
      out << absl::StrFormat("%-24s %-8d %-8s %-8d %-5d %-10s %s%s\n", a.name(), a.version(),
                             StateName(a.state()), a.members(), a.rank(), memory,
                             absl::StrJoin(a.labels(), ","),
                             a.error().empty() ? "" : "  error: " + a.error());
    }
    return 0;
  }
  if (sub == "get" && args.positional.size() == 3) {
    loracle::v1::GetAdapterRequest req;
    req.set_name(args.positional[2]);
    loracle::v1::AdapterInfo resp;
    grpc::Status s = stub->Get(&ctx, req, &resp);
    if (!s.ok()) return Fail(err, s);
    out << AdapterJson(resp).dump(2) << "\n";
    return 0;
  }
  if (sub == "load" && args.positional.size() == 3) {
    loracle::v1::LoadAdapterRequest req;
    req.set_name(args.positional[2]);
    if (const std::string v = Flag(args, "version"); !v.empty()) {
      int64_t version = 0;
      if (!absl::SimpleAtoi(v, &version) || version < 1) {
        err << "loracle adapters load: --version must be a positive integer\n";
        return 2;
      }
      req.set_version(version);
    }
    req.set_path(Flag(args, "path"));
    loracle::v1::AdapterInfo resp;
    grpc::Status s = stub->Load(&ctx, req, &resp);
    if (!s.ok()) return Fail(err, s);
    if (json) {
      out << AdapterJson(resp).dump(2) << "\n";
    } else {
      out << "loaded " << resp.name() << " version " << resp.version() << "\n";
    }
    return 0;
  }
  if (sub == "unload" && args.positional.size() == 3) {
    loracle::v1::UnloadAdapterRequest req;
    req.set_name(args.positional[2]);
    loracle::v1::UnloadAdapterResponse resp;
    grpc::Status s = stub->Unload(&ctx, req, &resp);
    if (!s.ok()) return Fail(err, s);
    if (!json) out << "unloaded " << req.name() << "\n";
    return 0;
  }
  err << "loracle adapters: expected 'list', 'get NAME', 'load NAME [--version=V | --path=DIR]' "
         "or 'unload NAME'\n";
  return 2;
}

}  // namespace loracle::client
