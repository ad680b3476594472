#ifndef LORACLE_CLIENT_COMMANDS_H_
#define LORACLE_CLIENT_COMMANDS_H_

// The `loracle` commands, one file each. Each returns the process exit code: 0 ok, 1 the server
// returned an error, 2 usage.

#include <grpcpp/grpcpp.h>

#include <memory>
#include <ostream>

#include "client/args.h"

namespace loracle::client {

using Channel = std::shared_ptr<grpc::Channel>;

int PredictCommand(const Args& args, const Channel& channel, std::ostream& out, std::ostream& err);
int AdaptersCommand(const Args& args, const Channel& channel, std::ostream& out, std::ostream& err);
int BenchCommand(const Args& args, const Channel& channel, std::ostream& out, std::ostream& err);
int FinetuneCommand(const Args& args, const Channel& channel, std::ostream& out, std::ostream& err);
int FeedbackCommand(const Args& args, const Channel& channel, std::ostream& out, std::ostream& err);
int CalibrationCommand(const Args& args, const Channel& channel, std::ostream& out,
                       std::ostream& err);
int JobsCommand(const Args& args, const Channel& channel, std::ostream& out, std::ostream& err);

}  // namespace loracle::client

#endif  // LORACLE_CLIENT_COMMANDS_H_
