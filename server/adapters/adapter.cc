#include "server/adapters/adapter.h"

namespace loracle::adapters {

AdapterInfo InfoOf(const Adapter& adapter) {
  AdapterInfo info;
  info.name = adapter.name;
  info.version = adapter.version;
  info.state = AdapterState::kReady;
  info.path = adapter.path;
  info.serving = adapter.serving;
  info.lora = adapter.lora;
  return info;
}

}  // namespace loracle::adapters
