#include "server/rpc/auth.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include <set>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "server/util/file_util.h"

namespace loracle::rpc {
namespace {

constexpr std::pair<const char*, uint32_t> kRoleNames[] = {{"predict", kPredictRole},
                                                           {"feedback", kFeedbackRole},
                                                           {"train", kTrainRole},
                                                           {"admin", kAdminRole}};
constexpr size_t kMinTokenBytes = 16;

absl::Status LineError(absl::string_view source, int line, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(source, ":", line, ": ", what));
}

bool ParseDigest(absl::string_view hex, Sha256Digest* out) {
  if (hex.size() != 64) return false;
  for (size_t i = 0; i < 32; ++i) {
    int byte = 0;
    for (char c : hex.substr(2 * i, 2)) {
      c = absl::ascii_tolower(c);
      const int v = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
      if (v < 0) return false;
      byte = byte * 16 + v;
    }
    (*out)[i] = static_cast<uint8_t>(byte);
  }
  return true;
}

}  // namespace

Sha256Digest Sha256(absl::string_view data) {
  Sha256Digest out{};
  unsigned int n = 0;
  EVP_Digest(data.data(), data.size(), out.data(), &n, EVP_sha256(), nullptr);
  return out;
}

std::string RoleNames(uint32_t roles) {
  std::vector<std::string> names;
  for (const auto& [name, bit] : kRoleNames) {
    if (roles & bit) names.push_back(name);
  }
  return absl::StrJoin(names, ",");
}

absl::StatusOr<std::vector<TokenEntry>> ParseTokens(absl::string_view contents,
                                                    absl::string_view source) {
  std::vector<TokenEntry> out;
  std::set<Sha256Digest> seen;
  int line_no = 0;
  for (absl::string_view line : absl::StrSplit(contents, '\n')) {
    ++line_no;
    line = absl::StripAsciiWhitespace(line);
    if (line.empty() || line[0] == '#') continue;
    std::vector<absl::string_view> fields =
        absl::StrSplit(line, absl::ByAnyChar(" \t"), absl::SkipEmpty());
    if (fields.size() != 2) {
      return LineError(source, line_no, "expected a token (or sha256:<hex>) and its roles");
    }
    TokenEntry entry;
    if (absl::string_view hex = fields[0]; absl::ConsumePrefix(&hex, "sha256:")) {
      if (!ParseDigest(hex, &entry.digest)) {
        return LineError(source, line_no, "sha256: must be followed by 64 hex digits");
      }
    } else {
      if (fields[0].size() < kMinTokenBytes) {
        return LineError(source, line_no,
                         absl::StrCat("a token must be at least ", kMinTokenBytes, " bytes"));
      }
      entry.digest = Sha256(fields[0]);
    }
    for (absl::string_view role : absl::StrSplit(fields[1], ',')) {
      uint32_t bit = 0;
      for (const auto& [name, b] : kRoleNames) {
        if (role == name) bit = b;
      }
      if (bit == 0) {
        return LineError(
            source, line_no,
            absl::StrCat("unknown role \"", role, "\" (roles: predict, feedback, train, admin)"));
      }
      entry.roles |= bit;
    }
    if (!seen.insert(entry.digest).second) {
      return LineError(source, line_no, "this token is listed twice");
    }
    out.push_back(entry);
  }
  if (out.empty()) return absl::InvalidArgumentError(absl::StrCat(source, ": no tokens"));
  return out;
}

absl::StatusOr<std::unique_ptr<TokenAuth>> TokenAuth::Create(const std::string& path) {
  std::unique_ptr<TokenAuth> auth(new TokenAuth(path));
  if (absl::Status s = auth->Reload(); !s.ok()) return s;
  return auth;
}

absl::Status TokenAuth::Reload() {
  absl::StatusOr<std::string> contents = util::ReadFileToString(path_);
  if (!contents.ok()) return contents.status();
  absl::StatusOr<std::vector<TokenEntry>> entries = ParseTokens(*contents, path_);
  if (!entries.ok()) return entries.status();
  auto table = std::make_shared<const std::vector<TokenEntry>>(*std::move(entries));
  absl::MutexLock lock(&mu_);
  entries_ = std::move(table);
  return absl::OkStatus();
}

size_t TokenAuth::size() const {
  absl::MutexLock lock(&mu_);
  return entries_->size();
}

absl::Status TokenAuth::Check(absl::string_view authorization, uint32_t roles) const {
  absl::string_view token = absl::StripAsciiWhitespace(authorization);
  if (token.empty()) {
    return absl::UnauthenticatedError(
        "this server needs a token: send the metadata 'authorization: Bearer <token>'");
  }
  if (token.size() < 7 || !absl::EqualsIgnoreCase(token.substr(0, 7), "bearer ")) {
    return absl::UnauthenticatedError("the authorization metadata must be 'Bearer <token>'");
  }
  token = absl::StripLeadingAsciiWhitespace(token.substr(7));
  const Sha256Digest digest = Sha256(token);
  std::shared_ptr<const std::vector<TokenEntry>> entries;
  {
    absl::MutexLock lock(&mu_);
    entries = entries_;
  }
  // Every entry is compared, whatever matches, so the time taken does not depend on which.
  uint32_t granted = 0;
  bool known = false;
  for (const TokenEntry& e : *entries) {
    const bool match = CRYPTO_memcmp(e.digest.data(), digest.data(), digest.size()) == 0;
    granted |= match ? e.roles : 0;
    known |= match;
  }
  if (!known) return absl::UnauthenticatedError("unknown token");
  if ((granted & roles) == 0) {
    return absl::PermissionDeniedError(absl::StrCat("this call needs the role ", RoleNames(roles),
                                                    "; the token has ", RoleNames(granted)));
  }
  return absl::OkStatus();
}

absl::Status TokenAuth::Check(const grpc::ServerContextBase& ctx, uint32_t roles) const {
  const auto& metadata = ctx.client_metadata();
  auto it = metadata.find("authorization");
  if (it == metadata.end()) return Check(absl::string_view(), roles);
  return Check(absl::string_view(it->second.data(), it->second.size()), roles);
}

}  // namespace loracle::rpc
