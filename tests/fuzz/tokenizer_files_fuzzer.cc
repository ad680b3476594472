// libFuzzer target: a tokenizer's files as a checkpoint directory holds them. The first byte picks
// the layout (tokenizer.json; vocab.txt; vocab.json + merges.txt split at the first NUL byte), the
// rest is written into a private directory and loaded with LoadTokenizer, which then encodes a
// fixed text. Files go to a per-process directory under $TMPDIR (tmpfs in CI keeps it fast).
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include "server/text/tokenizer_files.h"

namespace {

const std::string& Dir() {
  static const std::string* dir = [] {
    const char* tmp = std::getenv("TMPDIR");
    auto* d = new std::string(std::string(tmp != nullptr ? tmp : "/tmp") + "/loracle-fuzz-tok-" +
                              std::to_string(::getpid()));
    std::filesystem::create_directories(*d);
    return d;
  }();
  return *dir;
}

void Write(const std::string& name, const std::string& contents) {
  std::ofstream(Dir() + "/" + name, std::ios::binary | std::ios::trunc) << contents;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const std::string body(reinterpret_cast<const char*>(data) + 1, size - 1);
  for (const char* f : {"tokenizer.json", "vocab.txt", "vocab.json", "merges.txt"}) {
    std::filesystem::remove(Dir() + "/" + f);
  }
  switch (data[0] % 3) {
    case 0:
      Write("tokenizer.json", body);
      break;
    case 1:
      Write("vocab.txt", body);
      break;
    default: {
      const size_t nul = body.find('\0');
      Write("vocab.json", body.substr(0, nul));
      Write("merges.txt", nul == std::string::npos ? "" : body.substr(nul + 1));
      break;
    }
  }
  int max_length = 0;
  auto tokenizer = loracle::text::LoadTokenizer(Dir(), &max_length);
  if (tokenizer.ok()) {
    (void)(*tokenizer)->Encode("Hello, world! Ünïcödé   text [MASK] <s>", "a pair", 32);
  }
  return 0;
}
