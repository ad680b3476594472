#include "server/rpc/adapters_service.h"

#include <string>
#include <utility>

#include "server/adapters/registry.h"
#include "server/rpc/auth.h"
#include "server/rpc/unary_call.h"

namespace loracle::rpc {
namespace {

void ToProto(const adapters::AdapterInfo& info, loracle::v1::AdapterInfo* out) {
  out->set_name(info.name);
  out->set_version(info.version);
  switch (info.state) {
    case adapters::AdapterState::kLoading:
      out->set_state(loracle::v1::ADAPTER_STATE_LOADING);
      break;
    case adapters::AdapterState::kReady:
      out->set_state(loracle::v1::ADAPTER_STATE_READY);
      break;
    case adapters::AdapterState::kUnloading:
      out->set_state(loracle::v1::ADAPTER_STATE_UNLOADING);
      break;
    case adapters::AdapterState::kFailed:
      out->set_state(loracle::v1::ADAPTER_STATE_FAILED);
      break;
  }
  out->set_error(info.error);
  for (const std::string& l : info.serving.labels) out->add_labels(l);
  out->set_members(static_cast<uint32_t>(info.serving.members));
  out->set_mc_samples(static_cast<uint32_t>(info.serving.mc_samples));
  out->set_temperature(static_cast<float>(info.serving.temperature));
  out->set_abstain_threshold(static_cast<float>(info.serving.abstain_threshold));
  out->set_dropout_method(std::string(model::DropoutMethodName(info.serving.dropout.method)));
  out->set_dropout_rate(static_cast<float>(info.serving.dropout.rate));
  out->set_dropkey_rate(static_cast<float>(info.serving.dropout.dropkey_rate));
  out->set_hiddencut_rate(static_cast<float>(info.serving.dropout.hiddencut_rate));
  out->set_rank(static_cast<uint32_t>(info.lora.rank));
  out->set_lora_alpha(static_cast<float>(info.lora.lora_alpha));
  for (const std::string& t : info.lora.target_modules) out->add_target_modules(t);
  out->set_path(info.path);
  out->set_resident(info.resident);
  out->set_memory_bytes(info.memory_bytes);
  out->set_max_windows(static_cast<uint32_t>(info.serving.max_windows));
  out->set_window_length(static_cast<uint32_t>(info.serving.window_length));
  out->set_base_fingerprint(info.serving.base.fingerprint);
  out->set_base_verified(info.state == adapters::AdapterState::kReady &&
                         !info.serving.base.fingerprint.empty());
}

}  // namespace

grpc::ServerUnaryReactor* AdaptersService::List(grpc::CallbackServerContext* ctx,
                                                const loracle::v1::ListAdaptersRequest*,
                                                loracle::v1::ListAdaptersResponse* response) {
  const UnaryCall call(ctx, list_);
  if (!call.Allow(auth_, kAnyRole)) return call.reactor();
  const adapters::Registry* registry = call.Require(*registry_);
  if (registry == nullptr) return call.reactor();
  for (const adapters::AdapterInfo& info : registry->List())
    ToProto(info, response->add_adapters());
  return call.Finish(absl::OkStatus());
}

grpc::ServerUnaryReactor* AdaptersService::Get(grpc::CallbackServerContext* ctx,
                                               const loracle::v1::GetAdapterRequest* request,
                                               loracle::v1::AdapterInfo* response) {
  const UnaryCall call(ctx, get_);
  if (!call.Allow(auth_, kAnyRole)) return call.reactor();
  const adapters::Registry* registry = call.Require(*registry_);
  if (registry == nullptr) return call.reactor();
  absl::StatusOr<adapters::AdapterInfo> info = registry->Get(request->name());
  if (info.ok()) ToProto(*info, response);
  return call.Finish(info.status());
}

grpc::ServerUnaryReactor* AdaptersService::Load(grpc::CallbackServerContext* ctx,
                                                const loracle::v1::LoadAdapterRequest* request,
                                                loracle::v1::AdapterInfo* response) {
  const UnaryCall call(ctx, load_);
  if (!call.Allow(auth_, kAdminRole)) return call.reactor();
  adapters::Registry* registry = call.Require(*registry_);
  if (registry == nullptr) return call.reactor();
  adapters::LoadRequest load;
  load.name = request->name();
  load.version = request->version();
  load.path = request->path();
  load.pin = request->version() > 0 || !request->path().empty();  // an operator's explicit choice
  registry->LoadAsync(std::move(load),
                      [call, response](absl::StatusOr<adapters::AdapterInfo> info) {
                        if (info.ok()) ToProto(*info, response);
                        call.Finish(info.status());
                      });
  return call.reactor();
}

grpc::ServerUnaryReactor* AdaptersService::Unload(grpc::CallbackServerContext* ctx,
                                                  const loracle::v1::UnloadAdapterRequest* request,
                                                  loracle::v1::UnloadAdapterResponse*) {
  const UnaryCall call(ctx, unload_);
  if (!call.Allow(auth_, kAdminRole)) return call.reactor();
  adapters::Registry* registry = call.Require(*registry_);
  if (registry == nullptr) return call.reactor();
  registry->UnloadAsync(request->name(), [call](absl::Status s) { call.Finish(s); });
  return call.reactor();
}

}  // namespace loracle::rpc
