#include "client/channel.h"

#include <grpcpp/support/client_interceptor.h>

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"

namespace loracle::client {
namespace {

// Adds "authorization: Bearer <token>" to every call's initial metadata.
class TokenInterceptor final : public grpc::experimental::Interceptor {
 public:
  explicit TokenInterceptor(const std::string* header) : header_(header) {}
  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    if (methods->QueryInterceptionHookPoint(
            grpc::experimental::InterceptionHookPoints::PRE_SEND_INITIAL_METADATA)) {
      methods->GetSendInitialMetadata()->insert({"authorization", *header_});
    }
    methods->Proceed();
  }

 private:
  const std::string* header_;
};

class TokenInterceptorFactory final : public grpc::experimental::ClientInterceptorFactoryInterface {
 public:
  explicit TokenInterceptorFactory(std::string token) : header_("Bearer " + std::move(token)) {}
  grpc::experimental::Interceptor* CreateClientInterceptor(
      grpc::experimental::ClientRpcInfo*) override {
    return new TokenInterceptor(&header_);
  }

 private:
  const std::string header_;  // the factory lives as long as the channel
};

bool ReadFile(const std::string& path, const char* flag, std::string* out, std::ostream& err) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    err << "loracle: --" << flag << ": cannot read " << path << "\n";
    return false;
  }
  std::ostringstream ss;
  ss << in.rdbuf();
  *out = ss.str();
  return true;
}

}  // namespace

std::shared_ptr<grpc::Channel> MakeChannel(const std::string& target, const Args& args,
                                           std::ostream& err) {
  const std::string ca = Flag(args, "tls_ca"), cert = Flag(args, "tls_cert"),
                    key = Flag(args, "tls_key");
  if (cert.empty() != key.empty()) {
    err << "loracle: --tls_cert and --tls_key go together\n";
    return nullptr;
  }
  std::shared_ptr<grpc::ChannelCredentials> credentials = grpc::InsecureChannelCredentials();
  if (Flag(args, "tls") == "true" || !ca.empty() || !cert.empty()) {
    grpc::SslCredentialsOptions ssl;
    if (!ca.empty() && !ReadFile(ca, "tls_ca", &ssl.pem_root_certs, err)) return nullptr;
    if (!cert.empty() && (!ReadFile(cert, "tls_cert", &ssl.pem_cert_chain, err) ||
                          !ReadFile(key, "tls_key", &ssl.pem_private_key, err))) {
      return nullptr;
    }
    credentials = grpc::SslCredentials(ssl);
  }

  std::string token;
  if (const std::string file = Flag(args, "token_file"); !file.empty()) {
    if (!ReadFile(file, "token_file", &token, err)) return nullptr;
    token = token.substr(0, token.find('\n'));
  } else if (const char* env = std::getenv("LORACLE_TOKEN"); env != nullptr) {
    token = env;
  }
  token = std::string(absl::StripAsciiWhitespace(token));

  grpc::ChannelArguments channel_args;
  channel_args.SetMaxReceiveMessageSize(64 << 20);
  if (token.empty()) return grpc::CreateCustomChannel(target, credentials, channel_args);
  std::vector<std::unique_ptr<grpc::experimental::ClientInterceptorFactoryInterface>> interceptors;
  interceptors.push_back(std::make_unique<TokenInterceptorFactory>(token));
  return grpc::experimental::CreateCustomChannelWithInterceptors(target, credentials, channel_args,
                                                                 std::move(interceptors));
}

}  // namespace loracle::client
