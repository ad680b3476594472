#ifndef LORACLE_SERVER_RPC_AUTH_H_
#define LORACLE_SERVER_RPC_AUTH_H_

// Role tokens (--auth_tokens_file): bearer tokens, or their SHA-256 digests, mapped to roles.
//
// File format, one token per line; blank lines and lines starting with '#' are ignored:
//
//   # token (at least 16 bytes, no whitespace) or sha256:<64 hex digits>   roles
//   sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08  predict,feedback
//   ops-7c1e0b0e5a3d4f2a  admin,train
//
// Roles: predict (Inference.Predict and OnlineCalibration), feedback (Inference.Feedback), train
// (every Training method), admin (Adapters.Load and Unload). Adapters.List and Get take any valid
// token. Health and reflection stay open. Only digests are kept in memory; a presented token is
// hashed and compared with every entry in constant time.

#include <grpcpp/grpcpp.h>

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"

namespace loracle::rpc {

enum Role : uint32_t {
  kPredictRole = 1,
  kFeedbackRole = 2,
  kTrainRole = 4,
  kAdminRole = 8,
  kAnyRole = 15,  // any one of them: a valid token
};

using Sha256Digest = std::array<uint8_t, 32>;
Sha256Digest Sha256(absl::string_view data);

struct TokenEntry {
  Sha256Digest digest;
  uint32_t roles = 0;  // a set of Role bits
};

// The entries of a tokens file. INVALID_ARGUMENT "<source>:<line>: ..." for a malformed line, an
// unknown role, a token shorter than 16 bytes, a token listed twice, or a file with no tokens.
absl::StatusOr<std::vector<TokenEntry>> ParseTokens(absl::string_view contents,
                                                    absl::string_view source);

// The tokens file of a running server. Thread-safe: Check runs on gRPC's threads while Reload
// (on SIGHUP) swaps the table.
class TokenAuth {
 public:
  // Reads `path` (ParseTokens' errors; NOT_FOUND when missing).
  static absl::StatusOr<std::unique_ptr<TokenAuth>> Create(const std::string& path);

  // Reads the file again; on any error keeps the tokens it had and returns the error.
  absl::Status Reload() ABSL_LOCKS_EXCLUDED(mu_);

  // OK when `authorization` ("Bearer <token>", the scheme case-insensitive) names a token with
  // a role in `roles`; UNAUTHENTICATED when it is missing, malformed or unknown;
  // PERMISSION_DENIED, naming the role needed, when the token lacks it.
  absl::Status Check(absl::string_view authorization, uint32_t roles) const
      ABSL_LOCKS_EXCLUDED(mu_);
  // The same for a call's "authorization" metadata.
  absl::Status Check(const grpc::ServerContextBase& ctx, uint32_t roles) const
      ABSL_LOCKS_EXCLUDED(mu_);

  const std::string& path() const { return path_; }
  size_t size() const ABSL_LOCKS_EXCLUDED(mu_);

 private:
  explicit TokenAuth(std::string path) : path_(std::move(path)) {}

  const std::string path_;
  mutable absl::Mutex mu_;
  std::shared_ptr<const std::vector<TokenEntry>> entries_ ABSL_GUARDED_BY(mu_);
};

// The role names of `roles`, joined by ',' ("predict,train").
std::string RoleNames(uint32_t roles);

}  // namespace loracle::rpc

#endif  // LORACLE_SERVER_RPC_AUTH_H_
