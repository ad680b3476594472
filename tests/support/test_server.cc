#include "tests/support/test_server.h"

#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"

namespace loracle::testing {

std::unique_ptr<TestServer> TestServer::Start(
    const std::vector<AdapterToPublish>& adapters,
    const std::function<void(adapters::Store&, app::LoracleServer::Options&)>& prepare) {
  auto t = std::make_unique<TestServer>();
  WriteTinyModel(t->model_dir_.path());
  auto store = adapters::Store::Create({t->store_dir_.path()});
  if (!store.ok()) {
    ADD_FAILURE() << store.status();
    return nullptr;
  }
  t->store_ = *std::move(store);
  for (const AdapterToPublish& a : adapters) {
    auto v = t->store_->Publish(a.name, [&](const std::string& dir) {
      return adapters::WriteRandomAdapter(dir, TinyConfig(), a.spec);
    });
    if (!v.ok()) {
      ADD_FAILURE() << a.name << ": " << v.status();
      return nullptr;
    }
  }
  app::LoracleServer::Options o;
  o.grpc_address = "127.0.0.1:0";
  o.metrics_address = "127.0.0.1:0";
  o.model_dir = t->model_dir_.path();
  o.adapters_dir = t->store_dir_.path();
  o.jobs_dir = t->jobs_dir_.path();
  o.threads = 2;
  // The same numbers on every CI machine (--dtype=auto would pick bfloat16 on one with native
  // bfloat16); tests of other dtypes set it in `prepare`.
  o.dtype = "float32";
  o.batcher.max_queue_delay_us = 1000;
  // These servers serve what their tests load. The store watcher has its own tests
  // (unit/watcher_test.cc; BinaryTest.ReplicasSharingAStore... on the real binary); a prepare
  // callback may turn it on.
  o.store_poll_interval = absl::ZeroDuration();
  if (prepare) prepare(*t->store_, o);
  auto server = app::LoracleServer::Create(o);
  if (!server.ok()) {
    ADD_FAILURE() << server.status();
    return nullptr;
  }
  t->server_ = *std::move(server);
  if (absl::Status s = t->server_->WaitUntilReady(absl::Seconds(60)); !s.ok()) {
    ADD_FAILURE() << s;
    return nullptr;
  }
  return t;
}

std::string TestServer::address() const { return absl::StrCat("127.0.0.1:", server_->grpc_port()); }

std::shared_ptr<grpc::Channel> TestServer::NewChannel() const {
  return grpc::CreateChannel(address(), grpc::InsecureChannelCredentials());
}

}  // namespace loracle::testing
