// libFuzzer target: a training data file, JSONL or CSV (the first byte picks), as Submit's
// server-side files and the CLI's uploads are parsed; then the label set is resolved.
#include <cstddef>
#include <cstdint>

#include "absl/strings/string_view.h"
#include "server/data/examples.h"
#include "server/training/dataset.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const absl::string_view text(reinterpret_cast<const char*>(data) + 1, size - 1);
  auto examples = data[0] % 2 == 0 ? loracle::data::ParseJsonl(text, "fuzz.jsonl")
                                   : loracle::data::ParseCsv(text, "fuzz.csv");
  if (examples.ok()) (void)loracle::training::ResolveLabels(*examples, {});
  return 0;
}
