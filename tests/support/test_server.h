#ifndef LORACLE_TESTS_SUPPORT_TEST_SERVER_H_
#define LORACLE_TESTS_SUPPORT_TEST_SERVER_H_

#include <grpcpp/grpcpp.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "server/adapters/adapter_files.h"
#include "server/adapters/store.h"
#include "server/app/loracle_server.h"
#include "tests/support/test_util.h"

namespace loracle::testing {

struct AdapterToPublish {
  std::string name;
  adapters::RandomAdapterSpec spec;  // written for TinyConfig()
};

// A real LoracleServer on loopback ports (gRPC and /metrics) over the tiny model and a fresh
// adapter store, loaded and SERVING when Start returns (null, with a test failure, otherwise).
class TestServer {
 public:
  // `prepare` runs after the adapters are published and before the server starts: it may edit
  // the store (corrupt a file, ...) and the server options.
  static std::unique_ptr<TestServer> Start(
      const std::vector<AdapterToPublish>& adapters,
      const std::function<void(adapters::Store&, app::LoracleServer::Options&)>& prepare = {});

  app::LoracleServer& server() { return *server_; }
  adapters::Store& store() { return *store_; }
  std::string address() const;  // "127.0.0.1:PORT"
  std::shared_ptr<grpc::Channel> NewChannel() const;

 private:
  TempDir model_dir_, store_dir_, jobs_dir_;
  std::unique_ptr<adapters::Store> store_;
  std::unique_ptr<app::LoracleServer> server_;
};

}  // namespace loracle::testing

#endif  // LORACLE_TESTS_SUPPORT_TEST_SERVER_H_
