#ifndef LORACLE_CLIENT_CLI_H_
#define LORACLE_CLIENT_CLI_H_

#include <ostream>
#include <string>
#include <vector>

namespace loracle::client {

// Runs `loracle <command> ...` (args exclude the program name), writing results to `out` and
// errors to `err`. Returns the process exit code: 0 ok, 1 the server returned an error, 2 usage.
int RunCli(const std::vector<std::string>& args, std::ostream& out, std::ostream& err);

}  // namespace loracle::client

#endif  // LORACLE_CLIENT_CLI_H_
