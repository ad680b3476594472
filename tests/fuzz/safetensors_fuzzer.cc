// libFuzzer target: a safetensors file (8-byte header length, JSON header, data) parsed from
// memory, then every tensor it names read back. Any input must give a status, never a crash.
#include <cstddef>
#include <cstdint>
#include <string>

#include "server/model/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto file = loracle::model::SafetensorsFile::FromBytes(
      std::string(reinterpret_cast<const char*>(data), size), "fuzz.safetensors");
  if (!file.ok()) return 0;
  for (const std::string& name : (*file)->names()) {
    auto view = (*file)->Get(name);
    if (!view.ok()) continue;
    volatile int64_t n = view->numel();  // the shape and byte range were validated together
    (void)n;
  }
  return 0;
}
