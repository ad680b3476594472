#ifndef LORACLE_CLIENT_ARGS_H_
#define LORACLE_CLIENT_ARGS_H_

// What every `loracle` command shares: parsed flags, the error line for a failed call, deadlines.

#include <grpcpp/grpcpp.h>

#include <map>
#include <ostream>
#include <string>
#include <vector>

namespace loracle::client {

// `--name=value`, `--name value`, boolean `--name`, and positional words, in order.
struct Args {
  std::map<std::string, std::string> flags;
  std::vector<std::string> positional;
};

// Parses `argv` (without the program name). False, with the reason on `err`, on a flag with no
// value.
bool Parse(const std::vector<std::string>& argv, Args* args, std::ostream& err);

// The value of --`name`, or `def` when absent.
std::string Flag(const Args& args, const std::string& name, const std::string& def = "");

// Prints "loracle: CODE: message" for a failed call; returns exit code 1.
int Fail(std::ostream& err, const grpc::Status& s);

// The call's deadline from --timeout_ms (default 30 s).
void SetDeadline(grpc::ClientContext* ctx, const Args& args);

}  // namespace loracle::client

#endif  // LORACLE_CLIENT_ARGS_H_
