#ifndef LORACLE_CLIENT_CHANNEL_H_
#define LORACLE_CLIENT_CHANNEL_H_

// The CLI's channel to the server: plain or TLS, with an optional bearer token on every call.

#include <grpcpp/grpcpp.h>

#include <memory>
#include <ostream>
#include <string>

#include "client/args.h"

namespace loracle::client {

// From the common flags:
//   --tls                 TLS with the system's CA roots
//   --tls_ca=FILE         TLS, trusting the PEM CA bundle FILE (implies --tls)
//   --tls_cert/--tls_key  a client certificate and key, for servers that require one
//   --token_file=FILE     the bearer token (the file's first line); else $LORACLE_TOKEN
// Null, with the reason on `err`, when a file cannot be read or the flags do not go together.
std::shared_ptr<grpc::Channel> MakeChannel(const std::string& target, const Args& args,
                                           std::ostream& err);

}  // namespace loracle::client

#endif  // LORACLE_CLIENT_CHANNEL_H_
