#include "server/rpc/adapters_service.h"

#include <string>
#include <utility>

#include "absl/time/clock.h"
#include "server/adapters/registry.h"
#include "server/metrics/metrics.h"
#include "server/rpc/status_util.h"

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
}

grpc::ServerUnaryReactor* Done(grpc::CallbackServerContext* ctx, ServiceContext* context,
                               const char* method, absl::Time start, const absl::Status& s) {
  grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
  const grpc::Status status = ToGrpcStatus(s);
  if (context->metrics != nullptr) {
    context->metrics->RecordRpc(method, CodeName(status.error_code()),
                                absl::ToDoubleSeconds(absl::Now() - start));
  }
  reactor->Finish(status);
  return reactor;
}

const absl::Status kLoading = absl::UnavailableError("the base model is still loading");

}  // namespace

AdaptersService::AdaptersService(ServiceContext* context)
    : context_(context), worker_([this] { WorkerLoop(); }) {}

AdaptersService::~AdaptersService() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  worker_.join();
}

void AdaptersService::WorkerLoop() {
  for (;;) {
    std::function<void()> job;
    {
      absl::MutexLock lock(&mu_, absl::Condition(this, &AdaptersService::HasWork));
      if (work_.empty()) return;
      job = std::move(work_.front());
      work_.pop_front();
    }
    job();
  }
}

grpc::ServerUnaryReactor* AdaptersService::List(grpc::CallbackServerContext* ctx,
                                                const loracle::v1::ListAdaptersRequest*,
                                                loracle::v1::ListAdaptersResponse* response) {
  const absl::Time start = absl::Now();
  const Engine* engine = context_->engine.load(std::memory_order_acquire);
  if (engine == nullptr) return Done(ctx, context_, "Adapters.List", start, kLoading);
  for (const adapters::AdapterInfo& info : engine->registry->List()) {
    ToProto(info, response->add_adapters());
  }
  return Done(ctx, context_, "Adapters.List", start, absl::OkStatus());
}

grpc::ServerUnaryReactor* AdaptersService::Get(grpc::CallbackServerContext* ctx,
                                               const loracle::v1::GetAdapterRequest* request,
                                               loracle::v1::AdapterInfo* response) {
  const absl::Time start = absl::Now();
  const Engine* engine = context_->engine.load(std::memory_order_acquire);
  if (engine == nullptr) return Done(ctx, context_, "Adapters.Get", start, kLoading);
  absl::StatusOr<adapters::AdapterInfo> info = engine->registry->Get(request->name());
  if (info.ok()) ToProto(*info, response);
  return Done(ctx, context_, "Adapters.Get", start, info.status());
}

grpc::ServerUnaryReactor* AdaptersService::Load(grpc::CallbackServerContext* ctx,
                                                const loracle::v1::LoadAdapterRequest* request,
                                                loracle::v1::AdapterInfo* response) {
  const absl::Time start = absl::Now();
  const Engine* engine = context_->engine.load(std::memory_order_acquire);
  if (engine == nullptr) return Done(ctx, context_, "Adapters.Load", start, kLoading);
  grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
  ServiceContext* context = context_;
  absl::MutexLock lock(&mu_);
  work_.push_back([engine, context, reactor, request, response, start] {
    absl::StatusOr<adapters::AdapterInfo> info =
        engine->registry->Load(request->name(), request->version(), request->path());
    if (info.ok()) ToProto(*info, response);
    const grpc::Status status = ToGrpcStatus(info.status());
    if (context->metrics != nullptr) {
      context->metrics->RecordRpc("Adapters.Load", CodeName(status.error_code()),
                                  absl::ToDoubleSeconds(absl::Now() - start));
      context->metrics->SetAdaptersReady(engine->registry->ready_count());
    }
    reactor->Finish(status);
  });
  return reactor;
}

grpc::ServerUnaryReactor* AdaptersService::Unload(grpc::CallbackServerContext* ctx,
                                                  const loracle::v1::UnloadAdapterRequest* request,
                                                  loracle::v1::UnloadAdapterResponse*) {
  const absl::Time start = absl::Now();
  const Engine* engine = context_->engine.load(std::memory_order_acquire);
  if (engine == nullptr) return Done(ctx, context_, "Adapters.Unload", start, kLoading);
  absl::Status s = engine->registry->Unload(request->name());
  if (context_->metrics != nullptr)
    context_->metrics->SetAdaptersReady(engine->registry->ready_count());
  return Done(ctx, context_, "Adapters.Unload", start, s);
}

}  // namespace loracle::rpc
