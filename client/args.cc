#include "client/args.h"

#include <chrono>
#include <cstdint>

#include "absl/strings/numbers.h"
#include "client/bench.h"

namespace loracle::client {
namespace {

const char* const kBoolFlags[] = {"json",   "members",  "help",          "detach",
                                  "rslora", "feedback", "check_versions"};

bool IsBool(const std::string& name) {
  for (const char* b : kBoolFlags)
    if (name == b) return true;
  return false;
}

}  // namespace

bool Parse(const std::vector<std::string>& argv, Args* args, std::ostream& err) {
  for (size_t i = 0; i < argv.size(); ++i) {
    const std::string& a = argv[i];
    if (a.size() > 2 && a.compare(0, 2, "--") == 0) {
      std::string name = a.substr(2), value;
      const size_t eq = name.find('=');
      if (eq != std::string::npos) {
        value = name.substr(eq + 1);
        name = name.substr(0, eq);
      } else if (IsBool(name)) {
        value = "true";
      } else if (i + 1 < argv.size()) {
        value = argv[++i];
      } else {
        err << "loracle: flag --" << name << " needs a value\n";
        return false;
      }
      args->flags[name] = value;
    } else {
      args->positional.push_back(a);
    }
  }
  return true;
}

std::string Flag(const Args& args, const std::string& name, const std::string& def) {
  auto it = args.flags.find(name);
  return it == args.flags.end() ? def : it->second;
}

int Fail(std::ostream& err, const grpc::Status& s) {
  err << "loracle: " << CodeName(s) << ": " << s.error_message() << "\n";
  return 1;
}

void SetDeadline(grpc::ClientContext* ctx, const Args& args) {
  int64_t ms = 30000;
  if (!absl::SimpleAtoi(Flag(args, "timeout_ms", "30000"), &ms)) ms = 30000;
  ctx->set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(ms));
}

}  // namespace loracle::client
