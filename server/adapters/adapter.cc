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
  info.resident = true;
  info.memory_bytes = adapter.memory_bytes;
  return info;
}

}  // namespace loracle::adapters
