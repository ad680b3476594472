#ifndef LORACLE_SERVER_RPC_STATUS_UTIL_H_
#define LORACLE_SERVER_RPC_STATUS_UTIL_H_

#include <grpcpp/support/status.h>

#include <string>

#include "absl/status/status.h"

namespace loracle::rpc {

// absl and gRPC canonical codes are the same numbers; the message is kept.
grpc::Status ToGrpcStatus(const absl::Status& status);

}  // namespace loracle::rpc

#endif  // LORACLE_SERVER_RPC_STATUS_UTIL_H_
